"""Search spaces: named presets mapping a flat dict of categorical choices to an ArchSpec.

Samplers (Optuna's included) work on the plain ``choices`` parameters; ``decode`` turns them into an
ArchSpec and ``encode`` reads them back, so ``decode(encode(spec)) == spec`` for every spec of the space.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.core.arch import ArchSpec
from edgekd.core.errors import ConfigError
from edgekd.core.registry import Registry

Choices = dict[str, Any]

SPACES: Registry[Callable[..., SearchSpace]] = Registry(
    "spaces", "search space", tuple(f"edgekd.spaces.{m}" for m in ("mnas", "mbv2", "layerwise", "family")))
SPACE_FILE_SUFFIXES = (".yaml", ".yml")


def register_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    """Class decorator adding a search-space preset under ``name``."""

    def deco(cls: type[SearchSpace]) -> type[SearchSpace]:
        SPACES.add(name, cls)
        cls.name = name
        return cls

    return deco


def space_preset(name: str) -> Callable[..., SearchSpace]:
    """The preset registered as ``name``, or the layer-wise space a ``.yaml`` file describes; ConfigError naming
    the known ones otherwise."""
    if name.endswith(SPACE_FILE_SUFFIXES):
        from edgekd.spaces.layerwise import load_space_file

        return load_space_file(Path(name).expanduser())
    return SPACES.get(name)


def make_space(name: str, resolution: int, in_channels: int, num_classes: int, width: float = 1.0) -> SearchSpace:
    """The preset ``name`` for inputs of ``in_channels`` x ``resolution``² and ``num_classes`` outputs."""
    return space_preset(name)(resolution=resolution, in_channels=in_channels, num_classes=num_classes, width=width)


def space_of(description: dict[str, Any]) -> SearchSpace:
    """The space ``SearchSpace.describe()`` described (read back from a predictor file, say)."""
    shape = (description["resolution"], description["in_channels"], description["num_classes"], description["width"])
    if "layerwise" in description and description["name"] not in SPACES:  # a space file's, kept in the description
        from edgekd.spaces.layerwise import layerwise_space

        return layerwise_space(description["layerwise"], description["name"])(*shape)
    base = make_space(description["name"], *shape)
    if "fixed" not in description:
        return base
    narrowed = {k: tuple(v) for k, v in description["choices"].items()}
    return RestrictedSpace(base, description["fixed"], narrowed)


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
