"""Validation of exported models in their target runtime, on the held-out split, against the PyTorch student.

For every artifact: top-1 accuracy next to PyTorch's, the drop in points, top-1 agreement with PyTorch, the
max |logit difference|, and latency on the device next to what the run's latency model says for this
architecture (the loop from prediction to measurement closed). Limits (``export.max_accuracy_drop`` per
format, ``LOGIT_TOLERANCE`` for fp32 ONNX, ``export.max_latency_drift``) turn a regression into
ValidationFailed (exit 5), after the report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from edgekd.core.config import AUTO_FORMATS, read_json, write_json
from edgekd.core.devices import NamedDevice
from edgekd.core.errors import EdgeKDError, RunStateError, ValidationFailed
from edgekd.data import SplitArray
from edgekd.exporters import Runner, get_format
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.distill import Student
from edgekd.runtime.timing import time_runner
from edgekd.runtime.trtexec import Trtexec, board_of
from edgekd.train import predict_logits

LOGIT_TOLERANCE = 1e-3
"""Largest |logit difference| from PyTorch accepted for the fp32 formats."""
EXACT_FORMATS = ("onnx", "ort", "tflite", "executorch")
"""Formats held to LOGIT_TOLERANCE: the fp32 model unchanged (reduced-precision formats are held to their accuracy
drop only)."""
TIMED_AS_SEARCHED = "onnx"
"""The format whose latency the latency model predicted (checked against ``max_latency_drift``)."""
EVAL_BATCH = 256


class FormatReport(TypedDict, total=False):
    """How one exported format did in its runtime on the device."""

    file: str
    size_bytes: int
    runtime: str
    acc: float
    top1_agreement: float
    max_abs_logit_diff: float
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float
    """The latency's interval: its 95% interval under the interleaved protocol, else the 10th-90th percentile of
    the runs (``latency_protocol`` says which)."""
    latency_protocol: str
    latency_where: str
    acc_drop_points: float
    max_accuracy_drop: float
    speedup_vs_teacher: float
    failures: list[str]
    passed: bool
    dominated_by: str
    """Another format of the same model, on the same device, at least as accurate and faster (absent: none)."""


class ValidationReport(TypedDict):
    """The validation stage's result (validation/report.json): every format against the PyTorch student."""

    device: str
    device_settings: dict[str, Any]
    n_val: int
    pytorch: dict[str, float]
    teacher: dict[str, float] | None
    predicted_latency_ms: float
    formats: dict[str, FormatReport]
    """The formats kept (all of them, unless ``export.formats`` is auto)."""
    left_out: dict[str, FormatReport]
    """With ``export.formats`` auto: the formats that failed their limits or that another format beats."""
    logit_tolerance: float
    max_latency_drift: float | None
    passed: bool


def run_batched(run: Runner, images: np.ndarray | SplitArray) -> np.ndarray:
    """Logits of ``run`` for ``images`` (an array, or a split read batch by batch), in batches."""
    return np.concatenate([run(images[i : i + EVAL_BATCH]) for i in range(0, len(images), EVAL_BATCH)])


def compare(logits: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy of ``logits``, its top-1 agreement with the reference logits and the max |difference|."""
    return {
        "acc": float((logits.argmax(1) == labels).mean()),
        "top1_agreement": float((logits.argmax(1) == ref.argmax(1)).mean()),
        "max_abs_logit_diff": float(np.abs(logits - ref).max()),
    }


def check_format(
    fmt: str, metrics: dict[str, Any], ref_acc: float, max_drop: dict[str, float],
    predicted_ms: float | None = None, max_drift: float | None = None,
) -> list[str]:
    """The limits ``metrics`` of format ``fmt`` break, as sentences (empty: it passed)."""
    failures = []
    drop = (ref_acc - metrics["acc"]) * 100
    limit = max_drop.get(fmt, 0.0)
    if drop > limit + 1e-9:
        failures.append(f"top-1 drop {drop:.2f} points > {limit:g} allowed")
    if fmt in EXACT_FORMATS and metrics["max_abs_logit_diff"] > LOGIT_TOLERANCE:
        failures.append(f"max |logit diff| {metrics['max_abs_logit_diff']:.2e} > {LOGIT_TOLERANCE:g}")
    if fmt == TIMED_AS_SEARCHED and predicted_ms and max_drift is not None:
        drift = abs(metrics["latency_ms"] - predicted_ms) / predicted_ms
        if drift > max_drift:
            failures.append(f"latency {metrics['latency_ms']:.4f} ms drifts {drift:.0%} from the predicted "
                            f"{predicted_ms:.4f} ms (> {max_drift:.0%})")
    return failures


def validate_artifact(
    fmt: str, path: Path, images: np.ndarray | SplitArray, ref: np.ndarray, labels: np.ndarray, device: NamedDevice,
    latency: MeasuredLatency | None,
) -> FormatReport:
    """Accuracy, agreement and logit error of one artifact in its runtime, and its latency.

    Files the device times itself (ONNX; on a phone also what its tools run: ``latency.times``) are timed on the
    device with its protocol (fresh processes here, the board for ssh, the phone for adb: ``latency``, the
    device's measured latency model), as the search timed candidates, and TensorRT engines of ssh devices by
    trtexec on the board; other artifacts, or any file for a predictor device, are timed in this process on this
    host (``latency_where`` says which).
    """
    spec, d = get_format(fmt), device.spec
    run = spec.open(path, device)
    metrics = compare(run_batched(run, images), ref, labels)
    if latency is not None and latency.times(path):
        m, where = latency.measure_onnx(path, images.shape[1:]), device.name
    elif path.suffix == ".plan" and (board := board_of(device)):
        m, where = Trtexec(board).measure(path, images.shape[1:]), device.name
    else:
        m = time_runner(run, images.shape[1:], d.warmup, d.repeats, d.threads, spec.runtime(), d.batch_size)
        where = "this host, in process"
    return {"file": path.name, "size_bytes": path.stat().st_size, "runtime": m.runtime, **metrics,
            "latency_ms": m.median_ms, "latency_p10_ms": m.p10_ms, "latency_p90_ms": m.p90_ms,
            "latency_protocol": m.protocol, "latency_where": where}


def validate(ctx: RunContext, student: Student, exported: dict[str, Path]) -> ValidationReport:
    """Validate every artifact of ``exported``; writes validation/report.json and report.md."""
    cfg, out = ctx.cfg.export, ctx.stage_dir("validation")
    images, labels = ctx.data.array("val"), ctx.data.labels[ctx.data.index("val")].numpy()
    ref = predict_logits(student.model, ctx.data, "val", workers=ctx.runtime.workers).numpy()
    torch_acc = float((ref.argmax(1) == labels).mean())
    predicted_ms = ctx.latency.latency_ms(student.arch)
    teacher = None
    if ctx.has_teacher:
        teacher = {"acc": ctx.teacher.val_acc, "latency_ms": ctx.teacher_latency_ms()}
    measured = ctx.latency if isinstance(ctx.latency, MeasuredLatency) else None
    formats = {}
    for fmt, path in exported.items():
        try:
            f = validate_artifact(fmt, path, images, ref, labels, ctx.device, measured)
        except EdgeKDError:
            raise
        except Exception as exc:  # a runtime's own error types for a file it cannot load (truncated, corrupt)
            detail = (str(exc).strip().splitlines() or [""])[0][:300]
            raise RunStateError(f"{path} does not load in its runtime ({type(exc).__name__}: {detail}); run "
                                "`edgekd export` again to rewrite it") from None
        f["acc_drop_points"] = (torch_acc - f["acc"]) * 100
        f["max_accuracy_drop"] = cfg.max_accuracy_drop.get(fmt, 0.0)
        if teacher:
            f["speedup_vs_teacher"] = teacher["latency_ms"] / f["latency_ms"]
        f["failures"] = check_format(fmt, f, torch_acc, cfg.max_accuracy_drop, predicted_ms, cfg.max_latency_drift)
        f["passed"] = not f["failures"]
        formats[fmt] = f
    for fmt, other in dominated(formats).items():
        formats[fmt]["dominated_by"] = other
    left_out = {}
    if cfg.formats == (AUTO_FORMATS,):
        left_out = {fmt: f for fmt, f in formats.items() if f["failures"] or "dominated_by" in f}
        if len(left_out) == len(formats):
            raise ValidationFailed(f"no format passed its limits: {_failures(formats)}")
        formats = {fmt: f for fmt, f in formats.items() if fmt not in left_out}
    report: ValidationReport = {
        "device": ctx.device.name, "device_settings": ctx.device.spec.model_dump(), "n_val": len(labels),
        "pytorch": {"acc": torch_acc}, "teacher": teacher, "predicted_latency_ms": predicted_ms,
        "formats": formats, "left_out": left_out, "logit_tolerance": LOGIT_TOLERANCE,
        "max_latency_drift": cfg.max_latency_drift,
        "passed": all(f["passed"] for f in formats.values()),
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(report_markdown(report))
    if not report["passed"]:
        raise ValidationFailed(_failure_message(report, out / "report.md"))
    return report


def read_validation(out_dir: Path) -> ValidationReport:
    """The validation stage's report (validation/report.json)."""
    return read_json(out_dir / "report.json")


def dominated(formats: dict[str, FormatReport]) -> dict[str, str]:
    """Each format that another one beats on this device: at least as accurate and faster beyond the two
    measurements' spread (the other's p90 below its p10), with the fastest such format. Only formats timed in
    the same place compete (an ONNX model timed on the phone and a LiteRT one timed on this host do not). int8 on
    a CPU without fast int8 kernels is the usual case: slower than fp32 and no more accurate."""
    found = {}
    for fmt, f in formats.items():
        better = [o for o, g in formats.items() if o != fmt and g["acc"] >= f["acc"]
                  and g["latency_where"] == f["latency_where"] and g["latency_p90_ms"] < f["latency_p10_ms"]]
        if better:
            found[fmt] = min(better, key=lambda o: formats[o]["latency_ms"])
    return found


def _failures(formats: dict[str, FormatReport]) -> str:
    return "; ".join(f"{fmt}: {', '.join(f['failures'])}" for fmt, f in formats.items() if f["failures"])


def _failure_message(report: ValidationReport, where: Path) -> str:
    return f"validation failed ({_failures(report['formats'])}); see {where}"


def report_markdown(report: ValidationReport) -> str:
    """The validation report as a Markdown table."""
    teacher = report["teacher"]
    lines = [f"# Validation on `{report['device']}` ({report['n_val']} held-out images)", "",
             f"PyTorch student top-1: {report['pytorch']['acc']:.4f}."]
    if teacher:
        lines.append(f"Teacher top-1: {teacher['acc']:.4f}, latency {teacher['latency_ms']:.4f} ms.")
    if report["predicted_latency_ms"] is not None:
        lines.append(f"Latency model's figure for this architecture: {report['predicted_latency_ms']:.4f} ms.")
    lines += ["", "Latency intervals: the 95% interval where a format was timed interleaved with the reference model, "
              "else the 10th-90th percentile of its runs.",
              "", "| format | runtime | top-1 | drop (pts) | agreement | max abs logit diff | latency ms (interval) "
              "| speed-up vs teacher | result |", "|---|---|---|---|---|---|---|---|---|"]
    left_out = report.get("left_out", {})  # absent from bundles of edgekd before `--formats auto`
    for fmt, f in [*report["formats"].items(), *left_out.items()]:
        speed = f"{f['speedup_vs_teacher']:.2f}x" if "speedup_vs_teacher" in f else "-"
        result = "pass" if f["passed"] else "FAIL: " + "; ".join(f["failures"])
        if "dominated_by" in f:
            result += f" (slower than `{f['dominated_by']}` with no accuracy gain)"
        if fmt in left_out:
            result += "; left out of the bundle"
        lines.append(
            f"| {fmt} | {f['runtime']} | {f['acc']:.4f} | {f['acc_drop_points']:.2f} | {f['top1_agreement']:.4f} "
            f"| {f['max_abs_logit_diff']:.2e} | {f['latency_ms']:.4f} ({f['latency_p10_ms']:.4f}-"
            f"{f['latency_p90_ms']:.4f}) | {speed} | {result} |"
        )
    return "\n".join(lines) + "\n"


def reference_sample(ctx: RunContext, student: Student) -> dict[str, np.ndarray]:
    """The first ``export.reference_images`` held-out images with labels and PyTorch logits, for the bundle."""
    images, labels = ctx.data.tensors("val", limit=ctx.cfg.export.reference_images)
    with torch.no_grad():
        logits = student.model.eval()(images)
    return {"images": images.numpy(), "labels": labels.numpy(), "pytorch_logits": logits.numpy()}
