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
    protocol: str = "median"
    """``median`` (of ``repeats`` runs alone) or ``interleaved`` (against a reference; the fields below)."""
    low_ms: float | None = None
    high_ms: float | None = None
    """95% interval of the latency (interleaved)."""
    ratio: float | None = None
    """Latency relative to the reference model; ``median_ms`` = ratio x ``reference_ms``."""
    reference_ms: float | None = None
    """The reference's calibrated latency on this device."""
    raw_ms: float | None = None
    raw_reference_ms: float | None = None
    """Medians of the candidate's and the reference's own samples during this measurement (uncorrected)."""
    reference_cv: float | None = None
    """How much the reference moved during this measurement (coefficient of variation of its samples)."""
    rounds: int | None = None
    seconds: float | None = None
    converged: bool | None = None
    """Whether the requested precision was reached within the time budget."""
    redone: int = 0
    """Times this measurement was redone because the host drifted beyond the device's bound during it."""
    conditions: dict[str, str] | None = None
    """The device's state read right after the measurement (temperature, governor, load: runtime.conditions)."""

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms

    def straddles(self, target: float) -> bool:
        """Whether ``target`` lies inside the latency's 95% interval (interleaved measurements only): which side
        of the target the latency is on is then not known."""
        return self.low_ms is not None and self.high_ms is not None and self.low_ms <= target <= self.high_ms
