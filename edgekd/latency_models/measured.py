"""Measured latency: each architecture exported in the format its device times (ONNX, or a phone tool's LiteRT or
ExecuTorch model) and timed on the device, cached on disk."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.devices import MeasurementProtocol, NamedDevice
from edgekd.core.errors import EdgeKDError
from edgekd.core.measurement import Measurement
from edgekd.core.scratch import scratch_dir
from edgekd.exporters import get_format
from edgekd.exporters.onnx import export_onnx, to_fp16
from edgekd.exporters.onnx_int8 import quantize_int8
from edgekd.latency_models.cache import MeasurementCache
from edgekd.runtime import backend_for, device_conditions, measure_against
from edgekd.runtime.protocol import Interleaved, combine_passes, pass_order, settings_of, to_measurement


def reference_arch(input_shape: tuple[int, ...]) -> ArchSpec:
    """The fixed reference model the interleaved protocol times candidates against, for inputs of ``input_shape``:
    a small MobileNet-like network (what matters is that it is fixed: latencies are ratios to it)."""
    c, h, _ = input_shape
    blocks = (BlockSpec("mbconv", 3, 16, 1, 3), BlockSpec("mbconv", 3, 24, 2, 3), BlockSpec("mbconv", 5, 40, 2, 3),
              BlockSpec("mbconv", 3, 80, 1, 6))
    return ArchSpec(resolution=h, in_channels=c, num_classes=10, stem_channels=16, blocks=blocks, head_channels=256,
                    stem_stride=2 if h >= 64 else 1, name="reference")


ONNX_VARIANTS = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8"}


def timed_format(device: NamedDevice) -> str:
    """The export format ``device`` times: its entry's own (a phone tool's), else ONNX in the entry's variant."""
    return getattr(device.spec, "timed_format", None) or ONNX_VARIANTS[getattr(device.spec, "variant", "fp32")]


def _random_images(spec: ArchSpec) -> np.ndarray:
    # Latency does not depend on the calibrated ranges: random images calibrate a timed int8 model.
    return np.random.default_rng(0).standard_normal((16, *spec.input_shape), dtype=np.float32)


class MeasuredLatency:
    """LatencyModel of a measurable device: export each architecture in the device's format and time it, caching
    on disk (the device's state, read after each timing call, is kept with each measurement).

    With the ``interleaved`` protocol each model is timed against ``reference_arch`` (its calibrated latency
    measured once per device and cached), and the session tracks the reference's own speed: a measurement
    during which it moved beyond the device's ``drift_bound`` is redone once (``redone`` counts them); with
    ``passes`` above 1 the models measured together are timed in that many passes and each one's are combined."""

    def __init__(self, device: NamedDevice, cache_path: Path) -> None:
        self.device = device
        self.backend = backend_for(device)
        self.cache = MeasurementCache(cache_path)
        self.folder = cache_path.parent
        self.session_reference: list[float] = []
        """Raw reference medians of this session's interleaved measurements."""
        self.redone = 0

    @property
    def protocol(self) -> MeasurementProtocol:
        return self.device.spec.protocol

    def measure_model(self, model: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        """Time any module (a torchvision teacher, say) on this device, as ONNX; not cached."""
        with scratch_dir("lat") as tmp:
            return self.measure_onnx(export_onnx(model, input_shape, Path(tmp) / "model.onnx"), input_shape)

    def times(self, path: Path) -> bool:
        """Whether the device times model files like ``path`` itself (ONNX, or what a phone's tools run)."""
        tool_for = getattr(self.backend, "tool_for", None)
        if tool_for is None:
            return path.suffix == ".onnx"
        try:
            tool_for(path)
        except EdgeKDError:
            return False
        return True

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        """Time the model file at ``path`` (ONNX, or any file ``times`` accepts) with the device's protocol; not
        cached."""
        return self._measure_files([path], input_shape)[0]

    def measure(self, spec: ArchSpec) -> Measurement:
        """The cached measurement of ``spec``, measuring it first if needed."""
        return self.measure_many([spec])[0]

    def measure_many(self, specs: list[ArchSpec]) -> list[Measurement]:
        """Measurements of ``specs``: cached ones reused, the rest measured together and cached."""
        key = self.device.fingerprint
        found = {s.id: self.cache.get(s.id, key, self.backend.runtime) for s in specs}
        todo = [s for s in specs if found[s.id] is None]
        if todo:
            found |= {s.id: m for s, m in zip(todo, self.remeasure(todo), strict=True)}
        return [found[s.id] for s in specs]

    def remeasure(self, specs: list[ArchSpec], precision: float | None = None,
                  budget_s: float | None = None) -> list[Measurement]:
        """``specs`` measured again (to ``precision`` within ``budget_s`` when given), replacing the cached ones."""
        changes = {k: v for k, v in (("precision", precision), ("budget_s", budget_s)) if v is not None}
        protocol = self.protocol.model_copy(update=changes)
        out: dict[str, Measurement] = {}
        for shape in {s.input_shape for s in specs}:
            group = list({s.id: s for s in specs if s.input_shape == shape}.values())
            with scratch_dir("lat") as tmp:
                measured = self._measure_files([self._export(s, Path(tmp)) for s in group], shape, protocol)
            for s, m in zip(group, measured, strict=True):
                self.cache.put(s.id, self.device.fingerprint, m)
                out[s.id] = m
        return [out[s.id] for s in specs]

    def _measure_files(self, paths: list[Path], input_shape: tuple[int, ...],
                       protocol: MeasurementProtocol | None = None) -> list[Measurement]:
        protocol = protocol or self.protocol
        if protocol.kind == "median":
            if hasattr(self.backend, "measure_many"):
                return self._with_conditions(self.backend.measure_many(paths))
            return [self.backend.measure_onnx(p, input_shape) for p in paths]
        reference, reference_ms = self.reference(input_shape)
        per_pass, redone = [], np.zeros(len(paths), dtype=int)
        for p in range(protocol.passes):
            order = np.array(pass_order(len(paths), p))
            found, again = self._one_pass([paths[i] for i in order], reference, input_shape, protocol)
            per_pass.append(dict(zip(order, found, strict=True)))
            redone[order] += again
        results = [combine_passes([found[i] for found in per_pass]) for i in range(len(paths))]
        s = self.device.spec
        affinity = sorted(s.affinity) if getattr(s, "affinity", None) else None
        runtime = getattr(self.backend, "runtime_for", lambda _: self.backend.runtime)
        return self._with_conditions([to_measurement(r, reference_ms, s.threads, s.batch_size, runtime(p), affinity, n)
                                      for r, n, p in zip(results, redone.tolist(), paths, strict=True)])

    def _one_pass(self, paths: list[Path], reference: Path, input_shape: tuple[int, ...],
                  protocol: MeasurementProtocol) -> tuple[list[Interleaved], list[int]]:
        """Each of ``paths`` timed against ``reference`` once, a measurement during which the host drifted
        redone; the results and whether each was redone."""
        settings = settings_of(protocol)
        results = measure_against(self.backend, paths, reference, input_shape, settings)
        redone = [0] * len(paths)
        for i, path in enumerate(paths):
            if self._drifted(results[i], protocol.drift_bound):
                self.redone += 1
                redone[i] = 1
                again = measure_against(self.backend, [path], reference, input_shape, settings)[0]
                results[i] = min(results[i], again, key=lambda r: (self._drifted(r, protocol.drift_bound),
                                                                   r.half_width))
            self.session_reference.append(results[i].reference_ms)
        return results, redone

    def _with_conditions(self, measured: list[Measurement]) -> list[Measurement]:
        state = device_conditions(self.backend) or None
        return [m if m.conditions else dataclasses.replace(m, conditions=state) for m in measured]

    def _drifted(self, result: Interleaved, bound: float) -> bool:
        """Whether the reference moved beyond ``bound`` during ``result``, or away from this session's level."""
        if result.reference_cv > bound:
            return True
        if len(self.session_reference) < 3:
            return False
        level = float(np.median(self.session_reference))
        return abs(result.reference_ms / level - 1) > bound

    def reference(self, input_shape: tuple[int, ...]) -> tuple[Path, float]:
        """The reference model's file for ``input_shape`` and its calibrated latency on this device (timed alone
        once, ``median`` protocol, then cached)."""
        spec = reference_arch(input_shape)
        refs, stem = self.folder / "references", f"{spec.id}-{timed_format(self.device)}"
        found = sorted(refs.glob(f"{stem}.*"))
        if found:
            path = found[0]
        else:
            refs.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=refs) as tmp:  # renamed whole: never read half-written
                exported = self._export(spec, Path(tmp))
                path = refs / f"{stem}{exported.suffix}"
                os.replace(exported, path)
        key = self.device.fingerprint
        calibrated = self.cache.get(f"reference:{spec.id}", key, self.backend.runtime)
        if calibrated is None:
            alone = self.protocol.model_copy(update={"kind": "median"})
            calibrated = self._measure_files([path], input_shape, alone)[0]
            self.cache.put(f"reference:{spec.id}", key, calibrated)
        return path, calibrated.median_ms

    def _export(self, spec: ArchSpec, folder: Path) -> Path:
        """The model file timed for ``spec``, in the device's format (timed_format)."""
        fmt = timed_format(self.device)
        if fmt not in ONNX_VARIANTS.values():
            exported = get_format(fmt).export(build(spec).eval(), spec, folder / spec.id,
                                              {"calibration": _random_images(spec), "device": self.device})
            return exported.rename(folder / f"{spec.id}{exported.suffix}")
        path = export_onnx(build(spec), spec.input_shape, folder / f"{spec.id}.onnx")
        if fmt == "onnx-fp16":
            return to_fp16(path)
        if fmt == "onnx-int8":
            return quantize_int8(path, folder / f"{spec.id}-int8.onnx", _random_images(spec))
        return path

    def latency_ms(self, spec: ArchSpec) -> float:
        return self.measure(spec).median_ms

    def latency_many(self, specs: list[ArchSpec]) -> list[float]:
        return [m.median_ms for m in self.measure_many(specs)]
