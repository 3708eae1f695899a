"""Timing a runner: warm-up, repeated single runs, median and 10th/90th percentile."""

from __future__ import annotations

import time

import numpy as np

from edgekd.core.measurement import Measurement
from edgekd.runtime.ort import Runner


def time_runner(
    run: Runner, input_shape: tuple[int, ...], warmup: int, repeats: int, threads: int, runtime: str,
    batch_size: int = 1,
) -> Measurement:
    """Median and 10th/90th percentile (ms) of ``repeats`` calls of ``run`` on one random batch."""
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape), dtype=np.float32)
    for _ in range(warmup):
        run(x)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        run(x)
        times[i] = (time.perf_counter() - start) * 1e3
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return Measurement(float(median), float(p10), float(p90), repeats, threads, batch_size, runtime)
