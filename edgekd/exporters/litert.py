"""``tflite`` / ``tflite-int8``: LiteRT models converted from PyTorch by ``litert-torch`` (extra ``litert``).

fp32 is converted as is. int8 is static PT2E quantization with litert-torch's quantizer (symmetric int8,
per-channel weights), observers calibrated on ``options['calibration']``, the model's input and logits int8 too,
as phones' int8 kernels (XNNPACK's, and NPUs') want them. Both take NCHW float32-shaped input, like the other
formats. They run in ai-edge-litert's interpreter with XNNPACK (edgekd.runtime.litert). In both, depthwise
convolutions wider than 5x5 are first rewritten, exactly, as narrow bands that XNNPACK runs several times faster
(edgekd.exporters.depthwise_bands).

litert-torch 0.10 (the first release that accepts torch 2.14) pins ``litert-converter`` 0.5, which pins
``xdsl`` 0.28 and so ``typing-extensions<4.13``: that is why edgekd pins pydantic 2.11, the last pydantic
that accepts it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.core.arch import ArchSpec
from edgekd.core.devices import NamedDevice
from edgekd.core.errors import DeviceError
from edgekd.exporters import calibration_images, quiet_converter_imports, register_format
from edgekd.exporters.depthwise_bands import for_xnnpack
from edgekd.runtime.litert import INSTALL_HINT, litert_version, open_tflite
from edgekd.runtime.ort import Runner


def _litert_torch():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's C++ logging, before it loads
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its step log; edgekd's export bar shows progress
    quiet_converter_imports()
    try:
        import litert_torch
    except ImportError as exc:
        raise DeviceError(f"litert-torch is not installed: {INSTALL_HINT}") from exc
    logging.getLogger("absl").setLevel(logging.ERROR)
    return litert_torch


def open_litert(path: Path, device: NamedDevice) -> Runner:
    """A LiteRT model on this host, with the device's threads."""
    return open_tflite(path, device.spec.threads)


def _convert(model: nn.Module, sample: torch.Tensor, path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    _litert_torch().convert(model, (sample,), **kwargs).export(str(path))
    return path


def _sample(spec: ArchSpec) -> torch.Tensor:
    return torch.zeros(1, *spec.input_shape)


@register_format("tflite", open_litert, litert_version)
def tflite_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model.tflite``: the fp32 model."""
    return _convert(for_xnnpack(model), _sample(spec), out_dir / "model.tflite")


@register_format("tflite-int8", open_litert, litert_version)
def tflite_int8_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model-int8.tflite``: static int8 (PT2E, per-channel symmetric weights), calibrated on training images."""
    images = calibration_images(options.get("calibration"), "tflite-int8")
    _litert_torch()  # a clear error before the imports below
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    sample = _sample(spec)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    with torch.no_grad():
        graph = prepare_pt2e(torch.export.export(for_xnnpack(model), (sample,)).module(), quantizer)
        for image in torch.from_numpy(images):  # the exported graph has batch 1
            graph(image[None])
        graph = convert_pt2e(graph, fold_quantize=False)
    graph.training = False  # its ops are the eval-mode model's; torch.export's module says training regardless
    return _convert(graph, sample, out_dir / "model-int8.tflite", quant_config=QuantConfig(pt2e_quantizer=quantizer))
