"""The drift-cancelling measurement protocol every measured device kind shares.

A host's speed moves between levels over seconds (another process, a governor, a thermal limit), so one median
of a candidate's runs says as much about the moment as about the model. Here a candidate is timed interleaved
with a fixed reference model in the same process or on the same device: reference, candidate, reference,
candidate, ... Each sample is a short block of calls; round i's ratio is the candidate's sample over the
geometric mean of the reference samples on either side of it, so a change of host speed that hits both models
cancels (a linear drift across the round exactly). The estimate is the 20%-trimmed mean of the rounds' log
ratios (a minority of rounds hit by a burst of load is trimmed away), with a 95% interval from the winsorized
standard error. Rounds are added until the interval's relative half-width is within the requested
``precision`` or the time ``budget_s`` is spent. The latency is the ratio times the reference's calibrated
latency (measured once per device); the raw figures are kept beside it.

Torch-free: the measuring process (``ort_bench``) imports this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgekd.core.measurement import Measurement

if TYPE_CHECKING:  # the measuring process stays free of pydantic
    from edgekd.core.devices import MeasurementProtocol

Sampler = Callable[[], float]
"""One timing sample in ms (a short block of calls of one model)."""

Z95 = 1.96
TINY_MS = 1e-9
"""Floor of a sample (a tool that prints 0 ms for a very fast model)."""
TRIM = 0.2
"""Fraction of rounds trimmed from each end of the sorted log ratios."""
MIN_ROUNDS_AT_BUDGET = 3
"""Rounds taken even when the budget is spent sooner (a board's tool run can take longer than the budget)."""
BLOCK_MS = 2.0
"""Target duration of one sample's block of calls: short, so that reference and candidate see the same host."""


@dataclass(frozen=True)
class Settings:
    precision: float = 0.03
    """Target relative half-width of the ratio's 95% interval."""
    budget_s: float = 10.0
    """Time after which the measurement stops at the precision it reached."""
    min_rounds: int = 10
    """Rounds before the precision may end a measurement (a short run can look precise by chance)."""
    max_rounds: int = 5000


@dataclass(frozen=True)
class Interleaved:
    """A candidate measured against the reference: the ratio, its interval and the raw figures."""

    ratio: float
    low: float
    high: float
    """95% interval of the ratio."""
    rounds: int
    seconds: float
    candidate_ms: float
    """Median of the candidate's samples (raw, per call)."""
    reference_ms: float
    """Median of the reference's samples (raw, per call): the host's speed during this measurement."""
    reference_cv: float
    """Coefficient of variation of the reference's samples: how much the host moved during it."""
    converged: bool
    """Whether the precision was reached within the budget."""

    @property
    def half_width(self) -> float:
        """Relative half-width of the interval."""
        return (self.high - self.low) / (2 * self.ratio)


def ratio_estimate(candidate: list[float], reference: list[float]) -> tuple[float, float, float]:
    """(ratio, low, high) from interleaved samples: ``reference`` has one more sample than ``candidate`` (one
    before and one after each candidate sample)."""
    c, r = np.log(np.maximum(candidate, TINY_MS)), np.log(np.maximum(reference, TINY_MS))
    logs = np.sort(c - (r[:-1] + r[1:]) / 2)
    n = len(logs)
    k = int(TRIM * n)
    centre = float(logs[k:n - k].mean())
    winsorized = np.clip(logs, logs[k], logs[n - k - 1])
    se = float(winsorized.std(ddof=1)) / ((1 - 2 * TRIM) * math.sqrt(n)) if n > 1 else math.inf
    return math.exp(centre), math.exp(centre - Z95 * se), math.exp(centre + Z95 * se)


def interleave(candidate: Sampler, reference: Sampler, settings: Settings = Settings(),
               clock: Callable[[], float] = time.perf_counter) -> Interleaved:
    """Measure ``candidate`` against ``reference`` (both warmed up) until the precision or the budget is reached."""
    start = clock()
    refs, cands = [reference()], []
    while True:
        cands.append(candidate())
        refs.append(reference())
        n = len(cands)
        if n < MIN_ROUNDS_AT_BUDGET:
            continue
        ratio, low, high = ratio_estimate(cands, refs)
        converged = n >= settings.min_rounds and (high - low) / (2 * ratio) <= settings.precision
        if converged or clock() - start >= settings.budget_s or n >= settings.max_rounds:
            break
    ref = np.asarray(refs)
    return Interleaved(ratio, low, high, n, clock() - start, float(np.median(cands)), float(np.median(ref)),
                       float(ref.std() / ref.mean()), converged)


def pass_order(n: int, p: int) -> range:
    """The order in which pass ``p`` measures ``n`` models: every other pass reversed, so that over a pair every
    model's mean moment is the same (a drift of the ratios linear in time over the pair moves every model alike)."""
    return range(n)[::-1] if p % 2 else range(n)


def combine_passes(passes: list[Interleaved]) -> Interleaved:
    """One result from a model's ``passes`` (measured at different moments): the geometric mean of their ratios,
    with a 95% interval from the larger of their own spread and the passes' mean interval, each over the
    number of passes; rounds and seconds summed, the host's figures of the median pass."""
    if len(passes) == 1:
        return passes[0]
    logs = np.log([p.ratio for p in passes])
    within = np.mean([(math.log(p.high / p.low) / (2 * Z95)) ** 2 for p in passes])
    se = math.sqrt(max(within, float(np.var(logs, ddof=1))) / len(passes))
    centre = float(logs.mean())
    middle = sorted(passes, key=lambda p: p.ratio)[len(passes) // 2]
    return Interleaved(math.exp(centre), math.exp(centre - Z95 * se), math.exp(centre + Z95 * se),
                       sum(p.rounds for p in passes), sum(p.seconds for p in passes), middle.candidate_ms,
                       middle.reference_ms, max(p.reference_cv for p in passes), all(p.converged for p in passes))


def block_sampler(run: Callable[[np.ndarray], object], x: np.ndarray, calls: int,
                  statistic: Callable[[np.ndarray], float] = np.min) -> Sampler:
    """A sampler of ``run(x)``: ``statistic`` of the per-call times (ms) of ``calls`` calls in a row; by default the
    lowest (a call interrupted by another process only lengthens, so the block's minimum is its least disturbed
    call; benchmarks/latency_statistic.py measured it against the lower quartile, the median and the mean)."""

    def sample() -> float:
        times = np.empty(calls)
        for i in range(calls):
            started = time.perf_counter()
            run(x)
            times[i] = time.perf_counter() - started
        return float(statistic(times)) * 1e3

    return sample


def calls_per_block(run: Callable[[np.ndarray], object], x: np.ndarray, warmup: int) -> int:
    """Warm ``run`` up with ``warmup`` calls; the calls that fill about ``BLOCK_MS``."""
    times = []
    for _ in range(max(warmup, 3)):
        started = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - started)
    return max(1, round(BLOCK_MS / (float(np.median(times)) * 1e3)))


def settings_of(protocol: MeasurementProtocol) -> Settings:
    """The timing loop's settings from a device entry's protocol."""
    return Settings(precision=protocol.precision, budget_s=protocol.budget_s)


def to_measurement(result: Interleaved, reference_ms: float, threads: int, batch_size: int, runtime: str,
                   affinity: list[int] | None = None, redone: int = 0) -> Measurement:
    """The latency ``result`` gives against a reference whose calibrated latency is ``reference_ms``."""
    ms = result.ratio * reference_ms
    low, high = result.low * reference_ms, result.high * reference_ms
    return Measurement(
        ms, low, high, result.rounds, threads, batch_size, runtime, affinity=affinity, protocol="interleaved",
        low_ms=low, high_ms=high, ratio=result.ratio, reference_ms=reference_ms, raw_ms=result.candidate_ms,
        raw_reference_ms=result.reference_ms, reference_cv=result.reference_cv, rounds=result.rounds,
        seconds=result.seconds, converged=result.converged, redone=redone)


def interleave_each(samplers: list[Sampler], reference: Sampler, settings: Settings) -> list[Interleaved]:
    """Each candidate measured against the reference in turn (a board's or phone's tool run per sample)."""
    return [interleave(sampler, reference, settings) for sampler in samplers]
