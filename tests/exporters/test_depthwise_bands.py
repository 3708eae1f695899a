"""Wide depthwise convolutions as bands of narrow ones: the same function, and narrow kernels in LiteRT."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.exporters.depthwise_bands import BandedDepthwise, is_wide_depthwise, split_wide_depthwise


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


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None,
                    reason="litert-torch is not installed (extra litert)")
def test_the_tflite_exports_give_litert_only_narrow_depthwise_kernels(tmp_path):
    """fp32 and int8, on a residual block whose wide depthwise convolution comes first: its input also feeds the
    add (litert-torch could not convert quantized bands that padded or sliced such an input themselves)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekd.core.arch import ArchSpec, BlockSpec, build
    from edgekd.exporters import get_format
    from edgekd.runtime.litert import open_tflite

    spec = ArchSpec(resolution=12, in_channels=3, num_classes=10, stem_channels=16, head_channels=32,
                    blocks=(BlockSpec(op="dsconv", kernel=7, out_channels=16, residual=True),
                            BlockSpec(op="mbconv", kernel=7, expand=2, out_channels=24, stride=2)))
    torch.manual_seed(0)
    model = build(spec).eval()
    x = np.random.default_rng(0).standard_normal((32, 3, 12, 12), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
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
