"""Latency measured with ONNX Runtime's CPU provider on this host (device kind ``local``)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from torch import nn

from edgekd.devices import NamedDevice
from edgekd.exporters.onnx import INPUT_NAME, export_onnx
from edgekd.latency_models import Measurement
from edgekd.latency_models.cache import MeasurementCache
from edgekd.pipeline.arch import ArchSpec, build

RUNTIME = f"onnxruntime-{ort.__version__}"


def time_onnx(
    path: Path, input_shape: tuple[int, ...], threads: int, warmup: int, repeats: int, batch_size: int = 1
) -> Measurement:
    """Median and 10th/90th percentile of ``repeats`` single runs of the ONNX model at ``path``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: np.random.default_rng(0).standard_normal((batch_size, *input_shape), dtype=np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times[i] = (time.perf_counter() - start) * 1e3
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return Measurement(float(median), float(p10), float(p90), repeats, threads, batch_size, RUNTIME)


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
