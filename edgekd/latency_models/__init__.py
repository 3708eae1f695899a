"""LatencyModel implementations: measured on a device or predicted, all keyed by ArchSpec id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edgekd.pipeline.arch import ArchSpec


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

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms


class LatencyModel(Protocol):
    """What the search needs of a device: the latency of an architecture in milliseconds."""

    def latency_ms(self, spec: ArchSpec) -> float: ...

    def latency_many(self, specs: list[ArchSpec]) -> list[float]: ...
