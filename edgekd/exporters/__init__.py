"""Exporters, registered by format name: ``export(model, spec, out_dir, options) -> Path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from edgekd.errors import ConfigError
from edgekd.pipeline.arch import ArchSpec


class Exporter(Protocol):
    """Writes ``model`` (described by ``spec``) in one deployable format under ``out_dir``; returns the file."""

    def __call__(self, model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path: ...


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str) -> Callable[[Exporter], Exporter]:
    def deco(fn: Exporter) -> Exporter:
        EXPORTERS[name] = fn
        return fn

    return deco


def get_exporter(name: str) -> Exporter:
    """The exporter registered as ``name`` (e.g. ``onnx``)."""
    from edgekd.exporters import onnx  # noqa: F401  (registers the built-in formats)

    if name not in EXPORTERS:
        raise ConfigError(f"unknown export format {name!r}; available: {sorted(EXPORTERS)}")
    return EXPORTERS[name]
