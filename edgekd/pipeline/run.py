"""The stages as the CLI and the Python API call them, and ``run_all`` chaining them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.config import RunConfig, read_json
from edgekd.errors import RunStateError
from edgekd.pipeline.arch import ArchSpec
from edgekd.pipeline.context import RunContext, open_run
from edgekd.pipeline.distill import Student, distill, load_student
from edgekd.pipeline.evaluator import KDProxyEvaluator
from edgekd.pipeline.export import export_student
from edgekd.pipeline.package import package
from edgekd.pipeline.search import SearchResult, search
from edgekd.pipeline.validate import validate
from edgekd.ui import summary


def run_search(ctx: RunContext) -> SearchResult:
    """Search (or resume searching) the run's space; writes search/."""
    cfg = ctx.cfg
    evaluator = KDProxyEvaluator(ctx.data, ctx.teacher.logits, cfg.search.proxy, cfg.kd, cfg.seed)
    reward = ctx.reward()
    result = search(cfg, ctx.space, evaluator, ctx.latency, reward, ctx.stage_dir("search"))
    b = result.best
    summary(f"search: {result.n_trials} trials, {len(result.pareto)} on the Pareto front", {
        "reward target": f"{reward.target:.4g} ({reward.metric}, {reward.constraint})",
        "best reward": b["reward"], "best mini-val acc": b["acc"], "best latency ms": b["latency_ms"],
        "best MMACs": b["mmacs"], "arch id": b["arch_id"],
    })
    return result


def run_distill(ctx: RunContext) -> Student:
    """Distill the search's best architecture; writes student/."""
    best_path = ctx.stage_dir("search") / "best.json"
    if not best_path.is_file():
        raise RunStateError(f"no search result at {best_path}; run `edgekd search` first")
    student = distill(ctx, ArchSpec.from_dict(read_json(best_path)["arch"]))
    m = student.metrics
    summary("distill", {"student held-out acc": m["val_acc"], "teacher held-out acc": m["teacher_val_acc"],
                        "epochs": m["epochs"], "MMACs": m["mmacs"], "M params": m["mparams"]})
    return student


def run_export(ctx: RunContext) -> Path:
    """Export, validate on the device and package the distilled student; returns the bundle path."""
    student = load_student(ctx.stage_dir("student"))
    exported = export_student(ctx, student)
    best_path = ctx.stage_dir("search") / "best.json"
    searched_ms = read_json(best_path)["latency_ms"] if best_path.is_file() else None
    report = validate(ctx, student, exported, searched_ms)
    bundle = package(ctx, student, exported, report)
    onnx = report["formats"]["onnx"]
    summary("export", {"ONNX held-out acc": onnx["acc"], "PyTorch held-out acc": report["pytorch"]["acc"],
                       "max |logit diff|": onnx["max_abs_logit_diff"], "student latency ms": onnx["latency_ms"],
                       "teacher latency ms": report["teacher"]["latency_ms"],
                       "speed-up vs teacher": f"{onnx['speedup_vs_teacher']:.2f}x", "bundle": str(bundle)})
    return bundle


@dataclass
class RunSummary:
    run_dir: Path
    bundle: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_all(cfg: RunConfig, runs_root: Path) -> RunSummary:
    """Teacher, search, distill, export, validate, package; each stage resumes from what is on disk."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    ctx = open_run(cfg, runs_root)
    ctx.teacher_latency_ms()
    times["teacher"] = time.perf_counter() - start
    for stage, fn in (("search", run_search), ("distill", run_distill), ("export", run_export)):
        t = time.perf_counter()
        result = fn(ctx)
        times[stage] = time.perf_counter() - t
    return RunSummary(ctx.run_dir, result, times)
