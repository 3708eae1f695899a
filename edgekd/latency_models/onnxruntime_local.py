"""Latency measured with ONNX Runtime's CPU provider on this host (device kind ``local``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from edgekd.devices import NamedDevice
from edgekd.exporters.onnx import export_onnx, onnxruntime_version, open_onnx
from edgekd.latency_models import Measurement
from edgekd.latency_models.cache import MeasurementCache
from edgekd.latency_models.timing import time_runner
from edgekd.pipeline.arch import ArchSpec, build

RUNTIME = onnxruntime_version()


def time_onnx(
    path: Path, input_shape: tuple[int, ...], threads: int, warmup: int, repeats: int, batch_size: int = 1
) -> Measurement:
    """Latency of the ONNX model at ``path`` in ONNX Runtime's CPU provider with ``threads`` threads."""
    return time_runner(open_onnx(path, threads), input_shape, warmup, repeats, threads, RUNTIME, batch_size)


class OnnxRuntimeLatency:
    """LatencyModel of a ``local`` device: export each architecture to ONNX and time it, caching on disk."""

    def __init__(self, device: NamedDevice, cache_path: Path) -> None:
        self.device = device
        self.cache = MeasurementCache(cache_path)

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        """Time any module (a torchvision teacher, say) on this device; not cached."""
        with tempfile.TemporaryDirectory(prefix="edgekd-lat-") as tmp:
            path = export_onnx(model, input_shape, Path(tmp) / "model.onnx")
            return self.measure_onnx(path, input_shape)

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        d = self.device.spec
        return time_onnx(path, input_shape, d.threads, d.warmup, d.repeats, d.batch_size)

    def measure(self, spec: ArchSpec) -> Measurement:
        """The cached measurement of ``spec``, measuring it first if needed."""
        cached = self.cache.get(spec.id, self.device.fingerprint, RUNTIME)
        if cached is not None:
            return cached
        m = self.measure_model(build(spec), spec.input_shape)
        self.cache.put(spec.id, self.device.fingerprint, m)
        return m

    def latency_ms(self, spec: ArchSpec) -> float:
        return self.measure(spec).median_ms

    def latency_many(self, specs: list[ArchSpec]) -> list[float]:
        return [self.latency_ms(s) for s in specs]
