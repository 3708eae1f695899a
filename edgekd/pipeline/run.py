"""The stages as the CLI and the Python API call them, and ``run_all`` chaining them."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.core.config import RunConfig
from edgekd.core.errors import ConfigError, RunStateError
from edgekd.core.ui import console, summary
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.distill import Student, distill, distill_family, load_student
from edgekd.pipeline.export import adopt_checkpoint, export_student, exported_files
from edgekd.pipeline.opening import open_run
from edgekd.pipeline.package import package, sha256
from edgekd.pipeline.report import write_report
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search.evaluation import EVALUATORS, evaluator_kind
from edgekd.pipeline.search.objective import TrialObjective, run_trials, search, watch_search
from edgekd.pipeline.search.records import SearchResult, read_result, result_of
from edgekd.pipeline.search.storage import finished, open_study
from edgekd.pipeline.trust import private_key, sign
from edgekd.pipeline.validate import ValidationReport, validate


def run_search(ctx: RunContext) -> SearchResult | None:
    """Search (or resume searching) the run's space, in ``search.jobs`` processes; writes search/.

    Under torchrun the one-shot evaluators train their supernet data-parallel; rank 0 then searches alone and
    the other ranks return None."""
    cfg, out = ctx.cfg, ctx.stage_dir("search")
    kind = evaluator_kind(cfg.search)
    if ctx.runtime.dist.active and not kind.one_shot:
        raise ConfigError("torchrun trains one model data-parallel: it runs `edgekd distill` and the supernet "
                          "evaluators (--evaluator ennas, spos, dna); a proxy search runs candidates side by side "
                          "with --jobs N instead")
    if kind.one_shot:  # trained first: under torchrun every rank trains, then rank 0 alone searches
        evaluator = kind.prepare(ctx)
        if not ctx.runtime.dist.main:
            return None
    reward = ctx.reward()
    if kind.pick:
        result = kind.pick(ctx, reward, evaluator)
    elif cfg.search.jobs > 1:
        result = _search_in_processes(ctx, reward)
    else:
        result = search(cfg, ctx.space, evaluator if kind.one_shot else kind.prepare(ctx), ctx.latency, reward, out)
    b = result.best
    summary(f"search: {result.n_trials} trials, {len(result.pareto)} on the Pareto front", {
        "reward target": f"{reward.target:.4g} ({reward.metric}, {reward.constraint})",
        "best reward": b["reward"], "best mini-val acc": b["acc"], "best latency ms": b["latency_ms"],
        "best MMACs": b["mmacs"], "KD tau / alpha": f"{b['kd']['tau']:g} / {b['kd']['alpha']:g}",
        "arch id": b["arch_id"],
    })
    return result


def _search_in_processes(ctx: RunContext, reward: Reward) -> SearchResult:
    cfg, out = ctx.cfg, ctx.stage_dir("search")
    if ctx.device.measurable and ctx.device.spec.kind == "local":
        console.print(f"[yellow]note[/]: {cfg.search.jobs} workers train on this host while its latency is "
                      "measured; expect noisier figures (or use a predictor or remote device)")
    ctx.teacher  # noqa: B018 -- trained (and its logits cached) once here, not once per worker
    study = open_study(cfg, out, reward)  # created here first, so workers never race to create it
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_search_worker, args=(cfg, ctx.run_dir.parent, i, reward), daemon=True)
               for i in range(cfg.search.jobs)]
    for w in workers:
        w.start()
    try:
        records = watch_search(study, cfg, reward, out, alive=lambda: any(w.is_alive() for w in workers))
    except KeyboardInterrupt:  # the workers ignore Ctrl-C: stopped here, their unfinished trials retried on resume
        for w in workers:
            w.terminate()
        raise
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
    failed = {i: w.exitcode for i, w in enumerate(workers) if w.exitcode not in (0, None)}
    if failed and finished(study) < cfg.search.trials:
        raise RunStateError(f"search workers failed (worker: exit code) {failed}; rerun with --jobs 1 to see why")
    return result_of(records)


def _search_worker(cfg: RunConfig, runs_root: Path, index: int, reward: Reward) -> None:
    """One process of a ``--jobs`` search: its own data, teacher (cached), latency model and trials; its share of
    the CPU threads, and on a host with several GPUs its own GPU."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    console.quiet = True
    ctx = open_run(cfg, runs_root, worker=index)
    study = open_study(cfg, ctx.stage_dir("search"), reward, worker=index + 1)
    evaluator = EVALUATORS.get(cfg.search.evaluator).prepare(ctx)
    run_trials(study, TrialObjective(cfg, ctx.space, evaluator, ctx.latency, reward), cfg.search.trials)


def run_distill(ctx: RunContext, search: SearchResult | None = None) -> Student:
    """Distill the search's best architecture (with its searched KD settings, if searched); writes student/.

    ``search``: the search stage's result (default: the one in the run's search/ folder)."""
    search = search or read_result(ctx.stage_dir("search"))
    kd = ctx.cfg.student_kd(search.best_kd)
    student = distill(ctx, search.best_arch, kd)
    m = student.metrics
    family = {}
    if ctx.cfg.search.family_samples > 1:
        f = distill_family(ctx, student, kd, ctx.cfg.search.family_samples)
        family = {f"{len(f['samples'])} students of the family": f"held-out acc {f['val_acc_mean']:.4f} ± "
                                                                  f"{f['val_acc_std']:.4f} (mean ± sd)"}
    summary("distill", {"student held-out acc": m["val_acc"], "teacher held-out acc": m["teacher_val_acc"],
                        "epochs": m["epochs"], "KD tau / alpha": f"{m['kd']['tau']:g} / {m['kd']['alpha']:g}",
                        "MMACs": m["mmacs"], "M params": m["mparams"], **family})
    return student


def _validation_summary(title: str, report: ValidationReport, extra: dict) -> None:
    rows: dict[str, object] = {}
    teacher = report["teacher"]
    for fmt, f in [*report["formats"].items(), *report["left_out"].items()]:
        speed = f", {f['speedup_vs_teacher']:.2f}x vs teacher" if "speedup_vs_teacher" in f else ""
        beaten = f"; slower than {f['dominated_by']} with no accuracy gain" if "dominated_by" in f else ""
        failed = f"; FAILED: {'; '.join(f['failures'])}" if f["failures"] else ""
        left = "; left out of the bundle" if fmt in report["left_out"] else ""
        rows[fmt] = (f"top-1 {f['acc']:.4f} (drop {f['acc_drop_points']:.2f} pts), agreement "
                     f"{f['top1_agreement']:.4f}, max |logit diff| {f['max_abs_logit_diff']:.2e}, "
                     f"{f['latency_ms']:.4f} ms{speed}{beaten}{failed}{left}")
    if teacher:
        rows["teacher"] = f"top-1 {teacher['acc']:.4f}, {teacher['latency_ms']:.4f} ms"
    summary(title, rows | extra)


def run_validate(ctx: RunContext) -> ValidationReport:
    """Validate the run's exported artifacts again (new limits, another device); writes validation/."""
    _one_process(ctx, "validate")
    student = load_student(ctx.stage_dir("student"))
    report = validate(ctx, student, exported_files(ctx))
    _validation_summary("validate", report, {"PyTorch top-1": report["pytorch"]["acc"]})
    return report


def run_export(ctx: RunContext, checkpoint: Path | None = None, sign_key: Path | None = None,
               student: Student | None = None) -> Path:
    """Export, validate on the device and package ``student`` (default: the run's distilled student, or
    ``checkpoint``); returns the bundle path.

    The bundle's sha256 is printed and written beside it (BUNDLE.sha256, as sha256sum writes it); with
    ``sign_key`` the bundle is also signed (BUNDLE.sig)."""
    _one_process(ctx, "export")
    key = private_key(sign_key) if sign_key else None  # a bad key is refused before any work
    if student is None:
        student = adopt_checkpoint(ctx, checkpoint) if checkpoint else load_student(ctx.stage_dir("student"))
    exported = export_student(ctx, student)
    report = validate(ctx, student, exported)
    exported = {fmt: path for fmt, path in exported.items() if fmt in report["formats"]}  # auto left some out
    bundle = package(ctx, student, exported, report)
    digest = sha256(bundle)
    bundle.with_name(bundle.name + ".sha256").write_text(f"{digest}  {bundle.name}\n")
    signed = {"signature": str(sign(bundle, key))} if key else {}
    _validation_summary("export", report, {
        "PyTorch top-1": report["pytorch"]["acc"], "latency model's figure": f"{report['predicted_latency_ms']:.4f} ms",
        "bundle": str(bundle), "bundle sha256": digest, **signed})
    return bundle


def _one_process(ctx: RunContext, command: str) -> None:
    if ctx.runtime.dist.active:
        raise ConfigError(f"`edgekd {command}` runs in one process; start it without torchrun (torchrun runs "
                          "`edgekd distill` and the supernet evaluators' `edgekd search`)")


@dataclass
class RunSummary:
    run_dir: Path
    bundle: Path
    report: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_all(cfg: RunConfig, runs_root: Path, sign_key: Path | None = None) -> RunSummary:
    """Teacher, search, distill, export, validate, package, then the report; each stage resumes from what is on
    disk."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    if sign_key:
        private_key(sign_key)  # a bad key is refused before the teacher is trained
    ctx = open_run(cfg, runs_root)
    _one_process(ctx, "run")
    ctx.teacher_latency_ms()
    times["teacher"] = time.perf_counter() - start
    with _timed(times, "search"):
        search = run_search(ctx)
    with _timed(times, "distill"):
        student = run_distill(ctx, search)
    with _timed(times, "export"):
        bundle = run_export(ctx, sign_key=sign_key, student=student)
    return RunSummary(ctx.run_dir, bundle, write_report([ctx.run_dir]), times)


@contextlib.contextmanager
def _timed(times: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[stage] = time.perf_counter() - start
