"""``onnx-int8``: static int8 quantization with ONNX Runtime's quantization tools.

QDQ format, per-channel int8 weights, uint8 activations whose ranges are calibrated (min/max) on training
images passed as ``options['calibration']``. Its accuracy cost is measured by validation, never assumed.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from torch import nn

from edgekd.errors import ConfigError
from edgekd.exporters import register_format
from edgekd.exporters.onnx import fp32_onnx
from edgekd.ort import INPUT_NAME, onnxruntime_version, open_onnx
from edgekd.pipeline.arch import ArchSpec

CALIBRATION_BATCH = 32


class _Images(CalibrationDataReader):
    def __init__(self, images: np.ndarray) -> None:
        self._batches = iter(
            [{INPUT_NAME: images[i : i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> Path:
    """Quantize the fp32 ONNX model at ``fp32_path`` to ``out_path`` (QDQ, per-channel), calibrated on images."""
    if calibration is None or len(calibration) == 0:
        raise ConfigError("onnx-int8 needs calibration images (options['calibration'], float32 NCHW)")
    with tempfile.TemporaryDirectory(prefix="edgekd-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs every node it skips
        quantize_static(
            str(prepared), str(out_path), _Images(np.ascontiguousarray(calibration, dtype=np.float32)),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    return out_path


@register_format("onnx-int8", open_onnx, onnxruntime_version)
def onnx_int8_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model-int8.onnx``: the fp32 export, statically quantized with ``options['calibration']``."""
    with tempfile.TemporaryDirectory(prefix="edgekd-int8-") as tmp:
        fp32 = fp32_onnx(model, spec, Path(tmp) / "model.onnx", options)
        return quantize_int8(fp32, out_dir / "model-int8.onnx", options.get("calibration"))
