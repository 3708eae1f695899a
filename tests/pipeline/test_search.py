import json
import logging
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from edgekd.core.config import KDConfig, TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.data import load_data
from edgekd.evaluators.proxy import KDProxyEvaluator
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search.objective import KD_ALPHAS, KD_TAUS, eval_key, search
from edgekd.pipeline.search.records import pareto_front
from edgekd.pipeline.search.storage import open_storage, open_study, storage_url
from edgekd.spaces import RestrictedSpace, make_space


class CountingEvaluator:
    """The real KD proxy evaluator, counting calls and optionally interrupted (Ctrl-C) at call ``stop_at``."""

    def __init__(self, inner, stop_at=None):
        self.inner, self.stop_at, self.specs = inner, stop_at, []
        self.budget = inner.budget

    def evaluate(self, spec, report=None, kd=None):
        self.specs.append(spec.id)
        if len(self.specs) == self.stop_at:
            raise KeyboardInterrupt
        return self.inner.evaluate(spec, report, kd)


@pytest.fixture
def setup(tmp_path, median_device, tiny_config):
    data = load_data("synthetic", resolution=8)
    space = make_space("mnas", 8, 3, 10, width=0.25)
    proxy = KDProxyEvaluator(data, None, TrainConfig(epochs=1), KDConfig(alpha=0.0))
    latency = MeasuredLatency(median_device, tmp_path / "lat.sqlite")
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
        assert {"acc", "latency_ms", "mmacs", "mparams", "arch_id", "arch", "reward", "kd", "acc_curve"} <= set(t)
        assert t["reward"] == pytest.approx(reward(t["acc"], t))
    best = json.loads((out / "best.json").read_text())
    assert best["reward"] == max(t["reward"] for t in trials)
    assert json.loads((out / "pareto.json").read_text()) == pareto_front(trials)
    assert (out / "pareto.png").stat().st_size > 0


def test_ctrl_c_loses_no_finished_trial_and_the_same_call_resumes(setup):
    cfg, space, proxy, latency, reward, out = setup
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 3})})
    first = CountingEvaluator(proxy, stop_at=3)
    logged = logging.Handler()
    logged.emit = (records := []).append
    logging.getLogger("optuna").addHandler(logged)
    try:
        with pytest.raises(KeyboardInterrupt):
            search(cfg, space, first, latency, reward, out)
    finally:
        logging.getLogger("optuna").removeHandler(logged)
    assert _states(out) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    # Ctrl-C is reported once, by the command, not also as a failed trial with its traceback
    assert not [r for r in records if r.exc_info and r.exc_info[0] is KeyboardInterrupt]

    again = CountingEvaluator(proxy)
    result = search(cfg, space, again, latency, reward, out)
    assert result.n_trials == 3
    assert len(again.specs) == 1  # only the missing trial is trained
    assert again.specs[0] not in first.specs[:2]  # the resumed sampler does not replay earlier draws


@pytest.mark.parametrize(("strategy", "trials", "stop_at"), [
    ("random", 4, 2), ("evolution", 4, 2), pytest.param("gp", 7, 6, marks=pytest.mark.slow)])
def test_a_seeded_search_interrupted_and_resumed_draws_what_an_uninterrupted_one_does(setup, strategy, trials,
                                                                                        stop_at):
    # gp: interrupted at its first model-based proposal (after 5 random ones), which the resumed search redraws
    cfg, space, proxy, latency, reward, out = setup
    cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": trials, "strategy": strategy})})
    straight = CountingEvaluator(proxy)
    search(cfg, space, straight, latency, reward, out.with_name("straight"))
    with pytest.raises(KeyboardInterrupt):
        search(cfg, space, CountingEvaluator(proxy, stop_at=stop_at), latency, reward, out)
    search(cfg, space, CountingEvaluator(proxy), latency, reward, out)

    def complete(where):
        study = optuna.load_study(study_name="tiny", storage=storage_url(where))
        return [t.params for t in study.get_trials() if t.state == TrialState.COMPLETE]

    assert complete(out) == complete(out.with_name("straight")) and len(complete(out)) == trials


def test_a_killed_worker_s_running_trial_is_failed_and_retried(setup):
    cfg, space, proxy, latency, reward, out = setup
    search(cfg, space, proxy, latency, reward, out)  # 2 complete trials
    study = optuna.load_study(study_name="tiny", storage=storage_url(out))
    orphan = study.ask()  # what a process killed mid-trial leaves behind: RUNNING forever
    orphan_choices = {k: orphan.suggest_categorical(k, v) for k, v in space.choices.items()}
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{int(dead.stdout)}")

    grown = cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 3})})
    again = CountingEvaluator(proxy)
    search(grown, space, again, latency, reward, out)
    assert _states(out) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert again.specs == [space.decode(orphan_choices).id]


def test_a_trial_whose_process_died_before_owning_it_is_failed_and_retried(setup, monkeypatch):
    cfg, space, proxy, latency, reward, out = setup
    search(cfg, space, proxy, latency, reward, out)
    study = optuna.load_study(study_name="tiny", storage=storage_url(out))
    orphan = study.ask()  # killed between creating the trial and its first instant: no owner, no heartbeat
    choices = {k: orphan.suggest_categorical(k, v) for k, v in space.choices.items()}
    monkeypatch.setattr("edgekd.pipeline.search.storage.ORPHAN_AGE_S", 0.0)  # instead of waiting the grace period
    grown = cfg.model_copy(update={"search": cfg.search.model_copy(update={"trials": 3})})
    again = CountingEvaluator(proxy)
    search(grown, space, again, latency, reward, out)
    assert _states(out) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert again.specs == [space.decode(choices).id]


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


def _with(cfg, **search):
    return cfg.model_copy(update={"search": cfg.search.model_copy(update=search)})


def test_a_candidate_already_evaluated_is_reused_not_trained_again(setup):
    cfg, space, proxy, latency, reward, out = setup
    free = "s3_width"
    small = RestrictedSpace(space, {k: v[0] for k, v in space.choices.items() if k != free})  # 3 candidates
    counting = CountingEvaluator(proxy)
    search(_with(cfg, trials=8), small, counting, latency, reward, out)
    trials = json.loads((out / "trials.json").read_text())
    assert len(counting.specs) == len(set(counting.specs)) == len({t["arch_id"] for t in trials}) <= 3
    reused = [t for t in trials if "reused_from" in t]
    assert len(reused) == 8 - len(counting.specs)
    by_number = {t["trial"]: t for t in trials}
    for t in reused:
        assert t["acc_curve"] == by_number[t["reused_from"]]["acc_curve"] and t["acc"] == t["acc_curve"][-1]


class KDRecordingEvaluator(CountingEvaluator):
    def evaluate(self, spec, report=None, kd=None):
        self.kds = [*getattr(self, "kds", []), kd]
        return super().evaluate(spec, report, kd)


def test_search_kd_makes_temperature_and_weight_decisions_of_every_trial(setup):
    cfg, space, proxy, latency, reward, out = setup
    recording = KDRecordingEvaluator(proxy)
    result = search(_with(cfg, trials=3, search_kd=True), space, recording, latency, reward, out)
    study = optuna.load_study(study_name="tiny", storage=storage_url(out))
    for t, kd in zip(study.trials, recording.kds, strict=True):
        assert t.params["kd_tau"] in KD_TAUS and t.params["kd_alpha"] in KD_ALPHAS
        assert (kd.tau, kd.alpha) == (t.params["kd_tau"], t.params["kd_alpha"]) == tuple(t.user_attrs["kd"].values())
    best = study.trials[result.best["trial"]]
    assert result.best_kd == KDConfig(tau=best.params["kd_tau"], alpha=best.params["kd_alpha"])
    assert "kd_tau" not in result.best["choices"]  # choices stay the architecture's


def test_hard_label_search_trains_candidates_without_the_teacher(setup):
    cfg, space, proxy, latency, reward, out = setup
    recording = KDRecordingEvaluator(proxy)
    search(_with(cfg, trials=2, reward_training="ce"), space, recording, latency, reward, out)
    assert [kd.alpha for kd in recording.kds] == [0.0, 0.0]
    assert eval_key(_with(cfg, reward_training="ce"), "a", KDConfig(alpha=0)) != eval_key(cfg, "a", KDConfig())


def test_bohb_search_prunes_candidates_between_epochs(setup):
    cfg, space, proxy, latency, reward, out = setup
    two = KDProxyEvaluator(proxy.data, None, TrainConfig(epochs=2), KDConfig(alpha=0.0))
    cfg = _with(cfg, trials=8, strategy="bohb", proxy=TrainConfig(epochs=2))
    result = search(cfg, space, two, latency, reward, out)
    trials = json.loads((out / "trials.json").read_text())
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert result.n_trials == 8 and pruned
    assert all(t["epochs"] == len(t["acc_curve"]) == 1 for t in pruned)
    assert all(t["epochs"] == 2 for t in trials if t["state"] == "complete")
    assert result.best["state"] == "complete"


def test_a_storage_that_cannot_be_opened_is_a_clear_error_without_its_password(free_port):
    with pytest.raises(ConfigError, match=r"postgresql://edgekd:\*\*\*@127\.0\.0\.1.*cannot be opened") as exc:
        open_storage(f"postgresql://edgekd:secret@127.0.0.1:{free_port}/studies")
    assert "secret" not in str(exc.value)


def test_a_study_refuses_a_worker_with_other_settings(setup):
    cfg, space, proxy, latency, reward, out = setup
    search(cfg, space, proxy, latency, reward, out)
    with pytest.raises(ConfigError, match="reward_training"):
        search(_with(cfg, reward_training="ce"), space, proxy, latency, reward, out)
    with pytest.raises(ConfigError, match="need one target"):  # e.g. one derived from its own teacher timing
        search(cfg, space, proxy, latency, Reward(reward.target * 1.01, reward.metric), out)


def test_opening_the_run_s_own_study_fails_a_running_trial_whose_worker_never_named_itself(setup):
    cfg, _, _, _, reward, out = setup
    stale = open_study(cfg, out, reward).ask()  # created; its process stopped before the objective named it
    # a --jobs worker may not fail it: it could be a sibling's trial a moment before the sibling names itself
    assert open_study(cfg, out, reward, worker=1).get_trials(states=(TrialState.RUNNING,))
    # the run's own opening, before any worker starts, knows it is dead: failed and queued again at once (it used to
    # count as a trial in hand for two minutes, so a search resumed meanwhile stopped one trial short)
    trials = open_study(cfg, out, reward).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].number == stale.number
