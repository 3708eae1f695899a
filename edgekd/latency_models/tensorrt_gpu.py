"""``tensorrt`` devices: an engine is built from the ONNX model on the local NVIDIA GPU and timed there."""

from __future__ import annotations

from pathlib import Path

from edgekd.devices import TensorRTDevice
from edgekd.errors import DeviceError
from edgekd.exporters.tensorrt import build_engine, open_engine, require_tensorrt, tensorrt_version
from edgekd.latency_models import Measurement
from edgekd.latency_models.timing import time_runner
from edgekd.scratch import scratch_dir


class TensorRTBackend:
    def __init__(self, spec: TensorRTDevice) -> None:
        self.spec = spec

    @property
    def runtime(self) -> str:
        return f"{tensorrt_version()}-{self.spec.precision}"

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        s = self.spec
        with scratch_dir("trt") as tmp:
            engine = build_engine(path, Path(tmp) / "model.plan", input_shape, s.precision)
            return time_runner(open_engine(engine), input_shape, s.warmup, s.repeats, 1, self.runtime, s.batch_size)

    def check(self) -> list[tuple[str, bool, str]]:
        try:
            trt = require_tensorrt()
        except DeviceError as exc:
            return [("tensorrt", False, str(exc))]
        import torch

        return [("tensorrt", True, trt.__version__), ("GPU", True, torch.cuda.get_device_name(0))]
