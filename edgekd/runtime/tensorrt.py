"""TensorRT engines on the local NVIDIA GPU: built from an ONNX model, run and timed (``tensorrt`` devices).

Written against TensorRT 10's Python API (extra ``tensorrt``; NVIDIA publishes the libraries on its own index
only). An engine is only valid on the GPU model and TensorRT version it was built with; for an ``ssh`` device
the board's trtexec builds and runs it instead (edgekd.runtime.trtexec, which needs nothing of TensorRT here).
Device buffers are torch CUDA tensors, so nothing beyond torch and TensorRT is needed. Without TensorRT or a
GPU every entry point raises DeviceError naming what is missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch

from edgekd.core.devices import NamedDevice, TensorRTDevice
from edgekd.core.errors import DeviceError
from edgekd.core.measurement import Measurement
from edgekd.core.scratch import scratch_dir
from edgekd.runtime import BACKENDS
from edgekd.runtime.conditions import local_conditions
from edgekd.runtime.ort import INPUT_NAME, OUTPUT_NAME, Runner
from edgekd.runtime.protocol import Interleaved, Settings, block_sampler, calls_per_block, interleave_each
from edgekd.runtime.timing import time_runner
from edgekd.runtime.trtexec import MAX_BATCH, Trtexec, board_of

WORKSPACE_BYTES = 1 << 30


def require_tensorrt():
    """The ``tensorrt`` module, after checking that a CUDA GPU is visible; DeviceError says what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise DeviceError(
            "TensorRT is not installed: install the `tensorrt` extra from NVIDIA's index "
            "(pip install --extra-index-url https://pypi.nvidia.com 'edgekd[tensorrt]')"
        ) from exc
    if not torch.cuda.is_available():
        raise DeviceError("no NVIDIA GPU is visible (torch.cuda.is_available() is False); TensorRT needs one")
    return trt


def tensorrt_version() -> str:
    return f"tensorrt-{require_tensorrt().__version__}"


def build_engine(onnx_path: Path, engine_path: Path, input_shape: tuple[int, ...], precision: str) -> Path:
    """Build a serialized engine for batch 1..MAX_BATCH (optimized for 1) from an ONNX model."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeviceError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 (on by default) would change fp32 results
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 engines keep non-quantized layers in fp16
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, *input_shape), (1, *input_shape), (MAX_BATCH, *input_shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeviceError(f"TensorRT failed to build a {precision} engine from {onnx_path}")
    engine_path.write_bytes(bytes(serialized))
    return engine_path


def open_engine(path: Path) -> Runner:
    """A runner of the serialized engine at ``path`` on the local GPU."""
    trt = require_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise DeviceError(f"{path} is not a TensorRT engine for this GPU and TensorRT version")
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()

    def run(x: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(x), MAX_BATCH):
            inp = torch.from_numpy(np.ascontiguousarray(x[start : start + MAX_BATCH], dtype=np.float32)).cuda()
            context.set_input_shape(INPUT_NAME, tuple(inp.shape))
            out = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda")
            context.set_tensor_address(INPUT_NAME, inp.data_ptr())
            context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
            with torch.cuda.stream(stream):
                if not context.execute_async_v3(stream.cuda_stream):
                    raise DeviceError(f"TensorRT failed to run {path}")
            stream.synchronize()
            outputs.append(out.cpu().numpy())
        return np.concatenate(outputs)

    return run


def open_engine_on(path: Path, device: NamedDevice) -> Runner:
    """A runner of the engine at ``path`` on ``device``: the board's trtexec for ssh devices, else the local GPU."""
    board = board_of(device)
    return Trtexec(board).runner(path) if board else open_engine(path)



@BACKENDS.register("tensorrt")
class TensorRTBackend:
    """Times an ONNX model as an engine built on the local GPU."""

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

    def measure_against(self, paths: list[Path], reference: Path, input_shape: tuple[int, ...],
                        settings: Settings) -> list[Interleaved]:
        """Each model's engine timed interleaved with the reference's engine on the GPU."""
        s = self.spec
        x = np.random.default_rng(0).standard_normal((s.batch_size, *input_shape), dtype=np.float32)
        with scratch_dir("trt") as tmp:
            samplers = []
            for i, path in enumerate([reference, *paths]):
                run = open_engine(build_engine(path, Path(tmp) / f"{i}.plan", input_shape, s.precision))
                samplers.append(block_sampler(run, x, calls_per_block(run, x, s.warmup)))
            return interleave_each(samplers[1:], samplers[0], settings)

    def conditions(self) -> dict[str, str]:
        """This host's state; the GPU's temperature and clock where nvidia-smi is installed."""
        found = local_conditions()
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=temperature.gpu,clocks.sm", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
        except (OSError, subprocess.TimeoutExpired):
            gpu = []
        return found | ({"GPU temperature, clock": gpu[0]} if gpu else {})

    def check(self) -> list[tuple[str, bool, str]]:
        try:
            trt = require_tensorrt()
        except DeviceError as exc:
            return [("tensorrt", False, str(exc))]
        import torch

        return [("tensorrt", True, trt.__version__), ("GPU", True, torch.cuda.get_device_name(0))]
