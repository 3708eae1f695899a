import json

import optuna
import pytest
from optuna.trial import TrialState

from edgekd.config import KDConfig, TrainConfig
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.data import load_data
from edgekd.pipeline.evaluator import KDProxyEvaluator
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search import pareto_front, search, storage_url
from edgekd.pipeline.space import make_space


class CountingEvaluator:
    """The real KD proxy evaluator, counting calls and optionally interrupted (Ctrl-C) at call ``stop_at``."""

    def __init__(self, inner, stop_at=None):
        self.inner, self.stop_at, self.specs = inner, stop_at, []

    def evaluate(self, spec, report=None):
        self.specs.append(spec.id)
        if len(self.specs) == self.stop_at:
            raise KeyboardInterrupt
        return self.inner.evaluate(spec, report)


@pytest.fixture
def setup(tmp_path, fast_device, tiny_config):
    data = load_data("synthetic", resolution=8)
    space = make_space("mnas", 8, 3, 10, width=0.25)
    proxy = KDProxyEvaluator(data, None, TrainConfig(epochs=1), KDConfig(alpha=0.0))
    latency = MeasuredLatency(fast_device, tmp_path / "lat.sqlite")
    return tiny_config, space, proxy, latency, Reward(1.0), tmp_path / "search"


def _states(out):
    study = optuna.load_study(study_name="tiny", storage=storage_url(out))
    return [t.state for t in study.get_trials()]


def test_search_writes_best_pareto_and_stores_metrics_with_every_trial(setup):
    cfg, space, proxy, latency, reward, out = setup
    result = search(cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 3})}),
                    space, proxy, latency, reward, out)
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 3 and result.n_trials == 3
    for t in trials:
        assert {"acc", "latency_ms", "mmacs", "mparams", "arch_id", "arch", "reward"} <= set(t)
        assert t["reward"] == pytest.approx(reward(t["acc"], t))
    best = json.loads((out / "best.json").read_text())
    assert best["reward"] == max(t["reward"] for t in trials)
    assert json.loads((out / "pareto.json").read_text()) == pareto_front(trials)
    assert (out / "pareto.png").stat().st_size > 0


def test_ctrl_c_loses_no_finished_trial_and_the_same_call_resumes(setup):
    cfg, space, proxy, latency, reward, out = setup
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 3})})
    first = CountingEvaluator(proxy, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        search(cfg, space, first, latency, reward, out)
    assert _states(out) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]

    again = CountingEvaluator(proxy)
    result = search(cfg, space, again, latency, reward, out)
    assert result.n_trials == 3
    assert len(again.specs) == 1  # only the missing trial is trained
    assert again.specs[0] not in first.specs[:2]  # the resumed sampler does not replay earlier draws


def test_a_killed_worker_s_running_trial_is_failed_and_retried(setup):
    cfg, space, proxy, latency, reward, out = setup
    search(cfg, space, proxy, latency, reward, out)  # 2 complete trials
    study = optuna.load_study(study_name="tiny", storage=storage_url(out))
    orphan = study.ask()  # what a process killed mid-trial leaves behind: RUNNING forever
    orphan_choices = {k: orphan.suggest_categorical(k, v) for k, v in space.choices.items()}

    grown = cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 3})})
    again = CountingEvaluator(proxy)
    search(grown, space, again, latency, reward, out)
    assert _states(out) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert again.specs == [space.decode(orphan_choices).id]


def test_pareto_front_keeps_only_non_dominated_points():
    recs = [{"acc": 0.9, "latency_ms": 2.0}, {"acc": 0.8, "latency_ms": 1.0}, {"acc": 0.7, "latency_ms": 1.5},
            {"acc": 0.9, "latency_ms": 3.0}]
    assert pareto_front(recs) == [recs[1], recs[0]]


def test_a_pareto_strategy_searches_accuracy_and_latency_and_still_reports_the_reward(setup):
    cfg, space, proxy, latency, reward, out = setup
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"strategy": "nsga2", "trials": 3})})
    result = search(cfg, space, proxy, latency, reward, out)
    study = optuna.load_study(study_name="tiny", storage=storage_url(out))
    assert len(study.directions) == 2
    for t in study.trials:
        assert t.values == [t.user_attrs["acc"], t.user_attrs["latency_ms"]]
    trials = json.loads((out / "trials.json").read_text())
    assert result.best["reward"] == max(t["reward"] for t in trials) == pytest.approx(
        reward(result.best["acc"], result.best))
