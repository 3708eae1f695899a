"""``executorch`` / ``executorch-int8`` / ``executorch-int8-pointwise``: ExecuTorch programs (``.pte``) lowered
to the XNNPACK delegate.

The model is captured by ``torch.export`` at batch 1, as a phone runs it (ExecuTorch 1.5 plans a dynamic
batch axis's memory for a few images only, whatever its bound), with depthwise convolutions wider than 5x5 split
into column bands (edgekd.exporters.depthwise_bands: XNNPACK runs a 7x7 depthwise convolution as a slow IGEMM,
its bands with its depthwise kernels), and lowered with ExecuTorch's XNNPACK partitioner. int8 is static PT2E
quantization with ExecuTorch's XNNPACK quantizer (symmetric, per-channel weights) calibrated on
``options['calibration']``, of every operator or of all but the convolutions larger than 1x1 and their bands'
sums. All run in ExecuTorch's Python runtime (edgekd.runtime.executorch); on a phone, ExecuTorch's runner runs the
same file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.core.arch import ArchSpec
from edgekd.core.devices import NamedDevice
from edgekd.core.errors import DeviceError
from edgekd.exporters import calibration_images, quiet_converter_imports, register_format
from edgekd.exporters.depthwise_bands import for_xnnpack
from edgekd.runtime.executorch import INSTALL_HINT, executorch_version, open_pte
from edgekd.runtime.ort import Runner

BAND_PARTS = (torch.ops.aten.slice.Tensor, torch.ops.aten.add.Tensor)
"""What joins a convolution's bands into its output (depthwise_bands.BandedDepthwise): slices and sums."""


def open_executorch(path: Path, device: NamedDevice) -> Runner:
    """An ExecuTorch program on this host, with the device's threads."""
    return open_pte(path, device.spec.threads)


def _capture(model: nn.Module, spec: ArchSpec) -> torch.export.ExportedProgram:
    return torch.export.export(model, (torch.zeros(1, *spec.input_shape),))


def to_xnnpack(program: torch.export.ExportedProgram) -> Any:
    """``program`` lowered to the XNNPACK delegate by ExecuTorch's partitioner (an EdgeProgramManager, not yet
    serialised)."""
    quiet_converter_imports()
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as exc:
        raise DeviceError(f"ExecuTorch is not installed: {INSTALL_HINT}") from exc
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def _lower(program: torch.export.ExportedProgram, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_xnnpack(program).to_executorch().buffer)
    return path


@register_format("executorch", open_executorch, executorch_version)
def executorch_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model.pte``: the fp32 model, XNNPACK-delegated."""
    return _lower(_capture(for_xnnpack(model), spec), out_dir / "model.pte")


def quantized_program(model: nn.Module, spec: ArchSpec, options: dict[str, Any], fmt: str,
                      quantize: Callable[[torch.fx.Node], bool] | None = None) -> torch.export.ExportedProgram:
    """``model`` statically quantized for XNNPACK (per-channel symmetric weights), calibrated on
    ``options['calibration']``; with ``quantize``, only the graph nodes it accepts are quantized."""
    images = torch.from_numpy(calibration_images(options.get("calibration"), fmt))
    quiet_converter_imports()
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as exc:
        raise DeviceError(f"ExecuTorch is not installed: {INSTALL_HINT}") from exc
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    if quantize is not None:
        quantizer.set_filter_function(quantize)
    with torch.no_grad():
        graph = prepare_pt2e(_capture(for_xnnpack(model), spec).module(), quantizer)
        for image in images:
            graph(image[None])
        quantized = convert_pt2e(graph)
    return _capture(quantized, spec)


def is_spatial_work(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a convolution with a kernel larger than 1x1 (depthwise, or a full stem) or part of one
    computed in bands: a slice of such a convolution's output, the sum of its bands."""
    if node.target is torch.ops.aten.conv2d.default:
        return max(node.args[1].meta["val"].shape[2:]) > 1
    return node.target in BAND_PARTS and any(is_spatial_work(n) for n in node.all_input_nodes)


def int8_in_pointwise(node: torch.fx.Node) -> bool:
    """Whether ``executorch-int8-pointwise`` quantizes ``node``: everything but the spatial work."""
    return not is_spatial_work(node)


@register_format("executorch-int8", open_executorch, executorch_version)
def executorch_int8_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path, options: dict[str, Any]) -> Path:
    """``model-int8.pte``: static int8 for XNNPACK (per-channel symmetric weights), calibrated on training images."""
    return _lower(quantized_program(model, spec, options, "executorch-int8"), out_dir / "model-int8.pte")


@register_format("executorch-int8-pointwise", open_executorch, executorch_version)
def executorch_int8_pointwise_exporter(model: nn.Module, spec: ArchSpec, out_dir: Path,
                                       options: dict[str, Any]) -> Path:
    """``model-int8-pointwise.pte``: as ``executorch-int8`` but with every convolution larger than 1x1 (and the
    sum of its bands) left in fp32 (on x86 CPUs, XNNPACK's int8 depthwise kernels are slower than its fp32 ones,
    while its int8 pointwise and fully-connected ones are faster)."""
    program = quantized_program(model, spec, options, "executorch-int8-pointwise", int8_in_pointwise)
    return _lower(program, out_dir / "model-int8-pointwise.pte")
