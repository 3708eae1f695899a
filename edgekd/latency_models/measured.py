"""Measured latency: each architecture exported to ONNX and timed on its device, cached on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from edgekd.core.arch import ArchSpec, build
from edgekd.core.devices import NamedDevice
from edgekd.core.measurement import Measurement
from edgekd.core.scratch import scratch_dir
from edgekd.exporters.onnx import export_onnx, to_fp16
from edgekd.exporters.onnx_int8 import quantize_int8
from edgekd.latency_models.cache import MeasurementCache
from edgekd.runtime import backend_for


class MeasuredLatency:
    """LatencyModel of a measurable device: export each architecture to ONNX and time it, caching on disk."""

    def __init__(self, device: NamedDevice, cache_path: Path) -> None:
        self.device = device
        self.backend = backend_for(device)
        self.cache = MeasurementCache(cache_path)

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        """Time any module (a torchvision teacher, say) on this device; not cached."""
        with scratch_dir("lat") as tmp:
            return self.measure_onnx(export_onnx(model, input_shape, Path(tmp) / "model.onnx"), input_shape)

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        return self.backend.measure_onnx(path, input_shape)

    def measure(self, spec: ArchSpec) -> Measurement:
        """The cached measurement of ``spec``, measuring it first if needed."""
        return self.measure_many([spec])[0]

    def measure_many(self, specs: list[ArchSpec]) -> list[Measurement]:
        """Measurements of ``specs``: cached ones reused, the rest measured together and cached."""
        key = self.device.fingerprint
        found = {s.id: self.cache.get(s.id, key, self.backend.runtime) for s in specs}
        todo = list({s.id: s for s in specs if found[s.id] is None}.values())
        if todo:
            with scratch_dir("lat") as tmp:
                paths = [self._export(s, Path(tmp)) for s in todo]
                if hasattr(self.backend, "measure_many"):
                    measured = self.backend.measure_many(paths)
                else:
                    measured = [self.backend.measure_onnx(p, s.input_shape) for p, s in zip(paths, todo, strict=True)]
            for s, m in zip(todo, measured, strict=True):
                self.cache.put(s.id, key, m)
                found[s.id] = m
        return [found[s.id] for s in specs]

    def _export(self, spec: ArchSpec, folder: Path) -> Path:
        """The ONNX file timed for ``spec``: fp32, or the device entry's fp16 / int8 variant of it."""
        path = export_onnx(build(spec), spec.input_shape, folder / f"{spec.id}.onnx")
        variant = getattr(self.device.spec, "variant", "fp32")
        if variant == "fp16":
            return to_fp16(path)
        if variant == "int8":
            # Latency does not depend on the calibrated ranges: random images calibrate the timed model.
            images = np.random.default_rng(0).standard_normal((16, *spec.input_shape), dtype=np.float32)
            return quantize_int8(path, folder / f"{spec.id}-int8.onnx", images)
        return path

    def latency_ms(self, spec: ArchSpec) -> float:
        return self.measure(spec).median_ms

    def latency_many(self, specs: list[ArchSpec]) -> list[float]:
        return [m.median_ms for m in self.measure_many(specs)]
