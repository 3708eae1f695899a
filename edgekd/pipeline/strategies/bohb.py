"""BOHB as AutoKD uses it: multivariate TPE proposes candidates, Hyperband stops the weak ones early.

Budgets are proxy-training epochs: the evaluator reports the reward after every epoch and Optuna's
HyperbandPruner (successive halving over brackets) stops candidates whose reward at a rung is in the bottom
part of their bracket. The rungs follow AutoKD's (30, 60 and 120 epochs: eta 2 from a quarter of the full
budget), here from a third of it (3, 6 and 9 of 9 epochs), because the proxy's first epoch is learning-rate
warm-up. TPE scores 8 candidates per proposal instead of Optuna's 24: less greedy, the role BOHB gives its
share of random proposals. Both were chosen on search seeds the tabular benchmark does not report.
"""

from __future__ import annotations

import optuna

from edgekd.pipeline.strategies import Strategy, register_strategy
from edgekd.pipeline.strategies.distinct import DistinctSampler

ETA, EI_CANDIDATES = 2, 8


def min_epochs(max_epochs: int) -> int:
    """The first rung: a third of the proxy budget, at least one epoch."""
    return max(1, round(max_epochs / 3))


@register_strategy("bohb")
def bohb(seed: int, max_epochs: int) -> Strategy:
    sampler = optuna.samplers.TPESampler(multivariate=True, constant_liar=True, n_ei_candidates=EI_CANDIDATES,
                                         seed=seed)
    pruner = optuna.pruners.HyperbandPruner(
        min_resource=min_epochs(max_epochs), max_resource=max(max_epochs, 1), reduction_factor=ETA)
    return Strategy(DistinctSampler(sampler), pruner)
