"""Search strategies: an Optuna sampler (and pruner) registered by name (``--strategy NAME``).

A strategy module registers a factory ``(seed, max_epochs) -> Strategy``; storage, resume, pruning and
multi-machine search then come from Optuna. A Pareto strategy searches two objectives (accuracy up, latency
or MACs down) instead of the scalar MnasNet reward, which is still computed and stored with every trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from edgekd.core.registry import Registry


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
STRATEGIES: Registry[StrategyFactory] = Registry(
    "strategies", "search strategy",
    tuple(f"edgekd.strategies.{m}" for m in ("random", "evolution", "genetic", "nsga2", "rl", "bohb", "gp")))
register_strategy = STRATEGIES.register


def strategy_factory(name: str) -> StrategyFactory:
    """The factory registered as ``name``; ConfigError naming the known ones otherwise."""
    return STRATEGIES.get(name)


def make_strategy(name: str, seed: int, max_epochs: int = 1) -> Strategy:
    """The strategy ``name``, seeded with ``seed``, for candidates trained up to ``max_epochs`` epochs."""
    return strategy_factory(name)(seed, max_epochs)


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A strategy's sampler made afresh for every trial, seeded by (``seed``, n), n the number of the study's
    earlier trials that did not fail.

    A sampler's random state lives in its process; a search resumed after a crash would otherwise draw other
    candidates than an uninterrupted one. n does not count failed trials, so the trial that replaces an
    interrupted one (retried with its candidate, or sampled anew) has the interrupted one's n, and every later
    trial its uninterrupted n: a seeded search draws the same candidates, however often it was interrupted.
    What a strategy learns lives in the study (its history, the RL policy), never in the sampler object.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self.make, self.seed = make, seed
        self.current = make(seed)

    def __getattr__(self, name: str) -> Any:  # the current sampler's own attributes (a policy's version...)
        return getattr(self.__dict__["current"], name)

    def reseed_rng(self) -> None:
        self.current.reseed_rng()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        whole = getattr(study, "_study", study)  # the study itself, not a Hyperband bracket's view of it
        n = sum(1 for t in whole.get_trials(deepcopy=False) if t.number < trial.number and t.state != TrialState.FAIL)
        self.current = self.make(self.seed + 1_000_003 * n)
        self.current.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.current.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.current.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self.current.after_trial(study, trial, state, values)
