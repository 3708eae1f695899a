"""Latency predictors against measurements on this host's CPU, over held-out random architectures of `mnas`.

Measures --train + --heldout random architectures of the quick-start space (digits, 16x16, width 0.25) on the
shipped `host-cpu` device (ONNX Runtime, one thread, the interleaved protocol: timed against the reference model
to ±3%), while --load-procs CPU-bound processes of the benchmark's own switch on and off at random moments
(latency_noise.py's load; 0 for none). Fits every predictor kind on the first --train (each measurement weighed by
its interval) and prints for each on the held-out rest: RMSE, MAPE, share within ±10% of the measurement, Kendall
tau and prediction cost against measurement cost. The measurement noise is printed beside them: the mean relative
half-width of the held-out measurements' intervals, and how well a second measurement of the held-out
architectures agrees with the first (the ceiling for any predictor).
Bar: the best predictor has >= 95% within ±10% and Kendall tau >= 0.9, and predicts >= 1000x cheaper.
Ends with one line of JSON: {"best_predictor", "within10", "kendall", "flops_within10", "flops_kendall",
"predict_speedup", "interval_half_width", "n_heldout", "remeasure_within10", "remeasure_kendall", "load_share"}.

    python benchmarks/latency_predictors.py [--train 300] [--heldout 200] [--load-procs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from latency_noise import SwitchingLoad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="measurement cache (default: a fresh temporary one)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgekd-predictors-"))
    os.environ.setdefault("EDGEKD_CACHE", str(args.cache or root / "cache"))

    from edgekd.core.devices import get_device
    from edgekd.latency_models.measured import MeasuredLatency
    from edgekd.pipeline.context import latency_cache
    from edgekd.pipeline.profile import profile_device, sample_archs
    from edgekd.spaces import make_space

    space = make_space("mnas", 16, 1, 10, width=0.25)
    latency = MeasuredLatency(get_device("host-cpu"), latency_cache())
    latency.reference((1, 16, 16))  # calibrated before the load starts
    with SwitchingLoad(args.load_procs, 0) as load:
        started = time.monotonic()
        report = profile_device(latency, space, args.train, args.heldout, "learned", root / "predictors")
        load_share = load.on_seconds / (time.monotonic() - started)
    heldout = sample_archs(space, args.train + args.heldout, 0)[args.train:]
    half = float(np.mean([(m.high_ms - m.low_ms) / (2 * m.median_ms) for m in latency.measure_many(heldout)]))
    ceiling = report["measurement_ceiling"]
    rows = report["predictors"]
    print(f"\n{report['n_heldout']} held-out architectures, {report['n_train']} to fit; background load "
          f"({args.load_procs} processes) on {load_share:.0%} of the time; {report['redone_for_drift']} measurements "
          "redone for drift.")
    print(f"measurement noise: mean interval ±{half:.1%}; a second measurement of the held-out architectures agrees "
          f"with the first within ±10% for {ceiling['within10']:.1%}, Kendall tau {ceiling['kendall']:.3f}")
    print(f"{'predictor':<10}{'RMSE ms':>9}{'MAPE':>8}{'±10%':>8}{'Kendall':>9}{'predict ms':>12}{'speed-up':>10}")
    for kind, r in rows.items():
        print(f"{kind:<10}{r['rmse_ms']:>9.4f}{r['mape']:>8.1%}{r['within10']:>8.1%}{r['kendall']:>9.3f}"
              f"{r['predict_s_per_arch'] * 1e3:>12.4f}{r['speedup']:>9.0f}x")
    print(f"one measurement: {rows['flops']['measure_s_per_arch']:.3f} s")
    best = max((k for k in rows if k != "flops"), key=lambda k: (rows[k]["within10"], rows[k]["kendall"]))
    b = rows[best]
    met = b["within10"] >= 0.95 and b["kendall"] >= 0.9 and b["speedup"] >= 1000
    print(f"bar (>= 95% within ±10%, Kendall >= 0.9, >= 1000x cheaper): {'met' if met else 'NOT met'} by {best}")
    print(json.dumps({"best_predictor": best, "within10": round(b["within10"], 4), "kendall": round(b["kendall"], 4),
                      "flops_within10": round(rows["flops"]["within10"], 4),
                      "flops_kendall": round(rows["flops"]["kendall"], 4), "predict_speedup": round(b["speedup"]),
                      "interval_half_width": round(half, 4), "n_heldout": report["n_heldout"],
                      "remeasure_within10": round(ceiling["within10"], 4),
                      "remeasure_kendall": round(ceiling["kendall"], 4), "load_share": round(load_share, 3)}))


if __name__ == "__main__":
    main()
