"""AKD's "searched by x trained by" ablation (Table 5): the top students of two searches (typically one
KD-guided, one with hard labels), each trained once with hard labels and once with distillation from the
same teacher, scored on the held-out split.

Every (architecture, training) result is saved as it finishes, so an interrupted ablation resumes.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from edgekd.core.arch import ArchSpec, build
from edgekd.core.config import KDConfig, RunConfig, config_path, read_json, write_json
from edgekd.core.errors import ConfigError, RunStateError
from edgekd.core.ui import progress
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.opening import open_run
from edgekd.pipeline.search.records import read_records
from edgekd.pipeline.search.storage import study_settings
from edgekd.train import evaluate, train

SHARED = ("data", "resolution", "mini_val_fraction", "seed", "teacher", "teacher_weights")
"""Settings both searches must share for their students to be comparable."""
TRAININGS = ("hard labels", "distillation")


def top_students(run_dir: Path, k: int) -> list[dict[str, Any]]:
    """The ``k`` best complete trials of a finished search, one per architecture."""
    ranked = sorted((t for t in read_records(run_dir / "search") if t["state"] == "complete"),
                    key=lambda t: -t["reward"])
    top: dict[str, dict[str, Any]] = {}
    for t in ranked:
        top.setdefault(t["arch_id"], t)
    return list(top.values())[:k]


def _label(cfg: RunConfig) -> str:
    return "KD-guided" if cfg.search.reward_training == "kd" else "hard labels"


def ablate(run_dirs: list[Path], out_dir: Path, top: int = 3, epochs: int | None = None) -> dict[str, Any]:
    """Train the ``top`` students of each run with hard labels and with distillation; writes ablation.json
    and ablation.md to ``out_dir`` and returns the table."""
    missing = [str(d) for d in run_dirs if not config_path(d).is_file()]
    if missing:
        raise RunStateError(f"no run at {', '.join(missing)}: give the names of finished searches in the runs folder")
    cfgs = [RunConfig.model_validate(read_json(config_path(d))) for d in run_dirs]
    base = study_settings(cfgs[0])
    for d, cfg in zip(run_dirs[1:], cfgs[1:], strict=True):
        diffs = [k for k in SHARED if study_settings(cfg)[k] != base[k]]
        if diffs:
            raise ConfigError(f"{d} and {run_dirs[0]} differ in {diffs}; their students are not comparable")
    ctx = open_run(cfgs[0], run_dirs[0].parent)
    done_path = out_dir / "ablation.json"
    results: dict[str, Any] = read_json(done_path)["results"] if done_path.is_file() else {}
    jobs = [(d, cfg, t, training) for d, cfg in zip(run_dirs, cfgs, strict=True)
            for t in top_students(d, top) for training in TRAININGS]
    with progress("ablation", len(jobs), completed=sum(_key(*j) in results for j in jobs)) as bar:
        for job in jobs:
            if _key(*job) not in results:
                results[_key(*job)] = _train(ctx, *job, epochs)
                write_json(done_path, {"results": results})
                bar()
    table = {f"searched by {_label(cfg)} ({d.name})": {
        training: statistics.mean(results[_key(d, cfg, t, training)]["val_acc"] for t in top_students(d, top))
        for training in TRAININGS} for d, cfg in zip(run_dirs, cfgs, strict=True)}
    write_json(done_path, {"results": results, "table": table, "top": top,
                           "epochs": epochs or cfgs[0].distill.epochs})
    (out_dir / "ablation.md").write_text(_markdown(table, top))
    return table


def _key(run_dir: Path, cfg: RunConfig, trial: dict[str, Any], training: str) -> str:
    return f"{run_dir.name}/{trial['arch_id']}/{training}"


def _train(ctx: RunContext, run_dir: Path, cfg: RunConfig, trial: dict[str, Any], training: str,
           epochs: int | None) -> dict[str, Any]:
    spec = ArchSpec.from_dict(trial["arch"])
    kd = cfg.student_kd(KDConfig(**trial["kd"]))
    if training == "hard labels":
        kd = KDConfig(tau=kd.tau, alpha=0.0)
    train_cfg = ctx.cfg.distill.model_copy(update={"epochs": epochs}) if epochs else ctx.cfg.distill
    torch.manual_seed(ctx.cfg.seed)
    model = build(spec)
    rt = ctx.runtime
    history = train(model, ctx.data, train_cfg, kd, ctx.teacher_signal if kd.alpha > 0 else None, seed=ctx.cfg.seed,
                    evaluate=lambda m: evaluate(m, ctx.data, "val", rt.dist, rt.workers), runtime=rt)
    return {"run": run_dir.name, "trial": trial["trial"], "arch_id": spec.id, "training": training,
            "kd": kd.model_dump(), "val_acc": history[-1].eval_acc, "latency_ms": trial["latency_ms"],
            "search_reward": trial["reward"]}


def _markdown(table: dict[str, dict[str, float]], top: int) -> str:
    lines = [f"Held-out top-1 of each search's top {top} students (mean), by how they were trained:", "",
             "| searched by | " + " | ".join(f"trained by {t}" for t in TRAININGS) + " |",
             "| --- |" + " --- |" * len(TRAININGS)]
    lines += [f"| {row} | " + " | ".join(f"{accs[t] * 100:.2f}" for t in TRAININGS) + " |"
              for row, accs in table.items()]
    return "\n".join(lines) + "\n"
