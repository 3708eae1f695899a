"""``ort``: ONNX Runtime's mobile format, the FlatBuffers model that ONNX Runtime's minimal (phone) builds load.

Converted from the fp32 ONNX export by ONNX Runtime's own converter (``onnxruntime.tools.convert_onnx_models_to_ort``,
"fixed" optimization style: the graph optimized once, at conversion) for portable targets (``target_platform``
arm: no x86-only NCHWc layout), so one file runs on phones and on this host alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.core.arch import ArchSpec
from edgekd.core.errors import DeviceError
from edgekd.core.scratch import scratch_dir
from edgekd.exporters import open_in_onnxruntime, register_format
from edgekd.exporters.onnx import fp32_onnx
from edgekd.runtime.ort import onnxruntime_version


def to_ort(onnx_path: Path, out: Path) -> Path:
    """Convert an ONNX model to ONNX Runtime's format at ``out``."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # set to DEBUG by ONNX Runtime's tools
    with scratch_dir("ort") as tmp, contextlib.redirect_stdout(io.StringIO()) as log:
        convert_onnx_models_to_ort(onnx_path, Path(tmp), [OptimizationStyle.Fixed], target_platform="arm")
        converted = next(Path(tmp).glob("*.ort"), None)
        if converted is None:
            raise DeviceError(f"ONNX Runtime did not convert {onnx_path} to its format: {log.getvalue()[-500:]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(converted, out)
    return out


@register_format("ort", open_in_onnxruntime, onnxruntime_version)
def ort_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model.ort``: the fp32 model in ONNX Runtime's mobile format."""
    with scratch_dir("ort") as tmp:
        return to_ort(fp32_onnx(model, spec, Path(tmp) / "model.onnx", options), out_dir / "model.ort")
