"""Wide depthwise convolutions rewritten as column bands of narrow ones, exactly, for XNNPACK (LiteRT, ExecuTorch).

XNNPACK runs depthwise kernels of up to 25 taps (5x5) fast and wider ones far slower (ExecuTorch's runs a 7x7
one as an IGEMM, and the quick-start student's program took half the time in bands): in LiteRT's delegate, on this
project's x86 host, pointwise, depthwise and pointwise convolutions (48 channels, 16x16) took 0.27 ms in fp32
with a 7x7 depthwise kernel and 0.018 ms with a 5x5 one; the 7x7 depthwise convolution alone took 0.264 ms whole
and 0.049 ms in bands. A k x k depthwise convolution is the sum of depthwise convolutions over bands of its
kernel's columns (k x 3, k x 3 and k x 1 for k = 7 at stride 1), each padded as the whole kernel is and its
output shifted by the band's first column; the sum is the same convolution up to the order of the additions.

What the XNNPACK exporters convert (``for_xnnpack``) also has its BatchNorms folded into the convolutions before
them: the same function, and no BatchNorm left for torchao's ``convert_pt2e`` to look for conv-BN patterns (that
search took about 18 s of every int8 export, even of a tiny model, wherever one BatchNorm was left, as after bands).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

FAST_TAPS = 25
"""The most taps of a depthwise kernel that LiteRT's XNNPACK delegate ran fast here (5x5)."""


def is_wide_depthwise(conv: nn.Module, max_taps: int = FAST_TAPS) -> bool:
    """Whether ``conv`` is a depthwise convolution with more than ``max_taps`` taps and the same padding
    ``BandedDepthwise`` rewrites (square kernel, zero padding k // 2, no dilation)."""
    if not isinstance(conv, nn.Conv2d) or conv.groups != conv.in_channels or conv.groups != conv.out_channels:
        return False
    k = conv.kernel_size[0]
    return (conv.kernel_size == (k, k) and k * k > max_taps and conv.padding == (k // 2, k // 2)
            and conv.dilation == (1, 1) and conv.padding_mode == "zeros")


class BandedDepthwise(nn.Module):
    """A wide depthwise ``conv`` computed as depthwise convolutions over bands of its kernel's columns, each band
    at most ``max_taps`` taps and as wide as a multiple of the stride."""

    def __init__(self, conv: nn.Conv2d, max_taps: int = FAST_TAPS) -> None:
        super().__init__()
        self.kernel, self.groups = conv.kernel_size[0], conv.groups
        self.padding, self.stride = conv.padding, conv.stride
        width = max(self.stride[1], max_taps // self.kernel // self.stride[1] * self.stride[1])
        self.bands = [(lo, min(lo + width, self.kernel)) for lo in range(0, self.kernel, width)]
        # each band's weights a parameter of its own, not a slice of the whole kernel taken in forward (nor the whole
        # kept beside them): exported graphs then hold just the bands as constants, which ExecuTorch's XNNPACK
        # partitioner requires of an fp32 convolution
        self.band_weights = nn.ParameterList(nn.Parameter(conv.weight.detach()[:, :, :, lo:hi].clone(),
                                                          requires_grad=False) for lo, hi in self.bands)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad, stride = self.padding, self.stride
        out_w = (x.shape[3] + 2 * pad[1] - self.kernel) // stride[1] + 1
        out = None
        for (lo, _), weight in zip(self.bands, self.band_weights, strict=True):
            # each band padded as the whole kernel is, its outputs then shifted by its first column: no padding or
            # slicing of the input, which litert-torch cannot convert once quantized where the input also feeds
            # a residual add; the bias added by the first band
            wide = nn.functional.conv2d(x, weight, self.bias if out is None else None, stride, pad, 1, self.groups)
            band = wide[:, :, :, lo // stride[1]: lo // stride[1] + out_w]
            out = band if out is None else out + band
        return out


def split_wide_depthwise(model: nn.Module, max_taps: int = FAST_TAPS) -> nn.Module:
    """A copy of ``model`` with every depthwise convolution wider than ``max_taps`` taps (``is_wide_depthwise``)
    replaced by its ``BandedDepthwise``; the same function."""
    if is_wide_depthwise(model, max_taps):
        return BandedDepthwise(model, max_taps)  # its weights copied
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if is_wide_depthwise(child, max_taps):
                setattr(parent, name, BandedDepthwise(child, max_taps))
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every BatchNorm that follows a convolution in an ``nn.Sequential``
    folded into that convolution's weights and bias and replaced by an identity; the same function."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for conv_name, bn_name in itertools.pairwise(names):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                parent._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
                parent._modules[bn_name] = nn.Identity()
    return model


def for_xnnpack(model: nn.Module) -> nn.Module:
    """What the XNNPACK exporters (LiteRT, ExecuTorch) convert: a copy of ``model`` on the CPU for inference, its
    BatchNorms folded (``fold_batchnorm``) and its wide depthwise convolutions in bands."""
    return split_wide_depthwise(fold_batchnorm(model)).cpu().eval()
