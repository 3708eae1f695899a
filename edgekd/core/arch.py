"""ArchSpec: the single serializable description of a student (or teacher) network, and ``build``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor, nn

from edgekd.core.errors import ConfigError

OPS = ("conv", "dsconv", "mbconv", "fbnet", "skip")
"""Block operators: a regular conv, a depthwise-separable conv (MobileNetV1), an inverted bottleneck (MBConv, no
expansion conv at expand 1), FBNet's block (its 1x1 expansion conv kept at expand 1, pointwise convs in
``groups`` groups with a channel shuffle after the expansion) and FBNet's skip (identity, or a 1x1 conv-BN-ReLU
projection where the stride or the channels change)."""
OPTIONAL_FIELDS = {"groups": 1, "shuffle": False}
"""BlockSpec fields left out of its dict (and so of ArchSpec ids) at these defaults: ids from before they existed
stay valid."""


@dataclass(frozen=True)
class BlockSpec:
    """One layer: ``op`` with ``kernel``, ``expand`` (MBConv and FBNet blocks), SE ratio, output channels, stride.

    ``residual`` adds an identity skip where shapes allow it (stride 1 and unchanged channels);
    ``stage`` is the search-space stage the layer belongs to; ``groups`` splits an FBNet block's pointwise
    convolutions into groups, and ``shuffle`` interleaves the channels of those groups after its expansion.
    """

    op: str
    kernel: int
    out_channels: int
    stride: int = 1
    expand: int = 1
    se_ratio: float = 0.0
    residual: bool = False
    stage: int = 0
    groups: int = 1
    shuffle: bool = False

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ConfigError(f"unknown block op {self.op!r}; expected one of {OPS}")
        if self.kernel % 2 != 1 or self.kernel < 1:
            raise ConfigError(f"kernel must be odd and positive, got kernel={self.kernel}")
        if self.stride not in (1, 2):
            raise ConfigError(f"stride must be 1 or 2, got stride={self.stride}")
        if self.out_channels < 1 or self.expand < 1:
            raise ConfigError(f"channels and expand must be >= 1, got {self.out_channels=}, {self.expand=}")
        if not 0.0 <= self.se_ratio < 1.0:
            raise ConfigError(f"se_ratio must lie in [0, 1), got se_ratio={self.se_ratio}")
        if self.groups < 1 or (self.groups > 1 and self.op != "fbnet") or (self.shuffle and self.groups == 1):
            raise ConfigError(f"groups > 1 (and shuffle, which needs them) belong to fbnet blocks, got op={self.op!r}, "
                              f"groups={self.groups}, shuffle={self.shuffle}")
        if self.op == "skip" and self.kernel != 1:
            raise ConfigError(f"a skip is an identity or a 1x1 projection: kernel must be 1, got {self.kernel}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form; the optional fields only where they differ from their defaults."""
        return {k: v for k, v in asdict(self).items() if OPTIONAL_FIELDS.get(k, ...) != v}


Wiring = tuple[tuple[int, ...], ...]
"""A DAG as each node's predecessors (-1: the graph's input); nodes are in topological order."""


@dataclass(frozen=True)
class FamilyGraph:
    """A student of AutoKD's families (NAGO's hierarchical graphs): per stage, ``top`` wires its cells; ``mid``
    wires the modules of every cell and ``bottom`` the conv units of every module. A node takes the sum of its
    predecessors' outputs (-1: the graph's input); a graph's output is the mean of its nodes without successors.
    A stage starts with a 1x1 conv-BN-ReLU to its ``channels`` (stride 2 where it ``downsample``-s)."""

    top: tuple[Wiring, ...]
    mid: Wiring
    bottom: Wiring
    channels: tuple[int, ...]
    downsample: tuple[bool, ...]
    family: tuple[tuple[str, Any], ...] = ()
    """The generator's hyper-parameters this student was drawn with (the family), as (decision, value) pairs."""
    seed: int = 0
    """The draw from the family."""

    def __post_init__(self) -> None:
        for wiring in (*self.top, self.mid, self.bottom):
            if not wiring or any(p >= i or p < -1 for i, preds in enumerate(wiring) for p in preds) or any(
                    not preds for preds in wiring):
                raise ConfigError("a family graph's wiring must be a non-empty DAG in topological order, every "
                                  "node with an input")
        if not len(self.top) == len(self.channels) == len(self.downsample):
            raise ConfigError("every stage of a family graph needs its cells, channels and downsampling flag")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FamilyGraph:
        def wiring(w: list) -> Wiring:
            return tuple(tuple(preds) for preds in w)

        return cls(top=tuple(wiring(w) for w in d["top"]), mid=wiring(d["mid"]), bottom=wiring(d["bottom"]),
                   channels=tuple(d["channels"]), downsample=tuple(d["downsample"]),
                   family=tuple((k, v) for k, v in d.get("family", ())), seed=d.get("seed", 0))


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: input, stem, blocks (or a family ``graph``), head and classifier. Hashable, JSON
    round-trippable."""

    resolution: int
    in_channels: int
    num_classes: int
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int
    stem_stride: int = 1
    name: str = field(default="", compare=False)
    graph: FamilyGraph | None = None
    """A family student's wiring (then ``blocks`` is empty); None for a sequence of blocks."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (the JSON schema of arch.json); ``graph`` only where there is one."""
        d = asdict(self)
        d["blocks"] = [b.to_dict() for b in self.blocks]
        if self.graph is None:
            d.pop("graph")
        else:
            d["graph"] = self.graph.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        """Rebuild from :meth:`to_dict` output; unknown or missing fields are a ConfigError."""
        try:
            blocks = tuple(BlockSpec(**b) for b in d["blocks"])
            graph = FamilyGraph.from_dict(d["graph"]) if d.get("graph") is not None else None
            return cls(**{**d, "blocks": blocks, "graph": graph})
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a valid ArchSpec: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    @property
    def id(self) -> str:
        """Stable content hash (16 hex digits); the display name is not part of it."""
        d = self.to_dict()
        d.pop("name")
        canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.resolution, self.resolution)


def conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with the bottleneck width set by ``ratio`` of the block input channels."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = nn.functional.adaptive_avg_pool2d(x, 1)  # exports as GlobalAveragePool, which keeps ORT's NCHWc layout
        s = self.expand(nn.functional.relu(self.reduce(s)))
        return x * nn.functional.hardsigmoid(s)


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: the channels of ``groups`` groups interleaved (exports as Reshape/Transpose)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Block(nn.Module):
    """One :class:`BlockSpec` as a module."""

    def __init__(self, cin: int, spec: BlockSpec) -> None:
        super().__init__()
        self.residual = spec.op != "skip" and spec.residual and spec.stride == 1 and cin == spec.out_channels
        self.body = {"skip": _skip_body, "fbnet": _fbnet_body}.get(spec.op, _mobile_body)(cin, spec)

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def _mobile_body(cin: int, spec: BlockSpec) -> nn.Sequential:
    """conv: KxK conv + BN + ReLU6; dsconv: depthwise KxK, [SE], 1x1; mbconv: [1x1 expansion], depthwise KxK, [SE],
    linear 1x1 projection."""
    k, s, cout = spec.kernel, spec.stride, spec.out_channels
    layers: list[nn.Module]
    if spec.op == "conv":
        layers = [conv_bn_act(cin, cout, k, s)]
        se_channels = cout
    elif spec.op == "dsconv":
        layers = [conv_bn_act(cin, cin, k, s, groups=cin)]
        se_channels = cin
    else:
        hidden = cin * spec.expand
        layers = [conv_bn_act(cin, hidden, 1)] if spec.expand != 1 else []
        layers.append(conv_bn_act(hidden, hidden, k, s, groups=hidden))
        se_channels = hidden
    if spec.se_ratio > 0:
        layers.append(SqueezeExcite(se_channels, max(1, int(cin * spec.se_ratio))))
    if spec.op == "dsconv":
        layers.append(conv_bn_act(cin, cout, 1))
    elif spec.op == "mbconv":
        layers.append(conv_bn_act(se_channels, cout, 1, act=False))
    return nn.Sequential(*layers)


def _skip_body(cin: int, spec: BlockSpec) -> nn.Module:
    """FBNet's skip: the identity, or a 1x1 conv + BN + ReLU where the stride or the channels change."""
    if spec.stride == 1 and cin == spec.out_channels:
        return nn.Identity()
    return conv_bn_act(cin, spec.out_channels, 1, spec.stride)


def _fbnet_body(cin: int, spec: BlockSpec) -> nn.Sequential:
    """FBNet's block: 1x1 group conv (expansion, kept at e=1) + BN + ReLU, channel shuffle, KxK depthwise + BN +
    ReLU, [SE], 1x1 group conv + BN."""
    g, hidden, cout = spec.groups, cin * spec.expand, spec.out_channels
    if cin % g or cout % g:
        raise ConfigError(f"an fbnet block with {g} groups needs channels divisible by {g}, got {cin} -> {cout}")
    layers: list[nn.Module] = [conv_bn_act(cin, hidden, 1, groups=g)]
    if spec.shuffle:
        layers.append(ChannelShuffle(g))
    layers.append(conv_bn_act(hidden, hidden, spec.kernel, spec.stride, groups=hidden))
    if spec.se_ratio > 0:
        layers.append(SqueezeExcite(hidden, max(1, int(cin * spec.se_ratio))))
    layers.append(conv_bn_act(hidden, cout, 1, groups=g, act=False))
    return nn.Sequential(*layers)


class Network(nn.Module):
    """stem -> blocks -> 1x1 head -> global average pool -> linear classifier."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.stem = conv_bn_act(spec.in_channels, spec.stem_channels, 3, spec.stem_stride)
        blocks, cin = [], spec.stem_channels
        for b in spec.blocks:
            blocks.append(Block(cin, b))
            cin = b.out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn_act(cin, spec.head_channels, 1)
        self.classifier = nn.Linear(spec.head_channels, spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


class Unit(nn.Module):
    """A family graph's bottom node: ReLU, 3x3 depthwise-separable conv, BN (RandWire's and NAGO's unit)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
                                  nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def run_wiring(wiring: Wiring, nodes: nn.ModuleList, x: Tensor) -> Tensor:
    """Run a DAG of ``nodes`` on ``x``: each node on the sum of its predecessors' outputs; the mean of the sinks."""
    outs: list[Tensor] = []
    for node, preds in zip(nodes, wiring, strict=True):
        outs.append(node(sum(x if p < 0 else outs[p] for p in preds)))
    sinks = sinks_of(wiring)
    return sum(outs[i] for i in sinks) / len(sinks)


def sinks_of(wiring: Wiring) -> list[int]:
    """The nodes no other node takes as input."""
    used = {p for preds in wiring for p in preds}
    return [i for i in range(len(wiring)) if i not in used]


class Module(nn.Module):
    """A family graph's mid node: the bottom graph of units."""

    def __init__(self, bottom: Wiring, channels: int) -> None:
        super().__init__()
        self.bottom = bottom
        self.units = nn.ModuleList(Unit(channels) for _ in bottom)

    def forward(self, x: Tensor) -> Tensor:
        return run_wiring(self.bottom, self.units, x)


class Cell(nn.Module):
    """A family graph's top node: the mid graph of modules."""

    def __init__(self, graph: FamilyGraph, channels: int) -> None:
        super().__init__()
        self.mid = graph.mid
        self.parts = nn.ModuleList(Module(graph.bottom, channels) for _ in graph.mid)

    def forward(self, x: Tensor) -> Tensor:
        return run_wiring(self.mid, self.parts, x)


class Stage(nn.Module):
    """One stage of a family student: a 1x1 conv-BN-ReLU to its channels (strided where it downsamples), then its
    top-level graph of cells."""

    def __init__(self, graph: FamilyGraph, stage: int, cin: int) -> None:
        super().__init__()
        self.top = graph.top[stage]
        self.enter = conv_bn_act(cin, graph.channels[stage], 1, 2 if graph.downsample[stage] else 1)
        self.cells = nn.ModuleList(Cell(graph, graph.channels[stage]) for _ in self.top)

    def forward(self, x: Tensor) -> Tensor:
        return run_wiring(self.top, self.cells, self.enter(x))


class FamilyNetwork(nn.Module):
    """stem -> stages -> 1x1 head -> global average pool -> linear classifier."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        g = spec.graph
        assert g is not None
        self.stem = conv_bn_act(spec.in_channels, spec.stem_channels, 3, spec.stem_stride)
        cins = (spec.stem_channels, *g.channels[:-1])
        self.stages = nn.Sequential(*(Stage(g, s, cin) for s, cin in enumerate(cins)))
        self.head = conv_bn_act(g.channels[-1], spec.head_channels, 1)
        self.classifier = nn.Linear(spec.head_channels, spec.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.classifier(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def build(spec: ArchSpec) -> nn.Module:
    """The ``nn.Module`` described by ``spec`` (freshly initialised)."""
    return FamilyNetwork(spec) if spec.graph is not None else Network(spec)
