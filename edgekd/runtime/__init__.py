"""How a model runs and is timed: ONNX Runtime sessions, TensorRT engines, trtexec on boards, and the transports
to boards (ssh) and phones (adb). Each measurable device kind has a measuring backend, registered by kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgekd.core.errors import DeviceError
from edgekd.core.registry import Registry
from edgekd.runtime.protocol import Interleaved, Sampler, Settings, interleave_each

if TYPE_CHECKING:  # the measuring process (ort_bench) stays free of pydantic models and torch
    from edgekd.core.devices import DeviceEntry, NamedDevice
    from edgekd.core.measurement import Measurement


class Backend(Protocol):
    """How one device kind times an ONNX file, and says whether it is ready.

    Optional: ``measure_against(paths, reference, input_shape, settings) -> list[Interleaved]`` (the interleaved
    protocol its own way, e.g. in one process), else ``sampler(path, input_shape) -> Sampler`` (one timing of a
    model already on the device), else models are interleaved run by run of ``measure_onnx``;
    ``conditions() -> dict[str, str]`` (load, governor, temperature), else the conditions are unknown."""

    runtime: str

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        """The model timed alone (the ``median`` protocol)."""
        ...

    def check(self) -> list[tuple[str, bool, str]]: ...


BACKENDS: Registry[Callable[[DeviceEntry], Backend]] = Registry(
    "backends", "measuring backend",
    ("edgekd.runtime.local", "edgekd.runtime.ssh", "edgekd.runtime.adb", "edgekd.runtime.tensorrt",
     "edgekd.runtime.qaihub"))
"""The measuring backend of each measurable device kind, made from its devices.yaml entry."""


def backend_for(device: NamedDevice) -> Backend:
    """The measuring backend of a device entry; DeviceError for kinds that cannot measure (predictors)."""
    if not device.measurable:
        raise DeviceError(f"device {device.name!r} is a {device.spec.kind}: it predicts latency and cannot measure it")
    return BACKENDS.get(device.spec.kind)(device.spec)


def measure_against(backend: Backend, paths: list[Path], reference: Path, input_shape: tuple[int, ...],
                    settings: Settings) -> list[Interleaved]:
    """Each model timed interleaved with ``reference`` on ``backend``: its own way where it has one."""
    own = getattr(backend, "measure_against", None)
    if own is not None:
        return own(paths, reference, input_shape, settings)

    def run_by_run(path: Path, shape: tuple[int, ...]) -> Sampler:
        return lambda: backend.measure_onnx(path, shape).median_ms

    sampler = getattr(backend, "sampler", run_by_run)
    return interleave_each([sampler(p, input_shape) for p in paths], sampler(reference, input_shape), settings)


def device_conditions(backend: Backend) -> dict[str, str]:
    """The device's state as ``backend`` reads it (empty where it cannot)."""
    own = getattr(backend, "conditions", None)
    return own() if own is not None else {}
