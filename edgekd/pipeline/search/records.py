"""What a search found, as records: trials.json, best.json, pareto.json, the Pareto plot and the live leaderboard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial
from rich.table import Table

from edgekd.core.arch import ArchSpec
from edgekd.core.config import KDConfig, read_json, write_json
from edgekd.core.errors import ConfigError, RunStateError
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search.storage import FINISHED


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


def best_line(records: list[dict[str, Any]]) -> str:
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


def read_records(out_dir: Path) -> list[dict[str, Any]]:
    """The finished trials a search wrote (trials.json); RunStateError when there is no finished search."""
    path = out_dir / "trials.json"
    if not path.is_file():
        raise RunStateError(f"no finished search at {out_dir} ({path.name} is missing); run `edgekd search` first")
    records = read_json(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) and "state" in r for r in records):
        raise RunStateError(f"{path} does not hold search trials")
    return records


def read_reward(out_dir: Path) -> Reward:
    """The reward the search in ``out_dir`` was run with (reward.json)."""
    return Reward(**read_json(out_dir / "reward.json"))


def read_result(out_dir: Path) -> SearchResult:
    """What the search in ``out_dir`` found, as ``edgekd search`` left it (best.json and trials.json)."""
    best_path = out_dir / "best.json"
    if not best_path.is_file():
        raise RunStateError(f"no search result at {best_path}; run `edgekd search` first")
    best = read_json(best_path)
    try:  # what distillation reads of it
        ArchSpec.from_dict(best["arch"])
        KDConfig(**best["kd"])
    except (TypeError, KeyError, ValueError, ConfigError) as exc:
        raise RunStateError(f"{best_path} is not a search result ({type(exc).__name__}: {exc})") from None
    records = read_records(out_dir)
    return SearchResult(best=best, pareto=pareto_front(_complete(records)), n_trials=len(records))


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
