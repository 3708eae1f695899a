"""Search strategies as Optuna samplers, on a small deterministic objective."""

import numpy as np
import optuna
import pytest
import torch

from edgekd.core.errors import ConfigError
from edgekd.strategies import make_strategy
from edgekd.strategies.distinct import DRAWN_KEY, DistinctSampler
from edgekd.strategies.rl import STATE_KEY, PPOControllerSampler, policy_sampled, ppo_loss

optuna.logging.set_verbosity(optuna.logging.WARNING)

DECISIONS = {f"d{i}": tuple(range(5)) for i in range(8)}
TARGET = {f"d{i}": (3 * i) % 5 for i in range(8)}


def _objective(trial: optuna.Trial) -> float:
    """How many decisions match a hidden target: one-step improvements exist from anywhere.

    Like a training curve, the score is reported after each of 9 "epochs" (a third, two thirds... of it, plus
    a little per-candidate offset), so that a pruning strategy can stop a candidate early.
    """
    params = {name: trial.suggest_categorical(name, values) for name, values in DECISIONS.items()}
    score = float(sum(params[k] == v for k, v in TARGET.items()))
    for epoch in range(1, 10):
        trial.report(score * min(1.0, epoch / 3), epoch)
        if epoch < 9 and trial.should_prune():  # a fully trained candidate is complete
            raise optuna.TrialPruned
    return score


def _study(strategy: str, seed: int, n: int) -> optuna.Study:
    s = make_strategy(strategy, seed, max_epochs=9)
    # a fixed name: Hyperband assigns trials to brackets by a hash of the study name and the trial number
    study = optuna.create_study(study_name=f"{strategy}-{seed}", directions=s.directions, sampler=s.sampler,
                                pruner=s.pruner)
    study.optimize(_objective, n_trials=n)
    return study


def _best_after(strategy: str, seed: int, n: int) -> list[float]:
    values = [t.value if t.state == optuna.trial.TrialState.COMPLETE else 0.0 for t in _study(strategy, seed, n).trials]
    return list(np.maximum.accumulate(values))


@pytest.mark.parametrize("strategy", ["random", "evolution", "genetic", "rl", "bohb"])
def test_every_strategy_improves_over_its_first_trials(strategy):
    curves = np.array([_best_after(strategy, seed, 120) for seed in range(8)])
    assert curves[:, -1].mean() > curves[:, 9].mean() + 1


@pytest.mark.parametrize("strategy", ["evolution", "genetic"])
def test_evolutionary_strategies_beat_random_search_at_the_same_budget(strategy):
    evo = np.mean([_best_after(strategy, seed, 120)[-1] for seed in range(8)])
    rnd = np.mean([_best_after("random", seed, 120)[-1] for seed in range(8)])
    assert evo > rnd + 0.5


def test_gp_beats_random_search_within_a_few_tens_of_trials():
    # a model of the decisions' effects pays off early: at 20 trials, where evolution has barely started
    gp = np.mean([_best_after("gp", seed, 20)[-1] for seed in range(3)])
    rnd = np.mean([_best_after("random", seed, 20)[-1] for seed in range(3)])
    assert gp > rnd + 1


def test_genetic_children_come_from_the_top_parents():
    trials = _study("genetic", 0, 40).trials
    for child in trials[20:]:
        done = sorted(trials[: child.number], key=lambda t: -t.value)[:5]
        # each decision of a crossover or mutation child comes from a parent, but for the mutated ones
        inherited = sum(any(child.params[n] == p.params[n] for p in done) for n in DECISIONS)
        assert inherited >= len(DECISIONS) - 3


def test_evolution_children_differ_from_a_population_member_by_one_decision():
    trials = _study("evolution", 0, 30).trials
    for child in trials[10:]:
        population = trials[max(0, child.number - 10) : child.number]
        distances = [sum(child.params[k] != p.params[k] for k in DECISIONS) for p in population]
        assert min(distances) == 1


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="evolution"):
        make_strategy("annealing", 0)


def _two_objectives(trial: optuna.Trial) -> tuple[float, float]:
    """Accuracy-like (matches with a target) up, cost-like (sum of choices) down: a real trade-off."""
    params = {name: trial.suggest_categorical(name, values) for name, values in DECISIONS.items()}
    return float(sum(params[k] == v for k, v in TARGET.items())), float(sum(params.values()))


def _hypervolume(points: list[tuple[float, float]], ref=(0.0, 40.0)) -> float:
    """Area dominated by (accuracy up, cost down) points, bounded by ``ref``."""
    area, best_cost = 0.0, ref[1]
    for acc, cost in sorted(points, key=lambda p: -p[0]):
        if cost < best_cost:
            area += (acc - ref[0]) * (best_cost - cost)
            best_cost = cost
    return area


def test_nsga2_grows_the_pareto_front_beyond_its_first_generation():
    gains = []
    for seed in range(4):
        s = make_strategy("nsga2", seed)
        study = optuna.create_study(directions=s.directions, sampler=s.sampler)
        study.optimize(_two_objectives, n_trials=100)
        values = [tuple(t.values) for t in study.trials]
        gains.append(_hypervolume(values) - _hypervolume(values[:10]))
    assert min(gains) > 0 and np.mean(gains) > 5
    assert make_strategy("random", 0).directions == ("maximize",)


def test_bohb_stops_weak_candidates_early_and_spends_fewer_epochs():
    study = _study("bohb", 0, 120)
    epochs = [len(t.intermediate_values) for t in study.trials]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) > 10 and {len(t.intermediate_values) for t in pruned} == {5}  # one rung: half the budget
    assert sum(epochs) == 9 * len(epochs) - 4 * len(pruned)  # the others ran all 9 epochs


def test_the_sampler_models_the_trials_of_every_hyperband_bracket_not_only_its_own():
    tpe = optuna.samplers.TPESampler(multivariate=True, seed=0)
    sampler, pruner = DistinctSampler(tpe), optuna.pruners.HyperbandPruner(1, 9, 3)  # 3 brackets
    seen: list[tuple[int, int]] = []
    propose = tpe.sample_relative

    def recording(study, trial, space):
        seen.append((trial.number, len(study.get_trials(deepcopy=False))))
        return propose(study, trial, space)

    tpe.sample_relative = recording
    study = optuna.create_study(sampler=sampler, pruner=pruner)
    study.optimize(_objective, n_trials=30)
    brackets = {pruner._get_bracket_id(study, t) for t in study.trials}
    assert len(brackets) > 1 and len(seen) >= 25
    assert all(visible == number + 1 for number, visible in seen)  # every earlier trial, and the new one


def test_ppo_clipped_loss_matches_hand_computed_values():
    old = torch.log(torch.tensor([0.5, 0.5, 0.2]))
    new = torch.log(torch.tensor([0.8, 0.3, 0.2]))  # ratios 1.6, 0.6, 1.0
    advantage = torch.tensor([1.0, -2.0, 0.5])
    entropy = torch.tensor([1.0, 2.0, 3.0])
    # min(1.6·1, 1.2·1) = 1.2; min(0.6·-2, 0.8·-2) = -1.6; min(1·0.5, 1·0.5) = 0.5 → mean 0.0333; H mean 2
    expected = -((1.2 - 1.6 + 0.5) / 3 + 0.01 * 2.0)
    assert ppo_loss(new, old, advantage, entropy, clip=0.2, entropy_weight=0.01).item() == pytest.approx(expected)
    # inside the clip range the loss is the plain policy-gradient surrogate
    assert ppo_loss(old + 0.1, old, advantage, entropy, entropy_weight=0).item() == pytest.approx(
        -(np.exp(0.1) * advantage).mean().item())


def test_a_resumed_rl_search_continues_the_saved_policy(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    nop = optuna.pruners.NopPruner()
    study = optuna.create_study(study_name="rl", storage=storage, direction="maximize",
                                sampler=make_strategy("rl", 0).sampler, pruner=nop)
    study.optimize(_objective, n_trials=60)
    trained = study.sampler
    assert trained.version >= 10 and study.user_attrs[STATE_KEY]["version"] == trained.version

    resumed = optuna.load_study(study_name="rl", storage=storage, sampler=PPOControllerSampler(seed=1), pruner=nop)
    resumed.optimize(_objective, n_trials=1)  # the new process's sampler loads the policy on first use
    for mine, saved in zip(resumed.sampler.policy.state_dict().values(), trained.policy.state_dict().values(),
                           strict=True):
        assert torch.equal(mine, saved) or resumed.sampler.version > trained.version
    resumed.optimize(_objective, n_trials=20)
    fresh = optuna.create_study(direction="maximize", sampler=PPOControllerSampler(seed=1), pruner=nop)
    fresh.optimize(_objective, n_trials=21)
    continued = np.mean([t.value for t in resumed.trials[-20:]])
    restarted = np.mean([t.value for t in fresh.trials[-20:]])
    assert continued > restarted + 1


class _Stubborn(optuna.samplers.BaseSampler):
    """Proposes the same candidate every time: what a policy or a model that has settled does."""

    def infer_relative_search_space(self, study, trial):
        return optuna.search_space.IntersectionSearchSpace().calculate(study)

    def sample_relative(self, study, trial, search_space):
        return {name: d.choices[0] for name, d in search_space.items()}

    def sample_independent(self, study, trial, name, distribution):
        return distribution.choices[0]


def _small(trial: optuna.Trial) -> float:
    return float(sum(trial.suggest_categorical(n, (0, 1)) for n in ("a", "b", "c")))


def test_a_settled_sampler_gets_unheld_candidates_until_the_space_is_exhausted():
    study = optuna.create_study(sampler=DistinctSampler(_Stubborn(), seed=0))
    study.optimize(_small, n_trials=10)
    candidates = [tuple(t.params.values()) for t in study.trials]
    assert len(set(candidates[:8])) == 8  # all 2 x 2 x 2, none repeated
    assert len(set(candidates)) == 8  # then the space is exhausted: repeats are kept
    drawn = [DRAWN_KEY in t.system_attrs for t in study.trials]
    assert not drawn[0] and all(drawn[1:8])  # the first, before any was held, is the sampler's own


@pytest.mark.parametrize("strategy", ["gp", "rl", "evolution"])
def test_no_strategy_repeats_a_candidate_before_the_space_is_exhausted(strategy):
    s = make_strategy(strategy, 0, max_epochs=1)
    study = optuna.create_study(sampler=s.sampler)
    study.optimize(_small, n_trials=8)
    assert len({tuple(t.params.values()) for t in study.trials}) == 8


def test_rl_learns_only_from_the_candidates_its_policy_sampled():
    s = make_strategy("rl", 0, max_epochs=1)
    study = optuna.create_study(sampler=s.sampler)
    study.optimize(_small, n_trials=8)
    own = [t for t in study.trials if policy_sampled(t)]
    assert 0 < len(own) < 8
    assert set(study.user_attrs[STATE_KEY]["used"]) <= {t.number for t in own}
