"""NSGA-II (Optuna's sampler) on two objectives: KD-proxy accuracy up, latency (or MACs) down."""

from __future__ import annotations

import optuna

from edgekd.strategies import Strategy, register_strategy
from edgekd.strategies.distinct import DistinctSampler

POPULATION = 10


@register_strategy("nsga2")
def nsga2(seed: int, max_epochs: int) -> Strategy:
    sampler = optuna.samplers.NSGAIISampler(population_size=POPULATION, seed=seed)
    return Strategy(DistinctSampler(sampler, seed), directions=("maximize", "minimize"))
