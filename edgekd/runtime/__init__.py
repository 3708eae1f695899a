"""How a model runs and is timed: ONNX Runtime sessions, TensorRT engines, trtexec on boards, and the transports
to boards (ssh) and phones (adb). Each measurable device kind has a measuring backend, registered by kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgekd.core.errors import DeviceError
from edgekd.core.registry import Registry

if TYPE_CHECKING:  # the measuring process (ort_bench) stays free of pydantic models and torch
    from edgekd.core.devices import DeviceEntry, NamedDevice
    from edgekd.core.measurement import Measurement


class Backend(Protocol):
    """How one device kind times an ONNX file, and says whether it is ready."""

    runtime: str

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement: ...

    def check(self) -> list[tuple[str, bool, str]]: ...


BACKENDS: Registry[Callable[[DeviceEntry], Backend]] = Registry(
    "backends", "measuring backend",
    ("edgekd.runtime.local", "edgekd.runtime.ssh", "edgekd.runtime.adb", "edgekd.runtime.tensorrt"))
"""The measuring backend of each measurable device kind, made from its devices.yaml entry."""


def backend_for(device: NamedDevice) -> Backend:
    """The measuring backend of a device entry; DeviceError for kinds that cannot measure (predictors)."""
    if not device.measurable:
        raise DeviceError(f"device {device.name!r} is a {device.spec.kind}: it predicts latency and cannot measure it")
    return BACKENDS.get(device.spec.kind)(device.spec)
