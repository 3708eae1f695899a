"""Search strategies are Optuna samplers registered by name (``--strategy NAME``).

A strategy module registers a factory ``(seed) -> optuna.samplers.BaseSampler``; storage, resume, pruning and
multi-machine search then come from Optuna. A ``pareto`` strategy searches two objectives (accuracy up, latency
or MACs down) instead of the scalar MnasNet reward, which is still computed and stored with every trial.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import optuna

from edgekd.errors import ConfigError

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]
STRATEGIES: dict[str, SamplerFactory] = {}
PARETO: set[str] = set()
BUILTIN = ("random", "evolution", "nsga2")


def register_strategy(name: str, pareto: bool = False) -> Callable[[SamplerFactory], SamplerFactory]:
    def deco(factory: SamplerFactory) -> SamplerFactory:
        STRATEGIES[name] = factory
        if pareto:
            PARETO.add(name)
        return factory

    return deco


def _known(name: str) -> None:
    for module in BUILTIN:
        importlib.import_module(f"edgekd.pipeline.strategies.{module}")
    if name not in STRATEGIES:
        raise ConfigError(f"unknown search strategy {name!r}; available: {sorted(STRATEGIES)}")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of strategy ``name``, seeded with ``seed``."""
    _known(name)
    return STRATEGIES[name](seed)


def directions(name: str) -> list[str]:
    """The study's directions: the reward (maximize), or accuracy and cost for a Pareto strategy."""
    _known(name)
    return ["maximize", "minimize"] if name in PARETO else ["maximize"]
