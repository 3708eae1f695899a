"""The search's Optuna study: its storage (SQLite in the run directory, or a shared RDB URL), its identity
(the settings every worker must share), heartbeats, and the recovery of trials whose worker died."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from edgekd.core.config import MASK, RunConfig, mask_url
from edgekd.core.errors import ConfigError
from edgekd.core.scratch import alive
from edgekd.pipeline.reward import Reward
from edgekd.strategies import TrialSeededSampler, make_strategy

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").propagate = False
# Ctrl-C is reported once, by the command; Optuna would also log the interrupted trial as failed, with a traceback
logging.getLogger("optuna.study._optimize").addFilter(
    lambda record: not (record.exc_info and record.exc_info[0] is KeyboardInterrupt))


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
IN_HAND = (*FINISHED, TrialState.RUNNING)
"""Trials that count toward ``--trials``: finished, or being evaluated by a worker."""


HEARTBEAT_S, GRACE_S, MAX_RETRY = 20, 120, 3
ORPHAN_AGE_S = GRACE_S
"""A RUNNING trial with no owner (its process died right after creating it) is failed once this old."""


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
        **_space_file(cfg.search.space),
    }


def _space_file(space: str) -> dict[str, str]:
    """A space file's content digest: an edited file is another space, though its path is the same."""
    path = Path(space).expanduser()
    return {"space_sha256": hashlib.sha256(path.read_bytes()).hexdigest()} if path.is_file() else {}


def open_study(cfg: RunConfig, out_dir: Path, reward: Reward, worker: int = 0) -> optuna.Study:
    """Create or load the run's study, checking that it was made with the same settings and ``reward`` (target
    included: a worker with another target cannot join), and give it the
    strategy's sampler, seeded per trial (a resumed search draws what an uninterrupted one would; each
    ``worker`` of a study has seeds of its own)."""
    name, s = cfg.search.study or cfg.name, cfg.search
    strategy = make_strategy(s.strategy, cfg.seed, s.proxy.epochs)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=open_storage(s.storage or storage_url(out_dir)),
                                directions=list(strategy.directions), pruner=strategy.pruner, load_if_exists=True)
    settings = json.loads(json.dumps(study_settings(cfg) | {"reward": _identity(reward)}))
    saved = study.user_attrs.get("settings")
    if saved is not None and "reward" not in saved:  # made before the reward was part of a study's identity
        saved = saved | {"reward": settings["reward"]}
        study.set_user_attr("settings", saved)
    if saved is None:
        study.set_user_attr("settings", settings)
    elif saved != settings:
        diffs = ", ".join(f"{k}: study {saved.get(k)!r}, here {v!r}" for k, v in settings.items() if saved.get(k) != v)
        hint = (" (the workers of one study need one target: give them the same --target-ms or --target-mmacs)"
                if saved.get("reward") != settings["reward"] else "")
        raise ConfigError(f"study {name!r} was made with other settings ({diffs}){hint}")
    if worker == 0 and s.storage is None:
        # the run's own study, opened before any of its workers starts: every RUNNING trial is a dead one, even one
        # whose worker was stopped before it could name itself (else counted as in hand for ORPHAN_AGE_S)
        recover_dead_local_trials(study, unowned_age_s=0.0)
    study.sampler = TrialSeededSampler(lambda seed: make_strategy(s.strategy, seed, s.proxy.epochs).sampler,
                                       cfg.seed + 7919 * worker)
    return study


def worker_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _orphaned(t: FrozenTrial, host: str, unowned_age_s: float) -> bool:
    """Whether RUNNING trial ``t`` has no living owner: its process on this host is dead, or it has no owner at
    all (its process died between creating it and its first instant, before any heartbeat) and is older than
    ``unowned_age_s``."""
    owner = t.user_attrs.get("worker")
    if owner is None:
        started = t.datetime_start
        return started is not None and (datetime.now() - started).total_seconds() >= unowned_age_s
    owner_host, _, pid = owner.rpartition(":")
    return owner_host == host and not alive(int(pid))


def recover_dead_local_trials(study: optuna.Study, unowned_age_s: float = ORPHAN_AGE_S) -> int:
    """Fail and requeue the RUNNING trials of dead processes on this host (without waiting for the heartbeat's
    grace period, which covers other machines) and those that never had an owner (once ``unowned_age_s`` old: a
    live worker names itself moments after creating its trial); returns how many."""
    host, retried = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _orphaned(t, host, unowned_age_s):
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # it finished (or another process failed it) meanwhile
            continue
        _retry()(study, study._storage.get_trial(t._trial_id))
        retried += 1
    return retried


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _identity(reward: Reward) -> dict[str, float | str]:
    """The reward as a study records it; the target rounded to 6 significant digits (a measured teacher latency
    read back from JSON compares equal)."""
    return reward.describe() | {"target": float(f"{reward.target:.6g}")}
