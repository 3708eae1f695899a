"""Which statistic of a block of calls the interleaved protocol should take: fastest call, lower quartile, median
or mean.

--archs random `mnas` architectures (16x16, width 0.25) are each measured twice against the reference model with
each statistic (the interleaved protocol at ±3% / 10 s, in this process), while latency_noise.py's switching
load runs (--load-procs processes). Printed per statistic: how often the two ratios agree within ±2% and ±10%,
their Kendall tau, and the mean rounds and seconds a measurement took.

Ends with one line of JSON: {statistic: {"within2", "within10", "kendall", "rounds", "seconds"}}.

    python benchmarks/latency_statistic.py [--archs 40] [--load-procs 2]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from latency_noise import SwitchingLoad

STATISTICS = {"min": np.min, "p25": lambda t: np.percentile(t, 25), "median": np.median, "mean": np.mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=40)
    parser.add_argument("--load-procs", type=int, default=2)
    args = parser.parse_args()

    from scipy.stats import kendalltau

    from edgekd.core.arch import build
    from edgekd.exporters.onnx import export_onnx
    from edgekd.latency_models.measured import reference_arch
    from edgekd.pipeline.profile import sample_archs
    from edgekd.runtime.ort import open_onnx
    from edgekd.runtime.protocol import Settings, block_sampler, calls_per_block, interleave
    from edgekd.spaces import make_space

    root = Path(tempfile.mkdtemp(prefix="edgekd-statistic-"))
    shape = (1, 16, 16)
    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    ref_run = open_onnx(export_onnx(build(reference_arch(shape)), shape, root / "ref.onnx"))
    ref_calls = calls_per_block(ref_run, x, 20)
    runs = []
    for spec in sample_archs(make_space("mnas", 16, 1, 10, 0.25), args.archs, 0):
        run = open_onnx(export_onnx(build(spec), shape, root / f"{spec.id}.onnx"))
        runs.append((run, calls_per_block(run, x, 20)))
    found = {name: [[], []] for name in STATISTICS}
    cost = {name: [0.0, 0] for name in STATISTICS}
    with SwitchingLoad(args.load_procs, 0):
        for repeat in (0, 1):
            for run, calls in runs:
                for name, statistic in STATISTICS.items():
                    r = interleave(block_sampler(run, x, calls, statistic),
                                   block_sampler(ref_run, x, ref_calls, statistic), Settings())
                    found[name][repeat].append(r.ratio)
                    cost[name][0] += r.seconds
                    cost[name][1] += r.rounds
    out = {}
    for name, (a, b) in found.items():
        a, b = np.asarray(a), np.asarray(b)
        rel = np.abs(a - b) / b
        n = 2 * len(a)
        out[name] = {"within2": float((rel <= 0.02).mean()), "within10": float((rel <= 0.10).mean()),
                     "kendall": float(kendalltau(a, b)[0]), "rounds": cost[name][1] / n, "seconds": cost[name][0] / n}
        o = out[name]
        print(f"{name:>6}: within ±2% {o['within2']:.1%}, ±10% {o['within10']:.1%}, Kendall {o['kendall']:.3f}, "
              f"{o['rounds']:.1f} rounds, {o['seconds']:.3f} s per measurement")
    print(json.dumps({k: {m: round(v, 4) if not math.isnan(v) else None for m, v in o.items()}
                      for k, o in out.items()}))


if __name__ == "__main__":
    main()
