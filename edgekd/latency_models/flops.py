"""Multiply-accumulates and parameters counted by thop."""

from __future__ import annotations

import contextlib
import copy
import functools
import io

import torch
from torch import nn

from edgekd.core.arch import ArchSpec, build


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[float, float]:
    """(millions of multiply-accumulates, millions of parameters) for one input of ``input_shape``.

    thop counts MACs, which the mobile NAS papers (MnasNet, AKD) report as "FLOPs". It adds buffers to the
    modules it profiles, so it works on a deep copy.
    """
    from thop import profile

    probe = copy.deepcopy(model).eval().cpu()
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        macs, params = profile(probe, inputs=(torch.zeros(1, *input_shape),), verbose=False)
    return float(macs) / 1e6, float(params) / 1e6


@functools.lru_cache(maxsize=4096)
def spec_macs_params(spec: ArchSpec) -> tuple[float, float]:
    """``count_macs_params`` of the network ``spec`` describes, profiled once per architecture: a search asks
    for the same candidates again, and thop's forward pass costs more than a tabular evaluation."""
    return count_macs_params(build(spec), spec.input_shape)
