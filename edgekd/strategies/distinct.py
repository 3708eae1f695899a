"""Proposals of candidates the study has not evaluated yet: a sampler wrapper shared by the strategies.

A repeated candidate costs no training (its result is reused), but it spends a trial of the budget. The
wrapper asks the wrapped sampler again (up to ``attempts`` times) while its joint proposal matches a trial
the study already holds (finished or running); the last proposal is kept when every attempt repeats one.

With Optuna's HyperbandPruner, a sampler is handed only the trials of the new trial's bracket; this wrapper
hands the wrapped sampler the whole study instead. BOHB fits one model on the results of every budget, and
split three ways (each part with its own random start-up trials) multivariate TPE had too little to go on.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

ATTEMPTS = 20
SEEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def whole_study(study: optuna.Study) -> optuna.Study:
    """The study itself where Optuna passes the view of one Hyperband bracket (its ``_BracketStudy``)."""
    return getattr(study, "_study", study)


class DistinctSampler(optuna.samplers.BaseSampler):
    def __init__(self, base: optuna.samplers.BaseSampler, attempts: int = ATTEMPTS) -> None:
        self.base, self.attempts = base, attempts

    def __getattr__(self, name: str) -> Any:  # the wrapped sampler's own attributes (a policy's version...)
        return getattr(self.__dict__["base"], name)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(whole_study(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        study, names = whole_study(study), sorted(search_space)
        seen = {tuple(t.params[n] for n in names) for t in study.get_trials(deepcopy=False, states=SEEN)
                if t.number != trial.number and set(names) <= set(t.params)}
        proposal: dict[str, Any] = {}
        for _ in range(self.attempts):
            proposal = self.base.sample_relative(study, trial, search_space)
            if set(proposal) != set(names) or tuple(proposal[n] for n in names) not in seen:
                break
        return proposal

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.base.sample_independent(whole_study(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)
