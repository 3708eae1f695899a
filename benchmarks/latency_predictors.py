"""Latency predictors against measurements on this host's CPU, over held-out random architectures of `mnas`.

Measures --train + --heldout random architectures of the quick-start space (digits, 16x16, width 0.25) on the
shipped `host-cpu` device (ONNX Runtime, one thread, a fresh process per measurement, median of 100 runs),
fits every predictor kind on the first --train, and prints for each on the held-out rest: RMSE, MAPE, share
within ±10% of the measured median, Kendall tau and prediction cost against measurement cost. The measurement
noise is printed beside them: the coefficient of variation of the repeated runs behind each measurement, and
how well a second measurement of the same architectures agrees with the first (the ceiling for any predictor).
Bar: the best predictor has >= 95% within ±10% and Kendall tau >= 0.9, and predicts >= 1000x cheaper.
Ends with one line of JSON: {"best_predictor", "within10", "kendall", "flops_within10", "flops_kendall",
"predict_speedup", "measure_cv", "n_heldout"}.

    python benchmarks/latency_predictors.py [--train 300] [--heldout 200]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def noise(latency, remeasure, specs) -> dict[str, float]:
    """Measurement noise: the mean coefficient of variation of the per-process medians behind each measurement,
    and how well a second, independent measurement of the same architectures agrees with the first (the
    ceiling for any predictor's within-10% and Kendall tau against these measurements)."""
    from edgekd.pipeline.profile import accuracy_report

    first = latency.measure_many(specs)
    cv = float(np.mean([np.std(m.process_medians_ms) / np.mean(m.process_medians_ms) for m in first]))
    again = np.array(remeasure.latency_many(specs))
    agree = accuracy_report(again, np.array([m.median_ms for m in first]))
    return {"process_cv": cv, "remeasure_within10": agree["within10"], "remeasure_kendall": agree["kendall"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--remeasure", type=int, default=50, help="held-out architectures measured twice")
    parser.add_argument("--cache", type=Path, help="measurement cache (default: a fresh temporary one)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgekd-predictors-"))
    os.environ.setdefault("EDGEKD_CACHE", str(args.cache or root / "cache"))

    from edgekd.core.devices import get_device
    from edgekd.latency_models.measured import MeasuredLatency
    from edgekd.pipeline.context import cache_dir
    from edgekd.pipeline.profile import profile_device, sample_archs
    from edgekd.spaces import make_space

    space = make_space("mnas", 16, 1, 10, width=0.25)
    latency = MeasuredLatency(get_device("host-cpu"), cache_dir() / "latency.sqlite")
    report = profile_device(latency, space, args.train, args.heldout, "learned", root / "predictors")
    heldout = sample_archs(space, args.train + args.heldout, 0)[args.train :][: args.remeasure]
    remeasure = MeasuredLatency(latency.device, root / "second-measurement.sqlite")
    n = noise(latency, remeasure, heldout)
    cv = n["process_cv"]
    rows = report["predictors"]
    print(f"\n{report['n_heldout']} held-out architectures, {report['n_train']} to fit.")
    print(f"measurement noise: coefficient of variation of the {latency.device.spec.processes} process medians "
          f"behind a measurement {cv:.1%}; a second measurement of {len(heldout)} held-out architectures agrees "
          f"with the first within ±10% for {n['remeasure_within10']:.1%}, Kendall tau {n['remeasure_kendall']:.3f}")
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
                      "measure_cv": round(cv, 4), "n_heldout": report["n_heldout"],
                      "remeasure_within10": round(n["remeasure_within10"], 4),
                      "remeasure_kendall": round(n["remeasure_kendall"], 4)}))


if __name__ == "__main__":
    main()
