"""NSGA-II (Optuna's sampler) on two objectives: KD-proxy accuracy up, latency (or MACs) down."""

from __future__ import annotations

import optuna

from edgekd.pipeline.strategies import register_strategy

POPULATION = 10


@register_strategy("nsga2", pareto=True)
def nsga2_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(population_size=POPULATION, seed=seed)
