"""Search strategies as Optuna samplers, on a small deterministic objective."""

import numpy as np
import optuna
import pytest

from edgekd.errors import ConfigError
from edgekd.pipeline.strategies import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

DECISIONS = {f"d{i}": tuple(range(5)) for i in range(8)}
TARGET = {f"d{i}": (3 * i) % 5 for i in range(8)}


def _objective(trial: optuna.Trial) -> float:
    """How many decisions match a hidden target: one-step improvements exist from anywhere."""
    params = {name: trial.suggest_categorical(name, values) for name, values in DECISIONS.items()}
    return float(sum(params[k] == v for k, v in TARGET.items()))


def _best_after(strategy: str, seed: int, n: int) -> list[float]:
    study = optuna.create_study(direction="maximize", sampler=make_sampler(strategy, seed))
    study.optimize(_objective, n_trials=n)
    values = [t.value for t in study.trials]
    return list(np.maximum.accumulate(values))


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_every_strategy_improves_over_its_first_trials(strategy):
    curves = np.array([_best_after(strategy, seed, 120) for seed in range(8)])
    assert curves[:, -1].mean() > curves[:, 9].mean() + 1


def test_evolution_beats_random_search_at_the_same_budget():
    evo = np.mean([_best_after("evolution", seed, 120)[-1] for seed in range(8)])
    rnd = np.mean([_best_after("random", seed, 120)[-1] for seed in range(8)])
    assert evo > rnd + 0.5


def test_evolution_children_differ_from_a_population_member_by_one_decision():
    study = optuna.create_study(direction="maximize", sampler=make_sampler("evolution", 0))
    study.optimize(_objective, n_trials=30)
    trials = study.trials
    for child in trials[10:]:
        population = trials[max(0, child.number - 10) : child.number]
        distances = [sum(child.params[k] != p.params[k] for k in DECISIONS) for p in population]
        assert min(distances) == 1


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="evolution"):
        make_sampler("annealing", 0)
