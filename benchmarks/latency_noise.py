"""Latency you can trust on a busy machine: today's protocol against the interleaved one under a switching load.

--archs random `mnas` architectures (16x16 inputs, width 0.25) are each measured twice by the `median` protocol
(the median of 100 runs, best of 3 fresh processes) and twice by the `interleaved` protocol (timed against the
reference model until ±3% or 10 s), in the same run, in chunks of --chunk architectures visited in the order
median, interleaved, median, interleaved. Meanwhile a background load of the benchmark's own switches on and off
at random moments: --load-procs CPU-bound processes, on for 1-6 s, off for 1-6 s, each stopping by itself after
its burst. Reported per protocol: the share of architectures whose two measurements agree within ±10%, the
Kendall tau between the two, and the wall time spent measuring.

Ends with one line of JSON: {"old_within10", "old_kendall", "new_within10", "new_kendall", "time_ratio", "n"}.

    python benchmarks/latency_noise.py [--archs 120] [--chunk 10] [--load-procs 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BURN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


class SwitchingLoad:
    """``procs`` CPU-bound processes switched on and off at random moments until stopped; each burst's processes
    end by themselves when the burst is over."""

    def __init__(self, procs: int, seed: int) -> None:
        self.procs, self.rng, self.stop_flag = procs, random.Random(seed), threading.Event()
        self.on_seconds = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            if self.stop_flag.wait(self.rng.uniform(1, 6)):  # off
                return
            burst = self.rng.uniform(1, 6)
            burners = [subprocess.Popen([sys.executable, "-c", BURN, str(burst)]) for _ in range(self.procs)]
            started = time.monotonic()
            for b in burners:
                b.wait()
            self.on_seconds += time.monotonic() - started

    def __enter__(self) -> SwitchingLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join()


def agreement(first: list[float], second: list[float]) -> tuple[float, float]:
    """(share within ±10%, Kendall tau) of two measurements of the same architectures."""
    import numpy as np
    from scipy.stats import kendalltau

    a, b = np.asarray(first), np.asarray(second)
    return float((np.abs(a - b) / b <= 0.10).mean()), float(kendalltau(a, b)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=120)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from edgekd.core.devices import LocalDevice, MeasurementProtocol, NamedDevice
    from edgekd.latency_models.measured import MeasuredLatency
    from edgekd.pipeline.profile import sample_archs
    from edgekd.spaces import make_space

    root = Path(tempfile.mkdtemp(prefix="edgekd-noise-"))
    specs = sample_archs(make_space("mnas", 16, 1, 10, 0.25), args.archs, args.seed)
    models = {
        kind: MeasuredLatency(NamedDevice(name=f"host-{kind}", spec=LocalDevice(protocol=MeasurementProtocol(
            kind=kind))), root / f"{kind}.sqlite")
        for kind in ("median", "interleaved")
    }
    models["interleaved"].reference(specs[0].input_shape)  # calibrated before the load starts, as a profile would
    runs: dict[str, list[list[float]]] = {k: [[], []] for k in models}
    spent = dict.fromkeys(models, 0.0)
    with SwitchingLoad(args.load_procs, args.seed) as load:
        started = time.monotonic()
        for i in range(0, len(specs), args.chunk):
            chunk = specs[i:i + args.chunk]
            for repeat in (0, 1):
                for kind, latency in models.items():
                    t = time.perf_counter()
                    runs[kind][repeat] += [m.median_ms for m in latency.remeasure(chunk)]
                    spent[kind] += time.perf_counter() - t
            done = min(i + args.chunk, len(specs))
            print(f"{done}/{len(specs)} architectures; load on {load.on_seconds / (time.monotonic() - started):.0%} "
                  "of the time so far", flush=True)
        load_share = load.on_seconds / (time.monotonic() - started)
    old, new = agreement(*runs["median"]), agreement(*runs["interleaved"])
    redone = models["interleaved"].redone
    print(f"background load ({args.load_procs} processes) on {load_share:.0%} of the time")
    print(f"median protocol:      within ±10% {old[0]:.1%}, Kendall {old[1]:.3f}, {spent['median']:.0f} s")
    print(f"interleaved protocol: within ±10% {new[0]:.1%}, Kendall {new[1]:.3f}, {spent['interleaved']:.0f} s "
          f"({redone} measurements redone for drift)")
    print(json.dumps({"old_within10": round(old[0], 4), "old_kendall": round(old[1], 4),
                      "new_within10": round(new[0], 4), "new_kendall": round(new[1], 4),
                      "time_ratio": round(spent["interleaved"] / spent["median"], 3), "n": len(specs),
                      "load_share": round(load_share, 3), "redone": redone}))


if __name__ == "__main__":
    main()
