"""LiteRT (TFLite) models in ai-edge-litert's interpreter on this host, with its default XNNPACK delegate.

Torch-free, like the ONNX Runtime module: the `tflite` formats' runtime (extra ``litert``). A fully int8 model
takes int8 input and gives int8 logits; the runner quantizes and dequantizes with the model's own scales, so
every runner takes float32 NCHW images and returns float32 logits.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.errors import DeviceError
from edgekd.runtime.ort import Runner

INSTALL_HINT = "pip install 'edgekd[litert]'"


def litert_version() -> str:
    """``ai-edge-litert-VERSION``; DeviceError when it is not installed."""
    try:
        return f"ai-edge-litert-{version('ai-edge-litert')}"
    except PackageNotFoundError as exc:
        raise DeviceError(f"LiteRT is not installed: {INSTALL_HINT}") from exc


def _interpreter(path: Path, threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise DeviceError(f"LiteRT is not installed: {INSTALL_HINT}") from exc
    return Interpreter(model_path=str(path), num_threads=threads)


def _to_model(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from_model(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def open_tflite(path: Path, threads: int = 1) -> Runner:
    """A runner of the LiteRT model at ``path`` with ``threads`` threads. edgekd's models have batch 1, as a
    phone runs them, so a batch runs image by image (resizing the batch is not safe: XNNPACK cannot reshape a
    converted model's fixed-shape reshapes)."""
    interpreter = _interpreter(path, threads)
    given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = int(given["shape"][0])
    interpreter.allocate_tensors()

    def run_one(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(given["index"], _to_model(x, given))
        interpreter.invoke()
        return _from_model(interpreter.get_tensor(taken["index"]), taken)

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([run_one(x[start:start + batch]) for start in range(0, len(x), batch)])

    return run
