"""Random search: every decision drawn uniformly (the baseline every strategy must beat)."""

from __future__ import annotations

import optuna

from edgekd.pipeline.strategies import register_strategy


@register_strategy("random")
def random_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)
