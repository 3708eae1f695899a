"""Analytic per-operator features of an ArchSpec (no torch): what latency predictors are fitted on.

Each block is decomposed into the operators ONNX Runtime runs (full, depthwise, pointwise and grouped pointwise
convolutions, channel shuffles, squeeze-excite, residual add), each with its MACs and output size. Computing
them takes microseconds, which is what lets a predictor answer thousands of times faster than a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.core.arch import ArchSpec, FamilyGraph, Wiring, sinks_of
from edgekd.core.errors import ConfigError

OP_TYPES = ("conv_k3", "conv_k5", "conv_k7", "dw_k3", "dw_k5", "dw_k7", "pw", "se", "add", "fc", "gpw", "shuffle")
"""Operator types, new ones appended (a predictor file names the types it was fitted on)."""
KERNELS = (3, 5, 7)


@dataclass(frozen=True)
class Op:
    type: str
    macs: float
    out_elems: int
    channels: int = 0
    """Output channels (0 where not a convolution)."""
    block: int = -1
    """Index of the block in ``spec.blocks`` it belongs to (-1: the stem, a family's stages, the head)."""


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def operators(spec: ArchSpec) -> list[Op]:
    """The operators of ``spec`` in order, with MACs and output elements (batch 1)."""
    ops: list[Op] = []
    size = _out(spec.resolution, spec.stem_stride)
    block = -1

    def conv(kind: str, cin: int, cout: int, k: int, out_size: int, groups: int = 1) -> None:
        if k > 1 and k not in KERNELS:
            raise ConfigError(f"no latency feature for a {k}x{k} convolution (kernels {KERNELS} and 1x1)")
        ops.append(Op(kind, cin // groups * cout * k * k * out_size * out_size, cout * out_size * out_size, cout,
                      block))

    def pointwise(cin: int, cout: int, out_size: int, groups: int = 1) -> None:
        conv("pw" if groups == 1 else "gpw", cin, cout, 1, out_size, groups)

    conv("conv_k3", spec.in_channels, spec.stem_channels, 3, size)
    cin = spec.stem_channels
    if spec.graph is not None:
        cin, size = _family_operators(spec.graph, cin, size, conv, pointwise, ops)
    for block, b in enumerate(spec.blocks):
        out = _out(size, b.stride)
        se_ch = cin
        if b.op == "skip":
            if b.stride != 1 or cin != b.out_channels:
                pointwise(cin, b.out_channels, out)
        elif b.op == "conv":
            if b.kernel == 1:
                pointwise(cin, b.out_channels, out)
            else:
                conv(f"conv_k{b.kernel}", cin, b.out_channels, b.kernel, out)
            se_ch = b.out_channels
        elif b.op == "dsconv":
            conv(f"dw_k{b.kernel}", cin, cin, b.kernel, out, groups=cin)
        else:
            se_ch = cin * b.expand
            if b.expand != 1 or b.op == "fbnet":
                pointwise(cin, se_ch, size, b.groups)
            if b.shuffle:
                ops.append(Op("shuffle", 0, se_ch * size * size, block=block))
            conv(f"dw_k{b.kernel}", se_ch, se_ch, b.kernel, out, groups=se_ch)
        if b.se_ratio > 0:
            squeeze = max(1, int(cin * b.se_ratio))
            ops.append(Op("se", 2 * se_ch * squeeze + 2 * se_ch * out * out, se_ch * out * out, block=block))
        if b.op in ("dsconv", "mbconv", "fbnet"):
            pointwise(se_ch, b.out_channels, out, b.groups)
        if b.op != "skip" and b.residual and b.stride == 1 and cin == b.out_channels:
            ops.append(Op("add", b.out_channels * out * out, b.out_channels * out * out, block=block))
        cin, size = b.out_channels, out
    block = -1
    pointwise(cin, spec.head_channels, size)
    ops.append(Op("fc", spec.head_channels * spec.num_classes, spec.num_classes))
    return ops


def _family_operators(g: FamilyGraph, cin: int, size: int, conv, pointwise, ops: list[Op]) -> tuple[int, int]:
    """A family student's stages: the strided 1x1 entry, then every unit's depthwise and pointwise conv, and the
    adds that sum a node's inputs and average a graph's sinks; returns the channels and size after them."""

    def adds(wiring: Wiring, elems: int) -> None:
        n = sum(len(preds) - 1 for preds in wiring) + len(sinks_of(wiring)) - 1
        ops.extend(Op("add", elems, elems) for _ in range(n))

    for stage, top in enumerate(g.top):
        c, size = g.channels[stage], _out(size, 2 if g.downsample[stage] else 1)
        pointwise(cin, c, size)
        for _ in range(len(top) * len(g.mid)):
            for _ in g.bottom:
                conv("dw_k3", c, c, 3, size, groups=c)
                pointwise(c, c, size)
            adds(g.bottom, c * size * size)
        for _ in top:
            adds(g.mid, c * size * size)
        adds(top, c * size * size)
        cin = c
    return cin, size


FEATURE_NAMES = (*(f"n_{t}" for t in OP_TYPES), *(f"mmacs_{t}" for t in OP_TYPES), "m_elems")


def features(spec: ArchSpec, op_types: tuple[str, ...] = OP_TYPES) -> list[float]:
    """Per operator type of ``op_types``: how many, and their MACs in millions; plus output elements in millions."""
    counts = dict.fromkeys(op_types, 0.0)
    macs = dict.fromkeys(op_types, 0.0)
    elems = 0
    for op in operators(spec):
        if op.type in counts:
            counts[op.type] += 1
            macs[op.type] += op.macs / 1e6
        elems += op.out_elems
    return [*counts.values(), *macs.values(), elems / 1e6]


PADDING = (8, 16)
"""Channel multiples vectorised kernels compute in (an int8 GEMM's, a SIMD unit's: AVX2 holds 8 floats, AVX-512
16), whose padded work the predictors' terms include."""


def padded_op_mmacs(op: Op, multiple: int) -> float:
    """``op``'s MACs in millions with its output channels rounded up to ``multiple``, as vectorised kernels
    compute them: the work grows in steps of channels."""
    return op.macs / 1e6 * (-(-op.channels // multiple) * multiple / op.channels if op.channels else 1.0)


def padded_mmacs(spec: ArchSpec, multiple: int, op_types: tuple[str, ...] = OP_TYPES) -> list[float]:
    """Per operator type of ``op_types``: MACs in millions with the output channels rounded up to ``multiple``."""
    macs = dict.fromkeys(op_types, 0.0)
    for op in operators(spec):
        if op.type in macs:
            macs[op.type] += padded_op_mmacs(op, multiple)
    return list(macs.values())


VECTOR_CHANNELS = 16
"""The channel multiple on which vectorised depthwise kernels run their fast path (measured for ONNX Runtime's
int8 kernels on AVX2; 16 floats fill an AVX-512 register)."""
HALF_VECTOR_CHANNELS = 8
"""The channel multiple below which those kernels' slow pass costs more again (half a vector: 8 floats fill an
AVX2 register)."""


def unaligned_work(spec: ArchSpec, op_types: tuple[str, ...] = OP_TYPES,
                   multiple: int = VECTOR_CHANNELS) -> list[float]:
    """Per depthwise type of ``op_types``, over its operators whose channels are not a multiple of ``multiple``:
    their MACs in millions, and their work per channel (MACs / channels: pixels x kernel area) in thousands.

    Kernels take whole vectors of channels on a fast path and the rest on a slow one, whose cost follows the
    pixels and the kernel more than the channels left over: on this project's host, ONNX Runtime's int8 7x7
    depthwise at 16x16 took 68 us with 12 channels and 30 us with 48 (per-node profile); and about 20 us plus
    1.1 us per channel with a multiple of 8 channels (8, 24, 72), about 55 us plus 0.9 us per channel with
    others (4, 12, 36)."""
    work = {t: [0.0, 0.0] for t in op_types if t.startswith("dw_")}
    for op in operators(spec):
        if op.type in work and op.channels % multiple:
            work[op.type][0] += op.macs / 1e6
            work[op.type][1] += op.macs / op.channels / 1e3
    return [v for pair in work.values() for v in pair]


SIDE_BINS = (16, 8, 4, 0)
"""Output sides (at least) that ``sized_mmacs`` tells apart."""


def sized_mmacs(spec: ArchSpec, op_type: str = "dw_k7") -> list[float]:
    """MACs in millions of ``op_type``'s operators per output side (at least 16, 8, 4, smaller): where a kernel's
    cost per MAC depends on the feature map's size (LiteRT's 7x7 depthwise kernels, measured up to 4x their ONNX
    Runtime share)."""
    macs = dict.fromkeys(SIDE_BINS, 0.0)
    for op in operators(spec):
        if op.type == op_type:
            side = round((op.out_elems / op.channels) ** 0.5)
            macs[next(b for b in SIDE_BINS if side >= b)] += op.macs / 1e6
    return list(macs.values())


def total_mmacs(spec: ArchSpec) -> float:
    return sum(op.macs for op in operators(spec)) / 1e6


def mparams(spec: ArchSpec) -> float:
    """Parameters in millions (convolution and linear weights; BN folds into them on export)."""
    total = 0.0
    for op in operators(spec):
        if op.type == "fc":
            total += op.macs
        elif op.type not in ("se", "add", "shuffle"):
            total += op.macs / op.out_elems * op.channels  # a convolution's weights: MACs per output pixel
    return total / 1e6 + _se_params(spec)


def _se_params(spec: ArchSpec) -> float:
    """Squeeze-excite weights in millions (its MACs count its pooling and scaling too, so they are kept apart)."""
    total, cin = 0, spec.stem_channels
    for b in spec.blocks:
        if b.se_ratio > 0:
            hidden = b.out_channels if b.op == "conv" else cin if b.op == "dsconv" else cin * b.expand
            total += 2 * hidden * max(1, int(cin * b.se_ratio))
        cin = b.out_channels
    return total / 1e6


def block_inputs(spec: ArchSpec) -> list[tuple[int, int]]:
    """(input channels, input side) of each block of ``spec``."""
    cin, size = spec.stem_channels, _out(spec.resolution, spec.stem_stride)
    if spec.graph is not None:
        for down in spec.graph.downsample:
            size = _out(size, 2 if down else 1)
        cin = spec.graph.channels[-1]
    out = []
    for b in spec.blocks:
        out.append((cin, size))
        cin, size = b.out_channels, _out(size, b.stride)
    return out
