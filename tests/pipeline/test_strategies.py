"""Search strategies as Optuna samplers, on a small deterministic objective."""

import numpy as np
import optuna
import pytest

from edgekd.errors import ConfigError
from edgekd.pipeline.strategies import directions, make_sampler

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
        study = optuna.create_study(directions=directions("nsga2"), sampler=make_sampler("nsga2", seed))
        study.optimize(_two_objectives, n_trials=100)
        values = [tuple(t.values) for t in study.trials]
        gains.append(_hypervolume(values) - _hypervolume(values[:10]))
    assert min(gains) > 0 and np.mean(gains) > 5
    assert directions("random") == ["maximize"]
