"""Regularized evolution (Real et al., AmoebaNet) as an Optuna sampler.

The population is the ``population`` most recent complete trials (aging: the oldest leaves as a child joins,
whatever its score); a child is the best of ``tournament`` trials drawn from the population with one decision
changed to another of its values. Until the population is full, candidates are drawn at random. Because the
population is read from the study, a resumed or multi-worker search continues the same evolution.
"""

from __future__ import annotations

import random
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import FrozenTrial, TrialState

from edgekd.strategies import Strategy, register_strategy
from edgekd.strategies.distinct import DistinctSampler

POPULATION, TOURNAMENT = 10, 3


class EvolutionarySampler(optuna.samplers.BaseSampler):
    """Random candidates until ``population`` trials are complete, then ``child`` of the complete trials (read
    from the study, so a resumed or multi-worker search continues the same evolution)."""

    def __init__(self, population: int, seed: int | None = None) -> None:
        self.population = population
        self._rng = random.Random(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._space = IntersectionSearchSpace()

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: d for name, d in self._space.calculate(study).items() if isinstance(d, CategoricalDistribution)}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not search_space or len(complete) < self.population:
            return {}
        return self.child(study, complete, search_space)

    def child(self, study: optuna.Study, complete: list[FrozenTrial], search_space: dict[str, BaseDistribution]
              ) -> dict[str, Any]:
        raise NotImplementedError

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)


class RegularizedEvolutionSampler(EvolutionarySampler):
    def __init__(self, population: int = POPULATION, tournament: int = TOURNAMENT, seed: int | None = None) -> None:
        super().__init__(population, seed)
        self.tournament = tournament

    def child(self, study: optuna.Study, complete: list[FrozenTrial], search_space: dict[str, BaseDistribution]
              ) -> dict[str, Any]:
        population = sorted(complete, key=lambda t: t.number)[-self.population :]
        contenders = self._rng.sample(population, min(self.tournament, len(population)))
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        parent = pick(contenders, key=lambda t: t.value)
        child = {name: parent.params[name] for name in search_space}
        mutable = [n for n, d in search_space.items() if len(d.choices) > 1]
        name = self._rng.choice(mutable)
        child[name] = self._rng.choice([c for c in search_space[name].choices if c != child[name]])
        return child


@register_strategy("evolution")
def evolution(seed: int, max_epochs: int) -> Strategy:
    return Strategy(DistinctSampler(RegularizedEvolutionSampler(seed=seed), seed))
