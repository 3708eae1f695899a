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
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from edgekd.config import MASK, KDConfig, RunConfig, mask_url, write_json
from edgekd.errors import ConfigError
from edgekd.latency_models import LatencyModel
from edgekd.latency_models.flops import spec_macs_params
from edgekd.pipeline.arch import ArchSpec
from edgekd.pipeline.evaluator import Evaluator
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.space import SearchSpace
from edgekd.pipeline.strategies import TrialSeededSampler, make_strategy
from edgekd.pipeline.strategies.distinct import whole_study
from edgekd.scratch import alive
from edgekd.ui import console, progress

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").propagate = False

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_HAND = (*FINISHED, TrialState.RUNNING)
"""Trials that count toward ``--trials``: finished, or being evaluated by a worker."""


class SurplusTrial(Exception):
    """A trial created after the study already held ``--trials`` finished or running ones (two workers asked at
    the same moment): it is failed unevaluated, so that exactly ``--trials`` finish."""
KD_TAUS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
KD_ALPHAS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
"""The KD settings searched with ``search_kd``: AutoKD's ranges, temperature 1..10 and weight 0..1."""
HEARTBEAT_S, GRACE_S, MAX_RETRY = 20, 120, 3
ORPHAN_AGE_S = GRACE_S
"""A RUNNING trial with no owner (its process died right after creating it) is failed once this old."""
EVALUATION_SETTINGS = ("data", "resolution", "mini_val_fraction", "seed", "teacher", "teacher_weights", "proxy",
                       "evaluator", "oneshot", "augment")
"""The study settings an evaluation's result depends on (besides the architecture and its KD settings)."""


@dataclass
class SearchResult:
    best: dict[str, Any]
    pareto: list[dict[str, Any]]
    n_trials: int

    @property
    def best_arch(self) -> ArchSpec:
        return ArchSpec.from_dict(self.best["arch"])

    @property
    def best_kd(self) -> KDConfig:
        return KDConfig(**self.best["kd"])


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def check_storage(url: str) -> None:
    """ConfigError unless ``url`` names a database SQLAlchemy knows, with its driver installed (nothing connects)."""
    try:
        sqlalchemy.create_engine(url).dispose()
    except (sqlalchemy.exc.ArgumentError, ImportError) as exc:
        hint = " (PostgreSQL: pip install 'edgekd[postgres]')" if isinstance(exc, ImportError) else ""
        raise ConfigError(f"study storage {mask_url(url)} cannot be used: {exc}{hint}") from None


def _with_password(url: str) -> str:
    """``url`` as given, or, for a URL read back from a run's config (its password masked there), the URL without
    a password: PostgreSQL's client then takes it from PGPASSWORD or ~/.pgpass."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.password != MASK:
        return url
    if not (os.environ.get("PGPASSWORD") or Path("~/.pgpass").expanduser().is_file()):
        raise ConfigError(f"study storage {mask_url(url)}: run files keep no passwords; pass --storage with the "
                          "password again, or set PGPASSWORD (or ~/.pgpass)")
    return parsed.set(password=None).render_as_string(hide_password=False)


def open_storage(url: str) -> RDBStorage:
    """``url`` with heartbeats: a worker silent for GRACE_S has its trial failed and retried by the others."""
    check_storage(url)
    url = _with_password(url)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are "experimental" since Optuna 2.8
        try:
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=_retry())
        except sqlalchemy.exc.OperationalError as exc:
            raise ConfigError(f"study storage {mask_url(url)} cannot be opened: {exc.orig}") from None


def _retry() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def study_settings(cfg: RunConfig) -> dict[str, Any]:
    """What every worker of a study must share: it decides what a trial's result means."""
    return {
        "data": cfg.data, "resolution": cfg.resolution, "mini_val_fraction": cfg.mini_val_fraction,
        "seed": cfg.seed, "teacher": cfg.teacher, "teacher_weights": cfg.teacher_weights,
        "space": cfg.search.space, "space_width": cfg.search.space_width, "strategy": cfg.search.strategy,
        "proxy": cfg.search.proxy.model_dump(), "kd": cfg.kd.model_dump(), "search_kd": cfg.search.search_kd,
        "reward_training": cfg.search.reward_training, "device": cfg.device, "evaluator": cfg.search.evaluator,
        "oneshot": cfg.search.oneshot.model_dump() if cfg.search.evaluator != "proxy" else None,
        # Recorded only when on, so that studies made before augmentation existed keep their identity.
        **({"augment": cfg.augment} if cfg.augment != "none" else {}),
    }


def open_study(cfg: RunConfig, out_dir: Path, worker: int = 0) -> optuna.Study:
    """Create or load the run's study, checking that it was made with the same settings, and give it the
    strategy's sampler, seeded per trial (a resumed search draws what an uninterrupted one would; each
    ``worker`` of a study has seeds of its own)."""
    name, s = cfg.search.study or cfg.name, cfg.search
    strategy = make_strategy(s.strategy, cfg.seed, s.proxy.epochs)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=open_storage(s.storage or storage_url(out_dir)),
                                directions=list(strategy.directions), pruner=strategy.pruner, load_if_exists=True)
    settings = json.loads(json.dumps(study_settings(cfg)))
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", settings)
    elif saved != settings:
        diffs = ", ".join(f"{k}: study {saved.get(k)!r}, here {v!r}" for k, v in settings.items() if saved.get(k) != v)
        raise ConfigError(f"study {name!r} was made with other settings ({diffs})")
    study.sampler = TrialSeededSampler(lambda seed: make_strategy(s.strategy, seed, s.proxy.epochs).sampler,
                                       cfg.seed + 7919 * worker)
    return study


def _worker_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _orphaned(t: FrozenTrial, host: str) -> bool:
    """Whether RUNNING trial ``t`` has no living owner: its process on this host is dead, or it has no owner at
    all (its process died between creating it and its first instant, before any heartbeat) and is older than the
    heartbeat's grace period."""
    owner = t.user_attrs.get("worker")
    if owner is None:
        started = t.datetime_start
        return started is not None and (datetime.now() - started).total_seconds() > ORPHAN_AGE_S
    owner_host, _, pid = owner.rpartition(":")
    return owner_host == host and not alive(int(pid))


def recover_dead_local_trials(study: optuna.Study) -> int:
    """Fail and requeue the RUNNING trials of dead processes on this host (without waiting for the heartbeat's
    grace period, which covers other machines) and those that never had an owner; returns how many."""
    host, retried = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _orphaned(t, host):
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # it finished (or another process failed it) meanwhile
            continue
        _retry()(study, study._storage.get_trial(t._trial_id))
        retried += 1
    return retried


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
        trial.set_user_attr("worker", _worker_tag())
        study = whole_study(trial.study)
        ahead = sum(1 for t in study.get_trials(deepcopy=False, states=IN_HAND) if t.number < trial.number)
        if ahead >= self.cfg.search.trials:
            trial.set_user_attr("surplus", True)
            study.stop()
            raise SurplusTrial(f"trial {trial.number}: the study holds {ahead} trials already")
        spec = self.space.decode({n: trial.suggest_categorical(n, v) for n, v in self.space.choices.items()})
        kd = self.kd_of(trial)
        mmacs, mparams = spec_macs_params(spec)
        metrics = {"latency_ms": self.latency.latency_ms(spec), "mmacs": mmacs, "mparams": mparams}
        key = eval_key(self.cfg, spec.id, kd)
        attrs: dict[str, Any] = {**metrics, "arch_id": spec.id, "arch": spec.to_dict(), "kd": kd.model_dump(),
                                 "eval_key": key}
        pareto = len(trial.study.directions) == 2
        curve: list[float] = []

        def report(epoch: int, acc: float) -> None:
            if epoch <= len(curve):  # replayed from an earlier evaluation already
                return
            curve.append(acc)
            value = self.reward(acc, metrics)
            self._store(trial, attrs | {"acc": acc, "reward": value, "acc_curve": curve, "epochs": epoch})
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


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


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
    study = open_study(cfg, out_dir)
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
    bar(advance=advance, info=_best_line(records), table=leaderboard(records))


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


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    """What a finished trial stored: its number, state, metrics, KD settings, choices and architecture."""
    choices = {k: v for k, v in t.params.items() if not k.startswith("kd_")}
    return {"trial": t.number, "state": t.state.name.lower(), **t.user_attrs, "choices": choices}


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records not dominated in (higher accuracy, lower latency), sorted by latency."""
    front = [
        r for r in records
        if not any(
            o["acc"] >= r["acc"] and o["latency_ms"] <= r["latency_ms"]
            and (o["acc"] > r["acc"] or o["latency_ms"] < r["latency_ms"])
            for o in records
        )
    ]
    return sorted(front, key=lambda r: r["latency_ms"])


def _complete(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["state"] == "complete"]


def _best_line(records: list[dict[str, Any]]) -> str:
    complete = _complete(records)
    if not complete:
        return ""
    b = max(complete, key=lambda r: r["reward"])
    return f"best reward {b['reward']:.4f} (acc {b['acc']:.3f}, {b['latency_ms']:.3f} ms)"


def leaderboard(records: list[dict[str, Any]], top: int = 5) -> Table:
    """The best complete trials by reward, as a table for the live display."""
    table = Table(title="best trials", title_justify="left")
    for column in ("trial", "reward", "mini-val acc", "latency ms", "MMACs", "KD tau/alpha", "arch"):
        table.add_column(column, justify="right")
    for r in sorted(_complete(records), key=lambda r: -r["reward"])[:top]:
        table.add_row(str(r["trial"]), f"{r['reward']:.4f}", f"{r['acc']:.4f}", f"{r['latency_ms']:.4f}",
                      f"{r['mmacs']:.2f}", f"{r['kd']['tau']:g}/{r['kd']['alpha']:g}", r["arch_id"][:10])
    return table


def write_results(study: optuna.Study, out_dir: Path, reward: Reward) -> list[dict[str, Any]]:
    """Write trials.json, and from the complete trials best.json, pareto.json and pareto.png; returns the
    records of all finished trials."""
    records = [trial_record(t) for t in study.get_trials(deepcopy=False, states=FINISHED)]
    write_json(out_dir / "trials.json", records)
    complete = _complete(records)
    if complete:
        best = max(complete, key=lambda r: r["reward"])
        front = pareto_front(complete)
        write_json(out_dir / "best.json", best)
        write_json(out_dir / "pareto.json", front)
        _plot(complete, front, best, reward, out_dir / "pareto.png")
    return records


def result_of(records: list[dict[str, Any]]) -> SearchResult:
    complete = _complete(records)
    if not complete:
        raise ConfigError("the search finished no candidate (all were pruned); raise --trials")
    return SearchResult(best=max(complete, key=lambda r: r["reward"]), pareto=pareto_front(complete),
                        n_trials=len(records))


def _plot(records: list[dict], front: list[dict], best: dict, reward: Reward, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["latency_ms"] for r in records], [r["acc"] for r in records], s=12, alpha=0.5, label="trials")
    ax.plot([r["latency_ms"] for r in front], [r["acc"] for r in front], "o-", color="C1", label="Pareto front")
    ax.scatter([best["latency_ms"]], [best["acc"]], marker="*", s=200, color="C3", label="best reward", zorder=3)
    if reward.metric == "latency_ms":
        ax.axvline(reward.target, ls="--", color="grey", label=f"target {reward.target:.3g} ms")
    ax.set_xlabel("latency on device (ms)")
    ax.set_ylabel("KD proxy accuracy (mini-val)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
