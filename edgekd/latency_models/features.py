"""Analytic per-operator features of an ArchSpec (no torch): what latency predictors are fitted on.

Each block is decomposed into the operators ONNX Runtime runs (full, depthwise and pointwise convolutions,
squeeze-excite, residual add), each with its MACs and output size. Computing them takes microseconds, which is
what lets a predictor answer thousands of times faster than a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.core.arch import ArchSpec

OP_TYPES = ("conv_k3", "conv_k5", "conv_k7", "dw_k3", "dw_k5", "dw_k7", "pw", "se", "add", "fc")


@dataclass(frozen=True)
class Op:
    type: str
    macs: float
    out_elems: int
    channels: int = 0
    """Output channels (0 where not a convolution)."""


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def operators(spec: ArchSpec) -> list[Op]:
    """The operators of ``spec`` in order, with MACs and output elements (batch 1)."""
    ops: list[Op] = []
    size = _out(spec.resolution, spec.stem_stride)

    def conv(kind: str, cin: int, cout: int, k: int, out_size: int, groups: int = 1) -> None:
        ops.append(Op(kind, cin // groups * cout * k * k * out_size * out_size, cout * out_size * out_size, cout))

    conv("conv_k3", spec.in_channels, spec.stem_channels, 3, size)
    cin = spec.stem_channels
    for b in spec.blocks:
        out = _out(size, b.stride)
        if b.op == "conv":
            conv(f"conv_k{b.kernel}", cin, b.out_channels, b.kernel, out)
            se_ch = b.out_channels
        elif b.op == "dsconv":
            conv(f"dw_k{b.kernel}", cin, cin, b.kernel, out, groups=cin)
            se_ch = cin
        else:
            hidden = cin * b.expand
            if b.expand != 1:
                conv("pw", cin, hidden, 1, size)
            conv(f"dw_k{b.kernel}", hidden, hidden, b.kernel, out, groups=hidden)
            se_ch = hidden
        if b.se_ratio > 0:
            squeeze = max(1, int(cin * b.se_ratio))
            ops.append(Op("se", 2 * se_ch * squeeze + 2 * se_ch * out * out, se_ch * out * out))
        if b.op != "conv":
            conv("pw", se_ch, b.out_channels, 1, out)
        if b.residual and b.stride == 1 and cin == b.out_channels:
            ops.append(Op("add", b.out_channels * out * out, b.out_channels * out * out))
        cin, size = b.out_channels, out
    conv("pw", cin, spec.head_channels, 1, size)
    ops.append(Op("fc", spec.head_channels * spec.num_classes, spec.num_classes))
    return ops


FEATURE_NAMES = (*(f"n_{t}" for t in OP_TYPES), *(f"mmacs_{t}" for t in OP_TYPES), "m_elems")


def features(spec: ArchSpec) -> list[float]:
    """Per operator type: how many, and their MACs in millions; plus output elements in millions."""
    counts = dict.fromkeys(OP_TYPES, 0.0)
    macs = dict.fromkeys(OP_TYPES, 0.0)
    elems = 0
    for op in operators(spec):
        counts[op.type] += 1
        macs[op.type] += op.macs / 1e6
        elems += op.out_elems
    return [*counts.values(), *macs.values(), elems / 1e6]


def total_mmacs(spec: ArchSpec) -> float:
    return sum(op.macs for op in operators(spec)) / 1e6


def mparams(spec: ArchSpec) -> float:
    """Parameters in millions (convolution and linear weights; BN folds into them on export)."""
    total, cin = spec.in_channels * spec.stem_channels * 9, spec.stem_channels
    for b in spec.blocks:
        if b.op == "conv":
            total += cin * b.out_channels * b.kernel**2
            se_ch = b.out_channels
        elif b.op == "dsconv":
            total += cin * b.kernel**2 + cin * b.out_channels
            se_ch = cin
        else:
            hidden = cin * b.expand
            total += (cin * hidden if b.expand != 1 else 0) + hidden * b.kernel**2 + hidden * b.out_channels
            se_ch = hidden
        if b.se_ratio > 0:
            total += 2 * se_ch * max(1, int(cin * b.se_ratio))
        cin = b.out_channels
    return (total + cin * spec.head_channels + spec.head_channels * spec.num_classes) / 1e6
