"""Search spaces: named presets mapping a flat dict of categorical choices to an ArchSpec.

Samplers (Optuna's included) work on the plain ``choices`` parameters; ``decode`` turns them into an
ArchSpec and ``encode`` reads them back, so ``decode(encode(spec)) == spec`` for every spec of the space.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgekd.errors import ConfigError
from edgekd.pipeline.arch import ArchSpec, BlockSpec

Choices = dict[str, Any]

SPACES: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    """Class decorator adding a search-space preset under ``name``."""

    def deco(cls: type[SearchSpace]) -> type[SearchSpace]:
        SPACES[name] = cls
        cls.name = name
        return cls

    return deco


def space_preset(name: str) -> Callable[..., SearchSpace]:
    """The preset registered as ``name``; ConfigError naming the known ones otherwise."""
    if name not in SPACES:
        raise ConfigError(f"unknown search space {name!r}; available: {sorted(SPACES)}")
    return SPACES[name]


def make_space(name: str, resolution: int, in_channels: int, num_classes: int, width: float = 1.0) -> SearchSpace:
    """The preset ``name`` for inputs of ``in_channels`` x ``resolution``² and ``num_classes`` outputs."""
    return space_preset(name)(resolution=resolution, in_channels=in_channels, num_classes=num_classes, width=width)


class SearchSpace:
    """A factorized space: ``choices`` maps each decision name to its tuple of allowed values."""

    name = ""
    choices: dict[str, tuple[Any, ...]]
    resolution: int
    in_channels: int
    num_classes: int
    width: float

    def describe(self) -> dict[str, Any]:
        """What identifies the space an architecture (or a predictor) belongs to."""
        return {"name": self.name, "resolution": self.resolution, "in_channels": self.in_channels,
                "num_classes": self.num_classes, "width": self.width}

    def decode(self, choices: Choices) -> ArchSpec:
        raise NotImplementedError

    def encode(self, spec: ArchSpec) -> Choices:
        raise NotImplementedError

    def check(self, choices: Choices) -> None:
        """Raise ConfigError unless ``choices`` sets every decision to one of its allowed values."""
        missing = set(self.choices) - set(choices)
        extra = set(choices) - set(self.choices)
        if missing or extra:
            raise ConfigError(
                f"choices do not match space {self.name!r}: missing {sorted(missing)}, extra {sorted(extra)}"
            )
        for key, value in choices.items():
            if value not in self.choices[key]:
                raise ConfigError(f"{key}={value!r} is not one of {self.choices[key]} in space {self.name!r}")

    def sample(self, rng: random.Random) -> Choices:
        """Uniformly random choices."""
        return {k: rng.choice(v) for k, v in self.choices.items()}

    def mutate(self, choices: Choices, rng: random.Random) -> Choices:
        """A copy of ``choices`` with one decision changed to a different value."""
        key = rng.choice([k for k, v in self.choices.items() if len(v) > 1])
        out = dict(choices)
        out[key] = rng.choice([v for v in self.choices[key] if v != choices[key]])
        return out

    def crossover(self, a: Choices, b: Choices, rng: random.Random) -> Choices:
        """Each decision taken from ``a`` or ``b`` with equal probability."""
        return {k: (a if rng.random() < 0.5 else b)[k] for k in self.choices}

    @property
    def size(self) -> int:
        """Number of distinct choice dicts (an upper bound on distinct architectures)."""
        return math.prod(len(v) for v in self.choices.values())


def downsampling_stages(resolution: int, positions: tuple[Any, ...]) -> set[Any]:
    """The stride-2 positions kept for ``resolution``: from the deepest end, so that the last feature map is about
    4x4 (7x7 at 224) and small inputs are not downsampled to nothing."""
    if resolution < 4:
        raise ConfigError(f"resolution must be >= 4, got resolution={resolution}")
    n_down = min(len(positions), max(0, int(math.log2(resolution)) - 2))
    return set(positions[len(positions) - n_down :])


def round_channels(c: float, divisor: int = 4) -> int:
    """Round to a multiple of ``divisor`` without dropping more than 10% (MobileNet's make_divisible)."""
    rounded = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * c else rounded


@register_space("mnas")
class MnasSpace(SearchSpace):
    """AKD's factorized hierarchical space (MnasNet): 7 stages, each searched independently for its number of
    layers (base -1/0/+1), op (MBConv expand 1/3/6 or depthwise-separable conv), kernel 3/5/7, SE ratio 0/0.25,
    width multiplier 0.75/1.0/1.25 and skip (identity residual or none).

    The skeleton is MnasNet-A1's (channels 16..320, layers 1,2,3,4,2,3,1); ``width`` scales every channel count
    for small tasks. Stride-2 positions are kept from the deepest end so that the last feature map is about 4x4
    (7x7 at 224): small inputs are not downsampled to nothing.
    """

    BASE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
    BASE_LAYERS = (1, 2, 3, 4, 2, 3, 1)
    DOWNSAMPLE_AT = ("stem", 1, 2, 3, 5)
    OPS = ("mbconv_e1", "mbconv_e3", "mbconv_e6", "dsconv")

    def __init__(self, resolution: int, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        if width <= 0:
            raise ConfigError(f"width must be > 0, got width={width}")
        self.resolution, self.in_channels, self.num_classes, self.width = resolution, in_channels, num_classes, width
        self.downsample = downsampling_stages(resolution, self.DOWNSAMPLE_AT)
        self.choices = {}
        for i in range(len(self.BASE_CHANNELS)):
            self.choices |= {
                f"s{i}_layers": (-1, 0, 1),
                f"s{i}_op": self.OPS,
                f"s{i}_kernel": (3, 5, 7),
                f"s{i}_se": (0.0, 0.25),
                f"s{i}_width": (0.75, 1.0, 1.25),
                f"s{i}_skip": ("identity", "none"),
            }

    def _channels(self, stage: int, multiplier: float) -> int:
        return round_channels(self.BASE_CHANNELS[stage] * self.width * multiplier)

    def decode(self, choices: Choices) -> ArchSpec:
        self.check(choices)
        stem = round_channels(32 * self.width)
        blocks, cin = [], stem
        for i, base_layers in enumerate(self.BASE_LAYERS):
            op = choices[f"s{i}_op"]
            cout = self._channels(i, choices[f"s{i}_width"])
            for j in range(max(1, base_layers + choices[f"s{i}_layers"])):
                stride = 2 if j == 0 and i in self.downsample else 1
                blocks.append(
                    BlockSpec(
                        op="dsconv" if op == "dsconv" else "mbconv",
                        kernel=choices[f"s{i}_kernel"],
                        out_channels=cout,
                        stride=stride,
                        expand=1 if op == "dsconv" else int(op.removeprefix("mbconv_e")),
                        se_ratio=choices[f"s{i}_se"],
                        residual=choices[f"s{i}_skip"] == "identity" and stride == 1 and cin == cout,
                        stage=i,
                    )
                )
                cin = cout
        return ArchSpec(
            resolution=self.resolution,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            stem_channels=stem,
            stem_stride=2 if "stem" in self.downsample else 1,
            blocks=tuple(blocks),
            head_channels=round_channels(1280 * self.width),
        )

    def encode(self, spec: ArchSpec) -> Choices:
        choices: Choices = {}
        for i, base_layers in enumerate(self.BASE_LAYERS):
            stage = [b for b in spec.blocks if b.stage == i]
            if not stage:
                raise ConfigError(f"architecture {spec.id} has no blocks in stage {i} of space {self.name!r}")
            first = stage[0]
            widths = [w for w in self.choices[f"s{i}_width"] if self._channels(i, w) == first.out_channels]
            if not widths:
                raise ConfigError(f"stage {i} has {first.out_channels} channels, not a width of space {self.name!r}")
            choices |= {
                f"s{i}_layers": max(-1, min(1, len(stage) - base_layers)),
                f"s{i}_op": "dsconv" if first.op == "dsconv" else f"mbconv_e{first.expand}",
                f"s{i}_kernel": first.kernel,
                f"s{i}_se": first.se_ratio,
                f"s{i}_width": widths[0],
                f"s{i}_skip": "identity" if any(b.residual for b in stage) else "none",
            }
        self.check(choices)
        return choices


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


@register_space("mbv2")
class MBV2Space(SearchSpace):
    """EnNAS's space s1: a MobileNetV2 skeleton whose every layer chooses its MBConv (kernel 3/5/7 x expand
    1/3/6) or, except where a stage starts, ``skip`` (identity: elastic depth).

    Channels are MobileNetV2's (16..320, scaled by ``width``), stride-2 stages as in ``mnas``. Stage 0 is
    MobileNetV2's fixed first block (MBConv k3 e1); stages 1-6 have 2, 2, 2, 2, 2 and 1 searchable layers, a
    compact depth that lets DNA rate every path of a block exhaustively on a CPU. Several choice dicts may give
    one architecture (a skip anywhere in a stage gives the same network); ``encode`` puts a stage's skips last.
    One-shot evaluators (``edgekd.pipeline.supernet``) build a weight-sharing supernet from ``slots``.
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


class RestrictedSpace(SearchSpace):
    """``base`` with some decisions fixed and others narrowed to some of their values: a smaller space of the
    same architectures (e.g. a tabular benchmark that can afford to evaluate every member)."""

    def __init__(self, base: SearchSpace, fixed: Choices, narrowed: dict[str, tuple[Any, ...]] | None = None) -> None:
        narrowed = narrowed or {}
        unknown = (set(fixed) | set(narrowed)) - set(base.choices)
        if unknown:
            raise ConfigError(f"cannot restrict {sorted(unknown)}: not decisions of space {base.name!r}")
        for key, values in narrowed.items():
            if not values or set(values) - set(base.choices[key]):
                raise ConfigError(f"{key} narrowed to {values}, not a non-empty subset of {base.choices[key]}")
        self.base, self.fixed = base, dict(fixed)
        self.name = base.name
        self.resolution, self.in_channels, self.num_classes = base.resolution, base.in_channels, base.num_classes
        self.width = base.width
        self.choices = {k: tuple(narrowed.get(k, v)) for k, v in base.choices.items() if k not in fixed}

    def describe(self) -> dict[str, Any]:
        return self.base.describe() | {"fixed": self.fixed, "choices": self.choices}

    def decode(self, choices: Choices) -> ArchSpec:
        self.check(choices)
        return self.base.decode(self.fixed | choices)

    def encode(self, spec: ArchSpec) -> Choices:
        full = self.base.encode(spec)
        if any(full[k] != v for k, v in self.fixed.items()):
            raise ConfigError(f"architecture {spec.id} sets decisions this restriction of {self.name!r} fixes")
        return {k: v for k, v in full.items() if k not in self.fixed}

    def members(self) -> list[Choices]:
        """Every choice dict of the space, in a fixed order (only for small spaces)."""
        keys = list(self.choices)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.choices.values())]
