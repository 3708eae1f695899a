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
    assert all(kernel * (hi - lo) <= 25 for lo, hi in banded.bands) and banded.bands[-1][1] == kernel
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
def test_the_tflite_export_gives_litert_only_narrow_depthwise_kernels(tmp_path):
    from types import SimpleNamespace

    from ai_edge_litert.interpreter import Interpreter

    from edgekd.exporters import get_format
    from edgekd.runtime.litert import open_tflite

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.Conv2d(16, 16, 7, 2, 3, groups=16, bias=False),
                          nn.BatchNorm2d(16), nn.ReLU6()).eval()
    path = get_format("tflite").export(model, SimpleNamespace(input_shape=(3, 12, 12)), tmp_path, {})
    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    kernels = [tuple(tensors[op["inputs"][1]]["shape"][1:3]) for op in interpreter._get_ops_details()
               if op["op_name"] == "DEPTHWISE_CONV_2D"]
    assert sorted(kernels) == [(7, 1), (7, 3), (7, 3)]
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 12), dtype=np.float32)
    with torch.no_grad():
        assert np.abs(open_tflite(path, 1)(x) - model(torch.from_numpy(x)).numpy()).max() < 1e-4
