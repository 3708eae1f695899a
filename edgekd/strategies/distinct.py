"""Proposals of candidates the study has not evaluated yet: a sampler wrapper shared by the strategies.

A repeated candidate costs no training (its result is reused), but it spends a trial of the budget. The
wrapper asks the wrapped sampler again (up to ``attempts`` times) while its joint proposal matches a trial
the study already holds (finished or running). When every attempt repeats one (a policy or a model that has
settled on the best candidates so far), and where the wrapped sampler would draw each decision at random (its
start-up), the trial gets a candidate drawn uniformly among those the study does not hold, marked with
``DRAWN_KEY`` as not the wrapped sampler's own; only when the space is exhausted (no unheld one in ``draws``
uniform draws) is a repeat kept.

With Optuna's HyperbandPruner, a sampler is handed only the trials of the new trial's bracket; this wrapper
hands the wrapped sampler the whole study instead. BOHB fits one model on the results of every budget, and
split three ways (each part with its own random start-up trials) multivariate TPE had too little to go on.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

ATTEMPTS, DRAWS = 20, 1000
DRAWN_KEY = "distinct_drawn"
"""System attribute of a trial whose candidate the wrapper drew, not the wrapped sampler (rl's policy, which
learns from its own samples only, leaves such a trial out)."""
SEEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def whole_study(study: optuna.Study) -> optuna.Study:
    """The study itself where Optuna passes the view of one Hyperband bracket (its ``_BracketStudy``)."""
    return getattr(study, "_study", study)


class DistinctSampler(optuna.samplers.BaseSampler):
    def __init__(self, base: optuna.samplers.BaseSampler, seed: int | None = None, attempts: int = ATTEMPTS,
                 draws: int = DRAWS) -> None:
        self.base, self.attempts, self.draws = base, attempts, draws
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def __getattr__(self, name: str) -> Any:  # the wrapped sampler's own attributes (a policy's version...)
        return getattr(self.__dict__["base"], name)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(whole_study(study), trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        study, names = whole_study(study), sorted(search_space)
        seen = {tuple(t.params[n] for n in names) for t in study.get_trials(deepcopy=False, states=SEEN)
                if t.number != trial.number and set(names) <= set(t.params)}
        if not (names and seen):
            return self.base.sample_relative(study, trial, search_space)
        proposal: dict[str, Any] = {}
        for _ in range(self.attempts):
            proposal = self.base.sample_relative(study, trial, search_space)
            if not proposal:  # the base would draw each decision at random (its start-up): draw an unheld one
                break
            if set(proposal) != set(names) or tuple(proposal[n] for n in names) not in seen:
                return proposal
        drawn = self._unheld(study, trial, search_space, names, seen)
        if drawn is None:
            return proposal
        study._storage.set_trial_system_attr(trial._trial_id, DRAWN_KEY, True)
        return drawn

    def _unheld(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution],
                names: list[str], seen: set[tuple]) -> dict[str, Any] | None:
        """A candidate drawn uniformly among those ``seen`` lacks; None if ``draws`` draws find none."""
        for _ in range(self.draws):
            drawn = {n: self._random.sample_independent(study, trial, n, search_space[n]) for n in names}
            if tuple(drawn[n] for n in names) not in seen:
                return drawn
        return None

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.base.sample_independent(whole_study(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)
