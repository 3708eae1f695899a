"""Search strategies are Optuna samplers registered by name (``--strategy NAME``).

A strategy module registers a factory ``(seed) -> optuna.samplers.BaseSampler``; storage, resume, pruning and
multi-machine search then come from Optuna.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import optuna

from edgekd.errors import ConfigError

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]
STRATEGIES: dict[str, SamplerFactory] = {}
BUILTIN = ("random", "evolution")


def register_strategy(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    def deco(factory: SamplerFactory) -> SamplerFactory:
        STRATEGIES[name] = factory
        return factory

    return deco


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of strategy ``name``, seeded with ``seed``."""
    for module in BUILTIN:
        importlib.import_module(f"edgekd.pipeline.strategies.{module}")
    if name not in STRATEGIES:
        raise ConfigError(f"unknown search strategy {name!r}; available: {sorted(STRATEGIES)}")
    return STRATEGIES[name](seed)
