"""EnNAS's layer-wise MobileNetV2 space (s1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgekd.core.arch import ArchSpec, BlockSpec
from edgekd.core.errors import ConfigError
from edgekd.spaces import Choices, SearchSpace, downsampling_stages, register_space, round_channels

KERNELS, EXPANDS = (3, 5, 7), (1, 3, 6)
MBV2_OPS = tuple(f"k{k}_e{e}" for k in KERNELS for e in EXPANDS)
SKIP = "skip"


@dataclass(frozen=True)
class LayerSlot:
    """One searchable layer of a layer-wise space: its decision name, place and allowed operators."""

    name: str
    stage: int
    in_channels: int
    out_channels: int
    stride: int
    ops: tuple[str, ...]


@dataclass(frozen=True)
class SlotCosts:
    """A cost (MMACs, latency) of the network at a reference path (``base``, every slot's first operator) and each
    slot operator's cost relative to it, so that a path's cost is the reference's plus its operators' differences.

    Exact for MACs (the space fixes every slot's channels); for latency it is FBNet's additive lookup table.
    DNA's pick and PAMKD's expected cost sum this table instead of costing each combination."""

    base: float
    table: dict[str, dict[str, float]]

    @classmethod
    def of_space(cls, space: MBV2Space, cost: Callable[[ArchSpec], float]) -> SlotCosts:
        """The table from ``cost`` of the reference and of every network that differs from it in one slot."""
        ref = {s.name: s.ops[0] for s in space.slots}
        base = cost(space.decode(ref))
        return cls(base, {s.name: {op: cost(space.decode({**ref, s.name: op})) - base if op != s.ops[0] else 0.0
                                   for op in s.ops} for s in space.slots})

    @staticmethod
    def networks(space: MBV2Space) -> int:
        """How many networks ``of_space`` costs."""
        return 1 + sum(len(s.ops) - 1 for s in space.slots)

    def of(self, path: Choices) -> float:
        """The cost of the network ``path`` describes."""
        return self.base + sum(self.table[name][op] for name, op in path.items())


@register_space("mbv2")
class MBV2Space(SearchSpace):
    """EnNAS's space s1: a MobileNetV2 skeleton whose every layer chooses its MBConv (kernel 3/5/7 x expand
    1/3/6) or, except where a stage starts, ``skip`` (identity: elastic depth).

    Channels are MobileNetV2's (16..320, scaled by ``width``), stride-2 stages as in ``mnas``. Stage 0 is
    MobileNetV2's fixed first block (MBConv k3 e1); stages 1-6 have 2, 2, 2, 2, 2 and 1 searchable layers, a
    compact depth that lets DNA rate every path of a block exhaustively on a CPU. Several choice dicts may give
    one architecture (a skip anywhere in a stage gives the same network); ``encode`` puts a stage's skips last.
    One-shot evaluators (``edgekd.evaluators.supernet``) build a weight-sharing supernet from ``slots``.
    """

    BASE_CHANNELS = (16, 24, 32, 64, 96, 160, 320)
    LAYERS = (1, 2, 2, 2, 2, 2, 1)
    DOWNSAMPLE_AT = ("stem", 1, 2, 3, 5)

    def __init__(self, resolution: int, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        if width <= 0:
            raise ConfigError(f"width must be > 0, got width={width}")
        self.resolution, self.in_channels, self.num_classes, self.width = resolution, in_channels, num_classes, width
        self.downsample = downsampling_stages(resolution, self.DOWNSAMPLE_AT)
        self.stem_channels = round_channels(32 * width)
        self.first = BlockSpec(op="mbconv", kernel=3, out_channels=self._channels(0), stride=1, expand=1,
                               residual=self.stem_channels == self._channels(0), stage=0)
        self.slots: list[LayerSlot] = []
        cin = self.first.out_channels
        for stage in range(1, len(self.LAYERS)):
            cout = self._channels(stage)
            for j in range(self.LAYERS[stage]):
                stride = 2 if j == 0 and stage in self.downsample else 1
                ops = MBV2_OPS if j == 0 else (*MBV2_OPS, SKIP)
                self.slots.append(LayerSlot(f"s{stage}_l{j}", stage, cin, cout, stride, ops))
                cin = cout
        self.choices = {slot.name: slot.ops for slot in self.slots}

    def _channels(self, stage: int) -> int:
        return round_channels(self.BASE_CHANNELS[stage] * self.width)

    @property
    def stem_stride(self) -> int:
        return 2 if "stem" in self.downsample else 1

    @property
    def head_channels(self) -> int:
        return round_channels(1280 * self.width)

    @staticmethod
    def block_of(slot: LayerSlot, op: str) -> BlockSpec:
        """The block that operator ``op`` puts in ``slot`` (``op`` is not ``skip``)."""
        kernel, expand = (int(part[1:]) for part in op.split("_"))
        residual = slot.stride == 1 and slot.in_channels == slot.out_channels
        return BlockSpec(op="mbconv", kernel=kernel, out_channels=slot.out_channels, stride=slot.stride,
                         expand=expand, residual=residual, stage=slot.stage)

    def decode(self, choices: Choices) -> ArchSpec:
        self.check(choices)
        blocks = [self.first] + [self.block_of(s, choices[s.name]) for s in self.slots if choices[s.name] != SKIP]
        return ArchSpec(resolution=self.resolution, in_channels=self.in_channels, num_classes=self.num_classes,
                        stem_channels=self.stem_channels, stem_stride=self.stem_stride, blocks=tuple(blocks),
                        head_channels=self.head_channels)

    def encode(self, spec: ArchSpec) -> Choices:
        choices: Choices = {}
        for stage in range(1, len(self.LAYERS)):
            blocks = [b for b in spec.blocks if b.stage == stage]
            slots = [s for s in self.slots if s.stage == stage]
            if not 1 <= len(blocks) <= len(slots):
                raise ConfigError(f"architecture {spec.id} has {len(blocks)} blocks in stage {stage}, not 1 to "
                                  f"{len(slots)} as space {self.name!r} allows")
            for i, slot in enumerate(slots):
                choices[slot.name] = f"k{blocks[i].kernel}_e{blocks[i].expand}" if i < len(blocks) else SKIP
        self.check(choices)
        if self.decode(choices) != spec:
            raise ConfigError(f"architecture {spec.id} is not a member of space {self.name!r}")
        return choices
