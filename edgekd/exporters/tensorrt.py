"""TensorRT engines (``tensorrt``, ``tensorrt-fp16``, ``tensorrt-int8``) built from the ONNX export.

Built and run on the local NVIDIA GPU (edgekd.runtime.tensorrt) or, for an ``ssh`` device, on the board with its
trtexec (edgekd.runtime.trtexec); the int8 engine is built from a QDQ model calibrated like ``onnx-int8``
(explicit quantization) but in TensorRT's symmetric signed-int8 scheme (``INT8_SCHEMES['tensorrt']``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgekd.core.arch import ArchSpec
from edgekd.core.scratch import scratch_dir
from edgekd.exporters import register_format
from edgekd.exporters.onnx import fp32_onnx
from edgekd.exporters.onnx_int8 import quantize_int8
from edgekd.runtime.tensorrt import build_engine, open_engine_on, require_tensorrt, tensorrt_version
from edgekd.runtime.trtexec import Trtexec, board_of


def _engine(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any], precision: str) -> Path:
    board = board_of(options.get("device"))
    if board is None:
        require_tensorrt()
    suffix = "" if precision == "fp32" else f"-{precision}"
    with scratch_dir("trt") as tmp:
        onnx_path = fp32_onnx(model, spec, Path(tmp) / "model.onnx", options)
        if precision == "int8":
            onnx_path = quantize_int8(onnx_path, Path(tmp) / "model-int8.onnx", options.get("calibration"),
                                      runtime="tensorrt")
        build = Trtexec(board).build if board else build_engine
        return build(onnx_path, out_dir / f"model{suffix}.plan", spec.input_shape, precision)


@register_format("tensorrt", open_engine_on, tensorrt_version)
def tensorrt_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model.plan``: an fp32 TensorRT engine for the local GPU (or the ssh device's)."""
    return _engine(model, spec, out_dir, options, "fp32")


@register_format("tensorrt-fp16", open_engine_on, tensorrt_version)
def tensorrt_fp16_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model-fp16.plan``: an engine with fp16 kernels allowed."""
    return _engine(model, spec, out_dir, options, "fp16")


@register_format("tensorrt-int8", open_engine_on, tensorrt_version)
def tensorrt_int8_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model-int8.plan``: an engine from the calibrated QDQ model (explicit int8 quantization)."""
    return _engine(model, spec, out_dir, options, "int8")
