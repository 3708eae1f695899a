"""Search strategies: an Optuna sampler (and pruner) registered by name (``--strategy NAME``).

A strategy module registers a factory ``(seed, max_epochs) -> Strategy``; storage, resume, pruning and
multi-machine search then come from Optuna. A Pareto strategy searches two objectives (accuracy up, latency
or MACs down) instead of the scalar MnasNet reward, which is still computed and stored with every trial.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from edgekd.errors import ConfigError


@dataclass(frozen=True)
class Strategy:
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner = field(default_factory=optuna.pruners.NopPruner)
    directions: tuple[str, ...] = ("maximize",)
    """("maximize",): the reward; ("maximize", "minimize"): accuracy and the reward's cost metric."""

    @property
    def pareto(self) -> bool:
        return len(self.directions) == 2


StrategyFactory = Callable[[int, int], Strategy]
"""(seed, max_epochs) -> Strategy; max_epochs is the proxy training budget of one candidate."""
STRATEGIES: dict[str, StrategyFactory] = {}
BUILTIN = ("random", "evolution", "genetic", "nsga2", "rl", "bohb")


def register_strategy(name: str) -> Callable[[StrategyFactory], StrategyFactory]:
    def deco(factory: StrategyFactory) -> StrategyFactory:
        STRATEGIES[name] = factory
        return factory

    return deco


def strategy_factory(name: str) -> StrategyFactory:
    """The factory registered as ``name``; ConfigError naming the known ones otherwise."""
    for module in BUILTIN:
        importlib.import_module(f"edgekd.pipeline.strategies.{module}")
    if name not in STRATEGIES:
        raise ConfigError(f"unknown search strategy {name!r}; available: {sorted(STRATEGIES)}")
    return STRATEGIES[name]


def make_strategy(name: str, seed: int, max_epochs: int = 1) -> Strategy:
    """The strategy ``name``, seeded with ``seed``, for candidates trained up to ``max_epochs`` epochs."""
    return strategy_factory(name)(seed, max_epochs)
