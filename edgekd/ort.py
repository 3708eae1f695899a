"""ONNX Runtime sessions as edgekd opens them. Torch-free on purpose: the measuring process imports only this."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME, OUTPUT_NAME = "input", "logits"

Runner = Callable[[np.ndarray], np.ndarray]
"""A model in its runtime: float32 NCHW batch in, logits out."""


def ort_session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads, sequential execution, all optimizations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def open_onnx(path: Path, threads: int = 1) -> Runner:
    """A runner of the ONNX model at ``path`` in ONNX Runtime."""
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def onnxruntime_version() -> str:
    return f"onnxruntime-{ort.__version__}"
