"""A latency measurement, as every measuring backend returns it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """One latency measurement: median and spread of ``repeats`` timed runs under recorded conditions."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    threads: int
    batch_size: int
    runtime: str
    affinity: list[int] | None = None
    """CPU ids the measuring process was pinned to (None: not pinned)."""
    process_medians_ms: list[float] | None = None
    """Per-process medians where the latency is the best of several fresh processes (see LocalDevice)."""

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms
