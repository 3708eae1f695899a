"""Layer-wise spaces: a fixed macro-architecture (stem, stages of layers, head) whose every layer picks one operator
from its list. ``fbnet`` is FBNet's space (Wu et al., CVPR 2019, Table 1); ``--space FILE.yaml`` reads a user's
own in the same vocabulary.

Operators: ``kK_eE`` (FBNet's block: 1x1 expansion conv to E times the channels, kept at E=1, a KxK depthwise
conv, a linear 1x1 projection), ``kK_eE_gG`` (its pointwise convs in G groups, with a channel shuffle after the
expansion) and ``skip`` (the identity, or FBNet's 1x1 conv projection where the stride or the channels change).
A space file::

    stem: {channels: 16, stride: 2}
    stages:
      - {layers: 1, channels: 16, stride: 1, ops: [k3_e1, k3_e3, skip]}
      - {layers: 4, channels: 24, stride: 2, ops: [k3_e1, k3_e1_g2, k5_e6, skip]}
    head_channels: 1504

Strides are given for 224 px inputs; smaller inputs keep only the deepest stride-2 positions (the last feature map
stays about 4x4). Channels are scaled by ``--space-width``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekd.core.arch import ArchSpec, BlockSpec
from edgekd.core.errors import ConfigError
from edgekd.core.yamlfile import read_yaml
from edgekd.spaces import Choices, SearchSpace, downsampling_stages, register_space, round_channels

SKIP = "skip"
OPERATOR = re.compile(r"k(?P<kernel>[357])_e(?P<expand>[1-9])(?:_g(?P<groups>[2-8]))?")
"""``kK_eE`` or ``kK_eE_gG``: kernel 3, 5 or 7, expansion 1-9, pointwise groups 2-8."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stem(_Part):
    channels: Annotated[int, Field(ge=1, le=4096)]
    stride: Literal[1, 2] = 2


class Stage(_Part):
    layers: Annotated[int, Field(ge=1, le=64)]
    channels: Annotated[int, Field(ge=1, le=8192)]
    stride: Literal[1, 2] = 1
    """The stride of the stage's first layer (the others have stride 1)."""
    ops: Annotated[tuple[str, ...], Field(min_length=1, max_length=64)]

    @field_validator("ops")
    @classmethod
    def _known_ops(cls, ops: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [op for op in ops if op != SKIP and not OPERATOR.fullmatch(op)]
        if unknown:
            raise ValueError(f"unknown operator(s) {unknown}: use kK_eE, kK_eE_gG (K in 3/5/7) or skip")
        if len(set(ops)) != len(ops):
            raise ValueError(f"an operator is listed twice in {list(ops)}")
        return ops


class LayerwiseDescription(_Part):
    """A layer-wise space: what a space file holds."""

    stem: Stem
    stages: Annotated[tuple[Stage, ...], Field(min_length=1, max_length=32)]
    head_channels: Annotated[int, Field(ge=1, le=16384)]


FBNET = LayerwiseDescription(
    stem=Stem(channels=16, stride=2),
    stages=tuple(Stage(layers=n, channels=c, stride=s, ops=(
        "k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", SKIP))
        for n, c, s in ((1, 16, 1), (4, 24, 2), (4, 32, 2), (4, 64, 2), (4, 112, 1), (4, 184, 2), (1, 352, 1))),
    head_channels=1504,
)
"""FBNet's macro-architecture (Table 1): 22 searchable layers in stages of 1, 4, 4, 4, 4, 4, 1, nine operators each."""


class LayerwiseSpace(SearchSpace):
    """A space of one operator per layer over a fixed macro-architecture (a :class:`LayerwiseDescription`)."""

    description: LayerwiseDescription = FBNET

    def __init__(self, resolution: int, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        if width <= 0:
            raise ConfigError(f"width must be > 0, got width={width}")
        self.resolution, self.in_channels, self.num_classes, self.width = resolution, in_channels, num_classes, width
        d = self.description
        positions = (["stem"] if d.stem.stride == 2 else []) + [i for i, s in enumerate(d.stages) if s.stride == 2]
        down = downsampling_stages(resolution, tuple(positions))
        self.stem_channels, self.stem_stride = round_channels(d.stem.channels * width), 2 if "stem" in down else 1
        self.head_channels = round_channels(d.head_channels * width)
        self.layers: list[tuple[str, int, int, int]] = []
        """(decision name, stage, output channels, stride) of every searchable layer."""
        for i, stage in enumerate(d.stages):
            for j in range(stage.layers):
                stride = 2 if j == 0 and i in down else 1
                self.layers.append((f"s{i}_l{j}", i, round_channels(stage.channels * width), stride))
        self.choices = {name: d.stages[stage].ops for name, stage, _, _ in self.layers}

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"layerwise": self.description.model_dump(mode="json")}

    def decode(self, choices: Choices) -> ArchSpec:
        self.check(choices)
        blocks, cin = [], self.stem_channels
        for name, stage, cout, stride in self.layers:
            blocks.append(block_of(choices[name], cin, cout, stride, stage))
            cin = cout
        return ArchSpec(resolution=self.resolution, in_channels=self.in_channels, num_classes=self.num_classes,
                        stem_channels=self.stem_channels, stem_stride=self.stem_stride, blocks=tuple(blocks),
                        head_channels=self.head_channels)

    def encode(self, spec: ArchSpec) -> Choices:
        if len(spec.blocks) != len(self.layers):
            raise ConfigError(f"architecture {spec.id} has {len(spec.blocks)} blocks; space {self.name!r} has "
                              f"{len(self.layers)} layers")
        choices = {name: operator_of(b) for (name, *_), b in zip(self.layers, spec.blocks, strict=True)}
        self.check(choices)
        if self.decode(choices) != spec:
            raise ConfigError(f"architecture {spec.id} is not a member of space {self.name!r}")
        return choices


def block_of(op: str, cin: int, cout: int, stride: int, stage: int) -> BlockSpec:
    """The block operator ``op`` puts in a layer from ``cin`` to ``cout`` channels."""
    if op == SKIP:
        return BlockSpec(op="skip", kernel=1, out_channels=cout, stride=stride, stage=stage)
    m = OPERATOR.fullmatch(op)
    if m is None:
        raise ConfigError(f"unknown operator {op!r}")
    groups = int(m["groups"] or 1)
    if cin % groups or cout % groups:
        raise ConfigError(f"operator {op} needs channels divisible by {groups}, got {cin} -> {cout}")
    return BlockSpec(op="fbnet", kernel=int(m["kernel"]), expand=int(m["expand"]), out_channels=cout, stride=stride,
                     groups=groups, shuffle=groups > 1, residual=stride == 1 and cin == cout, stage=stage)


def operator_of(block: BlockSpec) -> str:
    """The operator name of a block of a layer-wise space."""
    if block.op == "skip":
        return SKIP
    return f"k{block.kernel}_e{block.expand}" + (f"_g{block.groups}" if block.groups > 1 else "")


@register_space("fbnet")
class FBNetSpace(LayerwiseSpace):
    """FBNet's space (FBNet, Table 1): 22 layers, each one of k3/k5 x e1/e3/e6, k3/k5 e1 with group-2 pointwise
    convs and a channel shuffle, or skip."""

    description = FBNET


def load_space_file(path: Path) -> type[LayerwiseSpace]:
    """The layer-wise space a YAML file describes, as a class made like a preset; errors name the file and field."""
    try:
        return layerwise_space(read_yaml(path, "a space file"), str(path))
    except ValidationError as exc:
        problems = "; ".join(f"field {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None


def layerwise_space(description: Any, name: str) -> type[LayerwiseSpace]:
    """A space class for a layer-wise ``description`` (validated: pydantic's ValidationError otherwise)."""
    return type("FileSpace", (LayerwiseSpace,), {"description": LayerwiseDescription.model_validate(description),
                                                 "name": name})

