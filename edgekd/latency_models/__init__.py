"""LatencyModel implementations: measured on a device or predicted, all keyed by ArchSpec id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgekd.core.registry import Registry

if TYPE_CHECKING:
    from edgekd.core.arch import ArchSpec
    from edgekd.core.devices import DeviceEntry, NamedDevice


class LatencyModel(Protocol):
    """What the search needs of a device: the latency of an architecture in milliseconds."""

    def latency_ms(self, spec: ArchSpec) -> float: ...

    def latency_many(self, specs: list[ArchSpec]) -> list[float]: ...


CheckRows = list[tuple[str, bool, str]]
"""(what, ok, detail) rows of ``edgekd devices check``."""


@dataclass(frozen=True)
class PredictingKind:
    """A device kind that gives latency without a device: its latency model and its readiness check."""

    open: Callable[[DeviceEntry], LatencyModel]
    check: Callable[[DeviceEntry], CheckRows]


PREDICTING: Registry[PredictingKind] = Registry(
    "predicting_kinds", "predicting device kind", ("edgekd.latency_models.predictors", "edgekd.latency_models.nnmeter"))
"""The latency model of each device kind that is not measured (measured kinds have a measuring backend)."""


def make_latency_model(device: NamedDevice, cache_path: Path) -> LatencyModel:
    """The LatencyModel of a registry device: measured on it, or predicted by its predictor."""
    if device.measurable:
        from edgekd.latency_models.measured import MeasuredLatency

        return MeasuredLatency(device, cache_path)
    return PREDICTING.get(device.spec.kind).open(device.spec)


def check_device(device: NamedDevice) -> CheckRows:
    """Whether ``device`` is reachable and ready to measure (or predict)."""
    if device.measurable:
        from edgekd.runtime import backend_for

        return backend_for(device).check()
    return PREDICTING.get(device.spec.kind).check(device.spec)
