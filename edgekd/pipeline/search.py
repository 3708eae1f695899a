"""KD-guided architecture search on an Optuna study stored in the run directory.

Each trial: the strategy's sampler picks the space's categorical choices, the candidate's latency (device)
and MACs are measured, the evaluator trains it with distillation on mini-train and scores it on mini-val,
and the MnasNet reward is told to the study. Every finished trial is in SQLite before the next starts;
re-running the same command resumes the study (an interrupted trial is failed and retried).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from edgekd.config import RunConfig, write_json
from edgekd.latency_models import LatencyModel
from edgekd.latency_models.flops import count_macs_params
from edgekd.pipeline.arch import ArchSpec, build
from edgekd.pipeline.evaluator import Evaluator
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.space import SearchSpace
from edgekd.pipeline.strategies import directions, make_sampler
from edgekd.ui import console, progress

optuna.logging.set_verbosity(optuna.logging.WARNING)
logging.getLogger("optuna").propagate = False


@dataclass
class SearchResult:
    best: dict[str, Any]
    pareto: list[dict[str, Any]]
    n_trials: int

    @property
    def best_arch(self) -> ArchSpec:
        return ArchSpec.from_dict(self.best["arch"])


def storage_url(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def _recover_interrupted(study: optuna.Study) -> int:
    """Fail the trials a killed process left RUNNING and queue their choices again; returns how many."""
    retried = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # it finished (or another process failed it) meanwhile
            continue
        # Not skip_if_exists: the failed trial itself holds these params, so Optuna would skip the retry.
        study.enqueue_trial(t.params)
        retried += 1
    return retried


def trial_record(t: FrozenTrial) -> dict[str, Any]:
    """What a finished trial stored: its number, reward, metrics, choices and architecture."""
    return {"trial": t.number, "reward": _reward_of(t), **t.user_attrs, "choices": t.params}


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


def search(
    cfg: RunConfig,
    space: SearchSpace,
    evaluator: Evaluator,
    latency: LatencyModel,
    reward: Reward,
    out_dir: Path,
) -> SearchResult:
    """Run (or resume) the search of ``cfg`` until ``cfg.search.trials`` trials are complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage_url(out_dir)
    study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions(cfg.search.strategy),
                                load_if_exists=True)
    pareto = len(study.directions) == 2
    # A resumed sampler is seeded past the trials already drawn, so it does not replay them.
    study.sampler = make_sampler(cfg.search.strategy, cfg.seed + len(study.get_trials(deepcopy=False)))
    retried = _recover_interrupted(study)
    if retried:
        console.print(f"resuming: {retried} interrupted trial(s) will be retried")
    write_json(out_dir / "reward.json",
               {"target": reward.target, "metric": reward.metric, "constraint": reward.constraint})

    def complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    done = min(complete(), cfg.search.trials)
    with progress(f"search ({cfg.search.strategy})", cfg.search.trials, completed=done) as bar:
        while complete() < cfg.search.trials:
            trial = study.ask()
            try:
                record = _evaluate_trial(trial, space, evaluator, latency, reward)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            study.tell(trial, [record["acc"], record[reward.metric]] if pareto else record["reward"])
            best = max(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=_reward_of)
            acc, ms = best.user_attrs["acc"], best.user_attrs["latency_ms"]
            bar(info=f"best reward {_reward_of(best):.4f} (acc {acc:.3f}, {ms:.3f} ms)")
    return write_results(study, out_dir, reward)


def _evaluate_trial(
    trial: optuna.Trial, space: SearchSpace, evaluator: Evaluator, latency: LatencyModel, reward: Reward
) -> dict[str, Any]:
    choices = {name: trial.suggest_categorical(name, values) for name, values in space.choices.items()}
    spec = space.decode(choices)
    mmacs, mparams = count_macs_params(build(spec), spec.input_shape)
    metrics = {"latency_ms": latency.latency_ms(spec), "mmacs": mmacs, "mparams": mparams}
    # Per-epoch reports feed Optuna's pruners, which work on single-objective studies only.
    single = len(trial.study.directions) == 1
    acc = evaluator.evaluate(spec, report=(lambda epoch, acc: trial.report(acc, epoch)) if single else None)
    attrs = {"acc": acc, **metrics, "reward": reward(acc, metrics), "arch_id": spec.id, "arch": spec.to_dict()}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return attrs


def _reward_of(t: FrozenTrial) -> float:
    return t.user_attrs["reward"]


def write_results(study: optuna.Study, out_dir: Path, reward: Reward) -> SearchResult:
    """Write best.json, pareto.json, trials.json and pareto.png from the study's complete trials."""
    records = [trial_record(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = max(records, key=lambda r: r["reward"])
    front = pareto_front(records)
    write_json(out_dir / "best.json", best)
    write_json(out_dir / "pareto.json", front)
    write_json(out_dir / "trials.json", records)
    _plot(records, front, best, reward, out_dir / "pareto.png")
    return SearchResult(best=best, pareto=front, n_trials=len(records))


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
