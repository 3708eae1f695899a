"""LatencyModel implementations: measured on a device or predicted, all keyed by ArchSpec id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the measuring process imports Measurement without torch
    from edgekd.devices import NamedDevice
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
    affinity: list[int] | None = None
    """CPU ids the measuring process was pinned to (None: not pinned)."""
    process_medians_ms: list[float] | None = None
    """Per-process medians where the latency is the best of several fresh processes (see LocalDevice)."""

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms


class LatencyModel(Protocol):
    """What the search needs of a device: the latency of an architecture in milliseconds."""

    def latency_ms(self, spec: ArchSpec) -> float: ...

    def latency_many(self, specs: list[ArchSpec]) -> list[float]: ...


def make_latency_model(device: NamedDevice, cache_path: Path) -> LatencyModel:
    """The LatencyModel of a registry device: measured on it, or predicted by its predictor file."""
    from edgekd.devices import NnMeterDevice, PredictorDevice
    from edgekd.latency_models.measured import MeasuredLatency
    from edgekd.latency_models.predictors import PredictedLatency, load_predictor

    if isinstance(device.spec, PredictorDevice):
        return PredictedLatency(load_predictor(Path(device.spec.file)))
    if isinstance(device.spec, NnMeterDevice):
        from edgekd.latency_models.nnmeter import NnMeterLatency

        return NnMeterLatency(device.spec)
    return MeasuredLatency(device, cache_path)
