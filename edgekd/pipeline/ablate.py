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


def ablate(run_dirs: list[Path], out_dir: Path, top: int = 3, epochs: int | None = None,
           seeds: int = 1) -> dict[str, Any]:
    """Train the ``top`` students of each run with hard labels and with distillation, each with ``seeds``
    training seeds (the run's seed and the next ones); writes ablation.json and ablation.md to ``out_dir`` and
    returns the table (each cell: the mean over students and seeds)."""
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
    jobs = [(d, cfg, t, training, k) for d, cfg in zip(run_dirs, cfgs, strict=True)
            for t in top_students(d, top) for training in TRAININGS for k in range(seeds)]
    with progress("ablation", len(jobs), completed=sum(_key(*j) in results for j in jobs)) as bar:
        for job in jobs:
            if _key(*job) not in results:
                results[_key(*job)] = _train(ctx, *job, epochs)
                write_json(done_path, {"results": results})
                bar()
    samples = {f"searched by {_label(cfg)} ({d.name})": {
        training: [results[_key(d, cfg, t, training, k)]["val_acc"] for t in top_students(d, top)
                   for k in range(seeds)] for training in TRAININGS} for d, cfg in zip(run_dirs, cfgs, strict=True)}
    table = {row: {t: statistics.mean(accs) for t, accs in cells.items()} for row, cells in samples.items()}
    intervals = {row: {t: mean_interval(accs) for t, accs in cells.items()} for row, cells in samples.items()}
    rows = list(samples)
    differences = {t: difference_interval(samples[rows[0]][t], samples[rows[1]][t]) for t in TRAININGS} \
        if len(rows) == 2 else {}
    write_json(done_path, {"results": results, "table": table, "intervals": intervals, "differences": differences,
                           "top": top, "seeds": seeds, "epochs": epochs or cfgs[0].distill.epochs})
    (out_dir / "ablation.md").write_text(_markdown(table, intervals, differences, rows, top, seeds))
    return table


def mean_interval(values: list[float], level: float = 0.95) -> list[float]:
    """The ``level`` t-interval of the mean of ``values`` (the mean itself twice for a single value)."""
    from scipy import stats

    m = statistics.mean(values)
    if len(values) < 2:
        return [m, m]
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return [m - half, m + half]


def difference_interval(a: list[float], b: list[float], level: float = 0.95) -> dict[str, Any]:
    """mean(a) - mean(b) with Welch's ``level`` interval (None where either side has one value)."""
    from scipy import stats

    diff = statistics.mean(a) - statistics.mean(b)
    if len(a) < 2 or len(b) < 2:
        return {"difference": diff, "interval": None}
    if statistics.stdev(a) == statistics.stdev(b) == 0:
        return {"difference": diff, "interval": [diff, diff], "p_value": None}  # Welch's test is undefined
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(level)
    return {"difference": diff, "interval": [float(ci.low), float(ci.high)], "p_value": float(res.pvalue)}


def _key(run_dir: Path, cfg: RunConfig, trial: dict[str, Any], training: str, seed_index: int = 0) -> str:
    return f"{run_dir.name}/{trial['arch_id']}/{training}" + (f"/seed+{seed_index}" if seed_index else "")


def _train(ctx: RunContext, run_dir: Path, cfg: RunConfig, trial: dict[str, Any], training: str, seed_index: int,
           epochs: int | None) -> dict[str, Any]:
    spec = ArchSpec.from_dict(trial["arch"])
    kd = cfg.student_kd(KDConfig(**trial["kd"]))
    if training == "hard labels":
        kd = KDConfig(tau=kd.tau, alpha=0.0)
    train_cfg = ctx.cfg.distill.model_copy(update={"epochs": epochs}) if epochs else ctx.cfg.distill
    seed = ctx.cfg.seed + seed_index
    torch.manual_seed(seed)
    model = build(spec)
    rt = ctx.runtime
    history = train(model, ctx.data, train_cfg, kd, ctx.teacher_signal if kd.alpha > 0 else None, seed=seed,
                    evaluate=lambda m: evaluate(m, ctx.data, "val", rt.dist, rt.workers), runtime=rt)
    return {"run": run_dir.name, "trial": trial["trial"], "arch_id": spec.id, "training": training,
            "kd": kd.model_dump(), "seed": seed, "val_acc": history[-1].eval_acc, "latency_ms": trial["latency_ms"],
            "search_reward": trial["reward"]}


def _markdown(table: dict[str, dict[str, float]], intervals: dict[str, dict[str, list[float]]],
              differences: dict[str, dict[str, Any]], rows: list[str], top: int, seeds: int) -> str:
    lines = [f"Held-out top-1 (%) of each search's top {top} students, each trained with {seeds} seed(s): the mean "
             "and its 95% interval, by how they were trained:", "",
             "| searched by | " + " | ".join(f"trained by {t}" for t in TRAININGS) + " |",
             "| --- |" + " --- |" * len(TRAININGS)]
    lines += [f"| {row} | " + " | ".join(f"{accs[t] * 100:.2f} [{intervals[row][t][0] * 100:.2f}, "
                                         f"{intervals[row][t][1] * 100:.2f}]" for t in TRAININGS) + " |"
              for row, accs in table.items()]
    for t, d in differences.items():
        ci = d["interval"]
        p = "" if d.get("p_value") is None else f" (Welch, p = {d['p_value']:.3f})"
        span = f" [{ci[0] * 100:+.2f}, {ci[1] * 100:+.2f}]{p}" if ci else ""
        lines.append(f"\n{rows[0]} minus {rows[1]}, trained by {t}: {d['difference'] * 100:+.2f} points{span}")
    return "\n".join(lines) + "\n"
