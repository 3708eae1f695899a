"""KD-guided architecture search on an Optuna study (SQLite in the run directory, or a shared RDB URL).

Each trial: the strategy's sampler picks the space's categorical choices (and, with ``search_kd``, the KD
temperature and weight), the candidate's latency (device) and MACs are measured, the evaluator trains it on
mini-train and scores it on mini-val after every epoch (the strategy's pruner may stop it early), and the
MnasNet reward (or, for a Pareto strategy, accuracy and cost) is told to the study. Every finished trial is in
the storage before the next starts; re-running the same command resumes the study. Several processes or
machines may work on one study: Optuna's heartbeat fails the trials of a worker that died, and they are
retried; a candidate already evaluated (same architecture, KD settings, budget, data and seed) is not trained
again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial

from edgekd.core.arch import ArchSpec
from edgekd.core.config import KDConfig, RunConfig, write_json
from edgekd.core.ui import console, progress
from edgekd.evaluators import Evaluator
from edgekd.latency_models import LatencyModel
from edgekd.latency_models.flops import spec_macs_params
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search.records import SearchResult, best_line, leaderboard, result_of, write_results
from edgekd.pipeline.search.storage import (
    FINISHED,
    IN_HAND,
    finished,
    open_study,
    recover_dead_local_trials,
    study_settings,
    worker_tag,
)
from edgekd.spaces import SearchSpace
from edgekd.strategies.distinct import whole_study


class SurplusTrial(Exception):
    """A trial created after the study already held ``--trials`` finished or running ones (two workers asked at
    the same moment): it is failed unevaluated, so that exactly ``--trials`` finish."""


KD_TAUS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
KD_ALPHAS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
"""The KD settings searched with ``search_kd``: AutoKD's ranges, temperature 1..10 and weight 0..1."""


EVALUATION_SETTINGS = ("data", "resolution", "mini_val_fraction", "seed", "teacher", "teacher_weights", "proxy",
                       "evaluator", "oneshot", "augment")
"""The study settings an evaluation's result depends on (besides the architecture and its KD settings)."""


def eval_key(cfg: RunConfig, arch_id: str, kd: KDConfig) -> str:
    """What makes two evaluations the same: architecture, KD settings, budget, data, teacher and seed."""
    settings = study_settings(cfg)
    basis = {"arch": arch_id, "kd": kd.model_dump(), **{k: settings[k] for k in EVALUATION_SETTINGS if k in settings}}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


class TrialObjective:
    """One trial: measure the candidate, proxy-train it (or reuse an earlier evaluation), store everything."""

    def __init__(self, cfg: RunConfig, space: SearchSpace, evaluator: Evaluator, latency: LatencyModel,
                 reward: Reward) -> None:
        self.cfg, self.space, self.evaluator, self.latency, self.reward = cfg, space, evaluator, latency, reward
        self.epochs = evaluator.budget
        self.trained = 0
        """Candidates this process trained (reused evaluations are not counted)."""

    def kd_of(self, trial: optuna.Trial) -> KDConfig:
        s = self.cfg.search
        if s.search_kd:
            return KDConfig(tau=trial.suggest_categorical("kd_tau", KD_TAUS),
                            alpha=trial.suggest_categorical("kd_alpha", KD_ALPHAS))
        return KDConfig(tau=self.cfg.kd.tau, alpha=0.0) if s.reward_training == "ce" else self.cfg.kd

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        trial.set_user_attr("worker", worker_tag())
        study = whole_study(trial.study)
        ahead = sum(1 for t in study.get_trials(deepcopy=False, states=IN_HAND) if t.number < trial.number)
        if ahead >= self.cfg.search.trials:
            trial.set_user_attr("surplus", True)
            study.stop()
            raise SurplusTrial(f"trial {trial.number}: the study holds {ahead} trials already")
        spec = self.space.decode({n: trial.suggest_categorical(n, v) for n, v in self.space.choices.items()})
        kd = self.kd_of(trial)
        mmacs, mparams = spec_macs_params(spec)
        latency = self._latency(spec)
        metrics = {"latency_ms": latency.pop("latency_ms"), "mmacs": mmacs, "mparams": mparams}
        key = eval_key(self.cfg, spec.id, kd)
        attrs: dict[str, Any] = {**metrics, **latency, "arch_id": spec.id, "arch": spec.to_dict(),
                                 "kd": kd.model_dump(), "eval_key": key}
        pareto = len(trial.study.directions) == 2
        curve: list[float] = []

        def report(epoch: int, acc: float) -> None:
            if epoch <= len(curve):  # replayed from an earlier evaluation already
                return
            curve.append(acc)
            value = self.reward(acc, metrics)
            interval = {}
            if "latency_low_ms" in attrs and self.reward.metric == "latency_ms":
                interval["reward_interval"] = [self.reward(acc, metrics | {"latency_ms": attrs[f"latency_{end}_ms"]})
                                               for end in ("high", "low")]
            self._store(trial, attrs | interval | {"acc": acc, "reward": value, "acc_curve": curve, "epochs": epoch})
            if pareto:  # Optuna's pruners work on single-objective studies only
                return
            trial.report(value, epoch)
            if epoch < self.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"reward {value:.4f} after {epoch} epoch(s)")

        earlier = self._earlier_curve(trial.study, key)
        if earlier:
            attrs["reused_from"] = earlier[0]
        for epoch, acc in enumerate(earlier[1] if earlier else [], 1):
            report(epoch, acc)
        if len(curve) < self.epochs:
            self.trained += 1
            self.evaluator.evaluate(spec, report=report, kd=kd)
        acc = curve[-1]
        return (acc, metrics[self.reward.metric]) if pareto else self.reward(acc, metrics)

    def _latency(self, spec: ArchSpec) -> dict[str, Any]:
        """``latency_ms`` of ``spec`` and, when measured with an interval, the interval; a measurement whose
        interval straddles the latency target is measured again to half the precision before the reward uses it
        (``remeasured``)."""
        if not isinstance(self.latency, MeasuredLatency):
            return {"latency_ms": self.latency.latency_ms(spec)}
        m, out = self.latency.measure(spec), {}
        if self.reward.metric == "latency_ms" and m.straddles(self.reward.target):
            m = self.latency.remeasure([spec], self.latency.protocol.precision / 2,
                                       2 * self.latency.protocol.budget_s)[0]
            out["remeasured"] = True
        if m.low_ms is not None and m.high_ms is not None:
            out |= {"latency_low_ms": m.low_ms, "latency_high_ms": m.high_ms}
        return out | {"latency_ms": m.median_ms}

    @staticmethod
    def _store(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    @staticmethod
    def _earlier_curve(study: optuna.Study, key: str) -> tuple[int, list[float]] | None:
        """The longest accuracy curve a finished trial recorded for ``key``, with its trial number."""
        found = [(t.number, t.user_attrs["acc_curve"]) for t in study.get_trials(deepcopy=False, states=FINISHED)
                 if t.user_attrs.get("eval_key") == key]
        return max(found, key=lambda f: len(f[1]), default=None)


def run_trials(study: optuna.Study, objective: TrialObjective, trials: int,
               on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
    """Run trials in this process until the study has ``trials`` finished (complete or pruned) ones.

    A worker stops once finished and running trials (its own and other workers') reach ``trials``, so several
    workers do not overshoot. After each trial, the trials of dead worker processes on this host are failed and
    queued again (and then run by whichever worker goes on)."""
    recover_dead_local_trials(study)
    if len(study.get_trials(deepcopy=False, states=IN_HAND)) >= trials:
        return
    callbacks = [lambda s, _t: recover_dead_local_trials(s), MaxTrialsCallback(trials, states=IN_HAND)]
    callbacks += [on_trial] if on_trial else []
    study.optimize(objective, callbacks=callbacks, gc_after_trial=False, catch=(SurplusTrial,))


def search(cfg: RunConfig, space: SearchSpace, evaluator: Evaluator, latency: LatencyModel, reward: Reward,
           out_dir: Path) -> SearchResult:
    """Run (or resume) the search of ``cfg`` in this process until ``cfg.search.trials`` trials are finished."""
    study = open_study(cfg, out_dir, reward)
    _begin(study, out_dir, reward)
    objective = TrialObjective(cfg, space, evaluator, latency, reward)
    with progress(f"search ({cfg.search.strategy})", cfg.search.trials, completed=finished(study)) as bar:
        run_trials(study, objective, cfg.search.trials, lambda s, _t: _refresh(bar, s, out_dir, reward))
    return result_of(write_results(study, out_dir, reward))


def _begin(study: optuna.Study, out_dir: Path, reward: Reward) -> None:
    retried = recover_dead_local_trials(study)
    if retried:
        console.print(f"resuming: {retried} interrupted trial(s) will be retried")
    write_json(out_dir / "reward.json", reward.describe())


def _refresh(bar: Callable[..., None], study: optuna.Study, out_dir: Path, reward: Reward, advance: int = 1) -> None:
    """Rewrite the results and show the best trials under the progress bar."""
    records = write_results(study, out_dir, reward)
    bar(advance=advance, info=best_line(records), table=leaderboard(records))


def watch_search(study: optuna.Study, cfg: RunConfig, reward: Reward, out_dir: Path, alive: Callable[[], bool],
                 poll_s: float = 1.0) -> list[dict[str, Any]]:
    """Show the progress of workers in other processes until none is ``alive``; returns the final records."""
    _begin(study, out_dir, reward)
    seen = finished(study)
    with progress(f"search ({cfg.search.strategy}, {cfg.search.jobs} workers)", cfg.search.trials,
                  completed=seen) as bar:
        while alive():
            time.sleep(poll_s)
            now = finished(study)
            if now > seen:
                _refresh(bar, study, out_dir, reward, advance=now - seen)
                seen = now
    return write_results(study, out_dir, reward)
