"""ONNX export (``onnx`` fp32, ``onnx-fp16``): dynamic batch axis, onnxslim simplification, onnx checker.

Both formats run in ONNX Runtime (edgekd.runtime.ort, shared with the latency measurements).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from edgekd.core.arch import ArchSpec
from edgekd.core.errors import ConfigError
from edgekd.exporters import open_in_onnxruntime, register_format
from edgekd.runtime.ort import INPUT_NAME, OUTPUT_NAME, onnxruntime_version

DEFAULT_OPSET = 18
ONNX_EXPORTERS = ("torchscript", "dynamo")


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    simplify: bool = False,
) -> Path:
    """Export ``model`` (eval mode, batch axis dynamic) to one self-contained ONNX file at ``path``; the model
    is traced where it is and every module left in the mode it came in.

    ``simplify`` runs onnxslim (constant folding, fusions, dead-node removal) before the checker.

    ``torchscript`` is torch's tracing exporter: about 0.25 s per small network here against about 10 s for
    ``dynamo`` (torch.export), which matters when every search candidate is exported to be timed.
    """
    if exporter not in ONNX_EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; expected one of {ONNX_EXPORTERS}")
    modes = [(m, m.training) for m in model.modules()]
    dummy = torch.zeros(1, *input_shape, device=next((p.device for p in model.parameters()), "cpu"))
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any]
    if exporter == "dynamo":
        kwargs = dict(dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    else:
        kwargs = dict(dynamo=False, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:  # not on a copy: copying the model would cost a tenth of the export
            torch.onnx.export(
                model.eval(), (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, external_data=False, **kwargs,
            )
        finally:
            for module, training in modes:
                module.training = training
    if simplify:
        import onnxslim

        onnx.save(onnxslim.slim(str(tmp)), str(tmp))
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(path)
    return path


def fp32_onnx(model: nn.Module, spec: ArchSpec, path: Path, options: dict[str, Any]) -> Path:
    """The fp32 ONNX model every ONNX-based format starts from, written at ``path``."""
    return export_onnx(
        model, spec.input_shape, path, opset=options.get("opset", DEFAULT_OPSET),
        exporter=options.get("exporter", "torchscript"), simplify=options.get("simplify", True),
    )


@register_format("onnx", open_in_onnxruntime, onnxruntime_version)
def onnx_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model.onnx``: fp32, opset ``options['opset']`` (default 18), dynamic batch axis, simplified."""
    return fp32_onnx(model, spec, out_dir / "model.onnx", options)


@register_format("onnx-fp16", open_in_onnxruntime, onnxruntime_version)
def onnx_fp16_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model-fp16.onnx``: fp16 weights and compute, fp32 input and output (half the file size)."""
    return to_fp16(fp32_onnx(model, spec, out_dir / "model-fp16.onnx", options))


def to_fp16(path: Path) -> Path:
    """Convert the ONNX model at ``path`` in place to fp16 weights and compute, keeping fp32 input and output."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about values clipped to fp16's range
        half = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.checker.check_model(half, full_check=True)
    onnx.save(half, str(path))
    return path
