"""Random search: every decision drawn uniformly (the baseline every strategy must beat)."""

from __future__ import annotations

import optuna

from edgekd.strategies import Strategy, register_strategy


@register_strategy("random")
def random_search(seed: int, max_epochs: int) -> Strategy:
    return Strategy(optuna.samplers.RandomSampler(seed=seed))
