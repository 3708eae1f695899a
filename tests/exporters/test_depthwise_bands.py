"""Wide depthwise convolutions as bands of narrow ones: the same function, narrow kernels in LiteRT, and
every band in ExecuTorch's XNNPACK delegate."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.exporters.depthwise_bands import (
    BandedDepthwise,
    fold_batchnorm,
    for_xnnpack,
    is_wide_depthwise,
    split_wide_depthwise,
)


@pytest.mark.parametrize("kernel, stride, bias, side", [(7, 1, False, 16), (7, 2, True, 15), (9, 2, False, 8),
                                                        (7, 1, True, 4)])
def test_bands_compute_the_same_depthwise_convolution(kernel, stride, bias, side):
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 12, kernel, stride, kernel // 2, groups=12, bias=bias).eval()
    x = torch.randn(2, 12, side, side)
    banded = BandedDepthwise(conv)
    assert all(kernel * (hi - lo) <= 25 and lo % stride == 0 for lo, hi in banded.bands)
    assert banded.bands[-1][1] == kernel
    with torch.no_grad():
        assert torch.allclose(banded(x), conv(x), atol=1e-5)


def test_only_wide_depthwise_convolutions_are_rewritten():
    narrow = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    full = nn.Conv2d(8, 8, 7, padding=3)
    dilated = nn.Conv2d(8, 8, 7, padding=6, dilation=2, groups=8)
    wide = nn.Conv2d(8, 8, 7, padding=3, groups=8)
    assert [is_wide_depthwise(c) for c in (narrow, full, dilated, wide)] == [False, False, False, True]
    model = nn.Sequential(narrow, nn.ReLU(), nn.Sequential(wide, nn.BatchNorm2d(8)), full).eval()
    split = split_wide_depthwise(model)
    assert isinstance(split[2][0], BandedDepthwise) and split[0] is not narrow and isinstance(model[2][0], nn.Conv2d)
    x = torch.randn(1, 8, 10, 10)
    with torch.no_grad():
        assert torch.allclose(split(x), model(x), atol=1e-5)
    assert isinstance(split_wide_depthwise(wide), BandedDepthwise)


def test_batchnorms_after_convolutions_are_folded_into_them_and_no_other(trained_like):
    model = trained_like(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)),
        nn.BatchNorm2d(8)))  # after a Sequential, not a convolution: kept
    folded = fold_batchnorm(model)
    assert [type(m).__name__ for m in folded.modules() if isinstance(m, nn.BatchNorm2d)] == ["BatchNorm2d"]
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3][3], nn.Identity) and folded[0].bias is not None
    assert isinstance(model[1], nn.BatchNorm2d)  # a copy: the model itself keeps its BatchNorms
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


@pytest.fixture
def wide_residual_net():
    """A network, images and its logits: a residual block whose 7x7 depthwise convolution comes first (its input
    also feeds the add), then one at stride 2."""
    from edgekd.core.arch import ArchSpec, BlockSpec, build

    spec = ArchSpec(resolution=12, in_channels=3, num_classes=10, stem_channels=16, head_channels=32,
                    blocks=(BlockSpec(op="dsconv", kernel=7, out_channels=16, residual=True),
                            BlockSpec(op="mbconv", kernel=7, expand=2, out_channels=24, stride=2)))
    torch.manual_seed(0)
    model = build(spec).eval()
    x = np.random.default_rng(0).standard_normal((16, 3, 12, 12), dtype=np.float32)
    with torch.no_grad():
        return spec, model, x, model(torch.from_numpy(x)).numpy()


def test_what_xnnpack_converts_of_a_built_network_has_no_batchnorm_left(wide_residual_net, trained_like):
    """Bands included: the BatchNorm after a banded convolution is folded into its bands before the split."""
    _, model, x, _ = wide_residual_net
    converted = for_xnnpack(trained_like(model))
    assert not [m for m in converted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert sum(isinstance(m, BandedDepthwise) for m in converted.modules()) == 2
    with torch.no_grad():
        assert torch.allclose(converted(torch.from_numpy(x)), model(torch.from_numpy(x)), atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None,
                    reason="litert-torch is not installed (extra litert)")
def test_the_tflite_exports_give_litert_only_narrow_depthwise_kernels(tmp_path, wide_residual_net):
    """fp32 and int8, on a residual block whose wide depthwise convolution comes first: its input also feeds the
    add (litert-torch could not convert quantized bands that padded or sliced such an input themselves)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekd.exporters import get_format
    from edgekd.runtime.litert import open_tflite

    spec, model, x, ref = wide_residual_net
    for fmt in ("tflite", "tflite-int8"):
        path = get_format(fmt).export(model, spec, tmp_path / fmt, {"calibration": x})
        interpreter = Interpreter(model_path=str(path))
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        kernels = [tuple(tensors[op["inputs"][1]]["shape"][1:3]) for op in interpreter._get_ops_details()
                   if op["op_name"] == "DEPTHWISE_CONV_2D"]
        # stride 1: bands 3, 3 and 1 wide; stride 2: bands of an even width
        assert sorted(kernels) == [(7, 1), (7, 1), (7, 2), (7, 2), (7, 2), (7, 3), (7, 3)], fmt
        logits = np.concatenate([open_tflite(path, 1)(image[None]) for image in x])
        if fmt == "tflite":
            assert np.abs(logits - ref).max() < 1e-4
        else:  # int8 of an untrained network: logits that follow PyTorch's
            assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.95


@pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                    reason="ExecuTorch is not installed (extra executorch)")
def test_the_executorch_exports_delegate_every_band_to_xnnpack(tmp_path, wide_residual_net):
    """fp32 and int8 but pointwise: XNNPACK's partitioner takes an fp32 convolution only with constant weights, so
    a band's weights are not sliced at run time; nothing but layout copies is left outside the delegate."""
    from executorch.devtools.backend_debug import get_delegation_info

    from edgekd.exporters import executorch as et
    from edgekd.runtime.executorch import open_pte

    spec, model, x, ref = wide_residual_net
    programs = {"executorch": et._capture(for_xnnpack(model), spec),
                "executorch-int8-pointwise": et.quantized_program(
                    model, spec, {"calibration": x}, "executorch-int8-pointwise", et.int8_in_pointwise)}
    for fmt, program in programs.items():
        bands = [n for n in program.graph.nodes if n.target is torch.ops.aten.conv2d.default
                 and n.args[1].meta["val"].shape[2:] in ((7, 1), (7, 2), (7, 3))]
        assert len(bands) == 7, fmt
        sums = [n for n in program.graph.nodes if n.target is torch.ops.aten.add.Tensor
                and any(a.target is torch.ops.aten.slice.Tensor for a in n.all_input_nodes)]
        # the bands' sums, 3 bands at stride 1 and 4 at stride 2, in fp32 (int8-pointwise: with the bands)
        assert len(sums) == 5 and not any("dequantize" in str(a.target) for n in sums for a in n.all_input_nodes)
        lowered = et.to_xnnpack(program)  # as the exporters lower it
        left = get_delegation_info(lowered.exported_program().graph_module).get_operator_delegation_dataframe()
        left = left[(left.occurrences_in_non_delegated_graphs > 0) & (left.op_type != "Total")]
        assert set(left.op_type) <= {"dim_order_ops__to_dim_order_copy_default", "getitem"}, (fmt, left)
        path = tmp_path / f"{fmt}.pte"
        path.write_bytes(lowered.to_executorch().buffer)
        logits = np.concatenate([open_pte(path, 1)(image[None]) for image in x])
        if fmt == "executorch":
            assert np.abs(logits - ref).max() < 1e-4
        else:  # int8 of an untrained network: logits that follow PyTorch's
            assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.95, fmt
