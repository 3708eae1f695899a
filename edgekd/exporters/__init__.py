"""Export formats, registered by name: how to write the artifact and how to run it in its own runtime.

An exporter is ``export(model, spec, out_dir, options) -> Path``. ``options`` carries ``opset``,
``exporter`` (torchscript | dynamo), ``simplify``, the target ``device`` (a NamedDevice) and, for quantized
formats, ``calibration`` (float32 NCHW training images, already normalized). Each format also opens its
artifact on a device as a ``Runner`` (float32 NCHW batch in, logits out) in its target runtime, which
validation and ``edgekd verify`` use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from edgekd.core.arch import ArchSpec
from edgekd.core.devices import LocalDevice, NamedDevice
from edgekd.core.errors import ConfigError, EdgeKDError
from edgekd.core.registry import Registry
from edgekd.runtime.ort import Runner, open_onnx

__all__ = ["FORMATS", "ExportFormat", "Exporter", "Runner", "available_formats", "calibration_images", "get_exporter",
           "get_format", "open_in_onnxruntime", "register_format"]


class Exporter(Protocol):
    """Writes ``model`` (described by ``spec``) in one deployable format under ``out_dir``; returns the file."""

    def __call__(self, model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path: ...


@dataclass(frozen=True)
class ExportFormat:
    name: str
    export: Exporter
    open: Callable[[Path, NamedDevice], Runner]
    """(artifact, target device) -> a runner in the format's runtime, where that runtime runs for the device."""
    runtime: Callable[[], str]
    """Name and version of that runtime, e.g. ``onnxruntime-1.32.0``."""


FORMATS: Registry[ExportFormat] = Registry(
    "formats", "export format",
    tuple(f"edgekd.exporters.{m}" for m in ("onnx", "onnx_int8", "ort_mobile", "tensorrt", "litert", "executorch")))


def register_format(name: str, open: Callable[[Path, NamedDevice], Runner], runtime: Callable[[], str]):
    """Decorator registering an exporter function as format ``name``."""

    def deco(fn: Exporter) -> Exporter:
        FORMATS.add(name, ExportFormat(name, fn, open, runtime))
        return fn

    return deco


def get_format(name: str) -> ExportFormat:
    """The format registered as ``name`` (``onnx``, ``onnx-fp16``, ``onnx-int8``, ``tensorrt``...)."""
    return FORMATS.get(name)


def available_formats() -> list[str]:
    """The formats whose runtime is installed here (what ``--formats auto`` exports): the optional extras'
    formats only with their extra, TensorRT's only with TensorRT and a GPU."""
    found = []
    for name, fmt in FORMATS.items():
        try:
            fmt.runtime()
        except EdgeKDError:
            continue
        found.append(name)
    return found


def get_exporter(name: str) -> Exporter:
    """The exporter function of format ``name``."""
    return get_format(name).export


def open_in_onnxruntime(path: Path, device: NamedDevice) -> Runner:
    """An ONNX model in ONNX Runtime on this host, with the device's threads (and provider, for ``local`` ones)."""
    d = device.spec
    return open_onnx(path, d.threads, d.provider if isinstance(d, LocalDevice) else "cpu")


def quiet_converter_imports() -> None:
    """Before importing a converter: torchao (which the LiteRT and ExecuTorch converters import) registers an Enum
    the way torch deprecates, and torch logs a warning about it at every import, nothing a user can act on."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def calibration_images(images: np.ndarray | None, fmt: str) -> np.ndarray:
    """``images`` (``options['calibration']``) as float32 NCHW; ConfigError when a quantized format got none."""
    if images is None or len(images) == 0:
        raise ConfigError(f"{fmt} needs calibration images (options['calibration'], float32 NCHW)")
    return np.ascontiguousarray(images, dtype=np.float32)
