"""BOHB as AutoKD uses it: multivariate TPE proposes candidates, Hyperband stops the weak ones early.

Budgets are proxy-training epochs: the evaluator reports the reward after every epoch and Optuna's
HyperbandPruner (successive halving over brackets, min 1 epoch, eta 3, max the proxy budget) stops candidates
whose reward at a rung is in the bottom part of their bracket.
"""

from __future__ import annotations

import optuna

from edgekd.pipeline.strategies import Strategy, register_strategy
from edgekd.pipeline.strategies.distinct import DistinctSampler

MIN_EPOCHS, ETA = 1, 3


@register_strategy("bohb")
def bohb(seed: int, max_epochs: int) -> Strategy:
    sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed)
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=MIN_EPOCHS, max_resource=max(max_epochs, MIN_EPOCHS), reduction_factor=ETA)
    return Strategy(DistinctSampler(sampler), pruner)
