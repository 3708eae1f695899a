"""The evolutionary search of SPOS and EnNAS (seed 002) as an Optuna sampler, for cheap one-shot ratings.

The parents are the ``top_k`` best complete trials; a child is, with probability ``crossover``, a uniform
crossover of two parents, else a mutation of one parent (each decision changed with probability ``mutation``,
at least one). The first ``population`` candidates are random (the initial population).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from edgekd.strategies import Strategy, register_strategy
from edgekd.strategies.distinct import DistinctSampler
from edgekd.strategies.evolution import EvolutionarySampler

POPULATION, TOP_K, CROSSOVER, MUTATION = 20, 5, 0.5, 0.1


class GeneticSampler(EvolutionarySampler):
    def __init__(self, population: int = POPULATION, top_k: int = TOP_K, crossover: float = CROSSOVER,
                 mutation: float = MUTATION, seed: int | None = None) -> None:
        super().__init__(population, seed)
        self.top_k, self.crossover, self.mutation = top_k, crossover, mutation

    def child(self, study: optuna.Study, complete: list[FrozenTrial], search_space: dict[str, BaseDistribution]
              ) -> dict[str, Any]:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        parents = sorted(complete, key=lambda t: t.value, reverse=maximize)[: self.top_k]
        if len(parents) > 1 and self._rng.random() < self.crossover:
            a, b = self._rng.sample(parents, 2)
            return {n: (a if self._rng.random() < 0.5 else b).params[n] for n in search_space}
        parent = self._rng.choice(parents)
        child = {n: parent.params[n] for n in search_space}
        mutable = [n for n, d in search_space.items() if len(d.choices) > 1]
        changed = [n for n in mutable if self._rng.random() < self.mutation] or [self._rng.choice(mutable)]
        for name in changed:
            child[name] = self._rng.choice([c for c in search_space[name].choices if c != child[name]])
        return child


@register_strategy("genetic")
def genetic(seed: int, max_epochs: int) -> Strategy:
    return Strategy(DistinctSampler(GeneticSampler(seed=seed), seed))
