"""ONNX Runtime sessions as edgekd opens them. Torch-free on purpose: the measuring process imports only this."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from edgekd.core.errors import DeviceError

INPUT_NAME, OUTPUT_NAME = "input", "logits"

Runner = Callable[[np.ndarray], np.ndarray]
"""A model in its runtime: float32 NCHW batch in, logits out."""

Provider = Literal["cpu", "cuda"]
EXECUTION_PROVIDERS: dict[str, str] = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {"cpu": {}, "cuda": {"use_tf32": "0"}}
"""The CUDA provider's default TF32 convolutions keep 10 mantissa bits: an fp32 model's logits then moved by up
to 6e-3 on an H100. fp32 stays fp32; reduced precision is what the fp16 and int8 formats are for."""


def has_provider(provider: Provider) -> bool:
    """Whether this ONNX Runtime build has ``provider`` (cuda: onnxruntime-gpu)."""
    return EXECUTION_PROVIDERS[provider] in ort.get_available_providers()


def check_provider(provider: Provider) -> None:
    """DeviceError naming what is missing when this ONNX Runtime build lacks ``provider``."""
    if not has_provider(provider):
        raise DeviceError(
            f"this ONNX Runtime ({ort.__version__}, providers: {', '.join(ort.get_available_providers())}) has no "
            f"{EXECUTION_PROVIDERS[provider]}; for an NVIDIA GPU install onnxruntime-gpu in place of onnxruntime"
        )


def ort_session(path: Path, threads: int = 1, provider: Provider = "cpu") -> ort.InferenceSession:
    """An ONNX Runtime session on ``provider`` with ``threads`` intra-op threads, sequential, all optimizations.

    A session that could not place the model on the requested provider (ONNX Runtime falls back to the CPU
    when the CUDA libraries fail to load) is a DeviceError, never a silent CPU run."""
    check_provider(provider)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [(EXECUTION_PROVIDERS[provider], PROVIDER_OPTIONS[provider])]
    session = ort.InferenceSession(str(path), opts, providers=providers)
    if session.get_providers()[0] != EXECUTION_PROVIDERS[provider]:
        raise DeviceError(f"ONNX Runtime could not start {EXECUTION_PROVIDERS[provider]} for {path} "
                          f"(it fell back to {session.get_providers()}); check the CUDA and cuDNN libraries")
    return session


def open_onnx(path: Path, threads: int = 1, provider: Provider = "cpu") -> Runner:
    """A runner of the ONNX model at ``path`` in ONNX Runtime on ``provider``."""
    session = ort_session(path, threads, provider)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def onnxruntime_version(provider: Provider = "cpu") -> str:
    """``onnxruntime-VERSION``, with ``-cuda`` appended for the CUDA provider."""
    return f"onnxruntime-{ort.__version__}" + ("" if provider == "cpu" else f"-{provider}")
