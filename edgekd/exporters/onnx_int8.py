"""``onnx-int8``: static int8 quantization with ONNX Runtime's quantization tools.

QDQ format, per-channel int8 weights, uint8 activations whose ranges are calibrated (min/max) on training
images passed as ``options['calibration']``. Weights use 7 bits (``reduce_range``): x86 CPUs without VNNI
multiply uint8 by int8 with an instruction that adds pairs of products in int16 and saturates, and with full
8-bit weights a quick-start student lost 4.2 points of top-1 that way (0.6 with 7 bits).
Its accuracy cost is measured by validation, never assumed.

Before quantization the graph is rewritten, exactly, into operators ONNX Runtime runs in int8
(:func:`int8_friendly`): an operator it has no int8 kernel for stays fp32 between a DequantizeLinear and a
QuantizeLinear, and in a squeeze-excite student those pairs cost more time than the int8 convolutions save.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)
from torch import nn

from edgekd.core.arch import ArchSpec
from edgekd.core.scratch import scratch_dir
from edgekd.exporters import calibration_images, open_in_onnxruntime, register_format
from edgekd.exporters.onnx import fp32_onnx
from edgekd.runtime.ort import INPUT_NAME, onnxruntime_version

CALIBRATION_BATCH = 32


class _Images(CalibrationDataReader):
    def __init__(self, images: np.ndarray) -> None:
        self._batches = iter(
            [{INPUT_NAME: images[i : i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
              if n.op_type == "Constant" and n.attribute[0].name == "value"}
    values.update({i.name: numpy_helper.to_array(i) for i in graph.initializer})
    return values


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _spatial_mean(node: onnx.NodeProto, consts: dict[str, np.ndarray], ranks: dict[str, int]) -> bool:
    """Whether the ReduceMean ``node`` averages an NCHW tensor over exactly H and W."""
    axes = consts.get(node.input[1]) if len(node.input) > 1 else _attr(node, "axes", None)
    rank = ranks.get(node.input[0])
    return axes is not None and rank == 4 and sorted(int(a) % rank for a in np.ravel(axes)) == [2, 3]


def _sole_conv_with_bias(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], uses: Counter[str],
                         inits: dict[str, onnx.TensorProto]) -> onnx.NodeProto | None:
    """The Conv producing ``node``'s input when nothing else reads that output or the Conv's constant weights
    and bias (so they can be rescaled in place); else None."""
    conv = producer.get(node.input[0])
    if conv is None or conv.op_type != "Conv" or len(conv.input) != 3:
        return None
    sole = all(uses[name] == 1 for name in (node.input[0], *conv.input[1:]))
    return conv if sole and all(name in inits for name in conv.input[1:]) else None


def int8_friendly(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with two exact rewrites that keep a squeeze-excite network in int8 end to end.

    - ReduceMean over H and W of an NCHW tensor becomes GlobalAveragePool (then Flatten when ``keepdims=0``):
      ONNX Runtime fuses the latter into QLinearGlobalAveragePool and has no int8 ReduceMean.
    - HardSigmoid(Conv(x)), with the Conv its only consumer, becomes Clip(Conv'(x), 0, 1) where Conv' has
      its weights and bias scaled by alpha and beta added: the quantizer folds a Clip into the Conv's output
      range, where a HardSigmoid would stay fp32 between a dequantize and a quantize.
    """
    model = copy.deepcopy(model)
    graph = model.graph
    consts = _constants(graph)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.value_info, *inferred.input)}
    inits = {i.name: i for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    uses = Counter(name for n in graph.node for name in n.input)
    nodes: list[onnx.NodeProto] = []
    for n in graph.node:
        if n.op_type == "ReduceMean" and _spatial_mean(n, consts, ranks):
            if _attr(n, "keepdims", 1):
                nodes.append(helper.make_node("GlobalAveragePool", n.input[:1], n.output, name=n.name))
            else:
                pooled = f"{n.output[0]}_pooled"
                nodes.append(helper.make_node("GlobalAveragePool", n.input[:1], [pooled], name=n.name))
                nodes.append(helper.make_node("Flatten", [pooled], n.output, name=f"{n.name}_flatten", axis=1))
            continue
        conv = _sole_conv_with_bias(n, producer, uses, inits) if n.op_type == "HardSigmoid" else None
        if conv is not None:
            alpha, beta = _attr(n, "alpha", 0.2), _attr(n, "beta", 0.5)
            for name, scaled in ((conv.input[1], consts[conv.input[1]] * alpha),
                                 (conv.input[2], consts[conv.input[2]] * alpha + beta)):
                inits[name].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), name))
            low, high = f"{n.output[0]}_low", f"{n.output[0]}_high"
            graph.initializer.extend(numpy_helper.from_array(np.array(v, np.float32), name)
                                     for name, v in ((low, 0.0), (high, 1.0)))
            nodes.append(helper.make_node("Clip", [n.input[0], low, high], n.output, name=n.name))
            continue
        nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


Int8Runtime = Literal["onnxruntime", "tensorrt"]
INT8_SCHEMES: dict[Int8Runtime, dict[str, Any]] = {
    "onnxruntime": {"activation_type": QuantType.QUInt8, "reduce_range": True},
    "tensorrt": {"activation_type": QuantType.QInt8, "reduce_range": False,
                 "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}},
}
"""Quantizer settings per target runtime. ONNX Runtime: asymmetric uint8 activations, 7-bit weights (above).
TensorRT's ONNX parser accepts only signed int8 Q/DQ with zero point 0 ("TRT only supports symmetric
quantization") and takes biases in float (no int32 DequantizeLinear); its GPU kernels have no int16 pair
saturation, so the full 8 bits are kept."""


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray,
                  runtime: Int8Runtime = "onnxruntime") -> Path:
    """Quantize the fp32 ONNX model at ``fp32_path`` to ``out_path`` (QDQ, per-channel), calibrated on images,
    with the settings ``INT8_SCHEMES[runtime]`` of the runtime that will run it."""
    calibration = calibration_images(calibration, "int8 quantization")
    with scratch_dir("int8") as tmp:
        friendly, prepared = Path(tmp) / "friendly.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(int8_friendly(onnx.load(fp32_path)), friendly)
        quant_pre_process(str(friendly), str(prepared), skip_symbolic_shape=True)
        logging.getLogger("root").setLevel(logging.ERROR)  # the quantizer logs every node it skips
        quantize_static(
            str(prepared), str(out_path), _Images(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, **INT8_SCHEMES[runtime],
        )
    return out_path


@register_format("onnx-int8", open_in_onnxruntime, onnxruntime_version)
def onnx_int8_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model-int8.onnx``: the fp32 export, statically quantized with ``options['calibration']``."""
    with scratch_dir("int8") as tmp:
        fp32 = fp32_onnx(model, spec, Path(tmp) / "model.onnx", options)
        return quantize_int8(fp32, out_dir / "model-int8.onnx", options.get("calibration"))
