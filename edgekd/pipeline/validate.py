"""Validation of exported models in their runtime on the held-out split, against the PyTorch student."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from edgekd.config import write_json
from edgekd.errors import ValidationFailed
from edgekd.exporters.onnx import INPUT_NAME
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.distill import Student
from edgekd.pipeline.kd import accuracy, predict_logits

LOGIT_TOLERANCE = 1e-3
"""Largest |logit difference| from PyTorch accepted for an fp32 export."""


def onnx_logits(path, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of the ONNX model at ``path`` in ONNX Runtime's CPU provider."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    starts = range(0, len(images), batch_size)
    outs = [session.run(None, {INPUT_NAME: images[i : i + batch_size].numpy()})[0] for i in starts]
    return torch.from_numpy(np.concatenate(outs))


def validate(ctx: RunContext, student: Student, exported: dict[str, Any], predicted_ms: float | None) -> dict[str, Any]:
    """Accuracy, agreement and logit error of every export next to PyTorch's, and latency on the device.

    Writes validation/report.json and report.md; raises ValidationFailed after writing if an export disagrees.
    """
    out = ctx.stage_dir("validation")
    images, labels = ctx.data.tensors("val")
    ref = predict_logits(student.model, ctx.data, "val")
    torch_acc = accuracy(ref, labels)
    teacher_ms = ctx.teacher_latency_ms()
    formats = {}
    for fmt, path in exported.items():
        logits = onnx_logits(path, images)
        m = ctx.latency.measure_onnx(path, ctx.data.input_shape)
        acc, max_diff = accuracy(logits, labels), float((logits - ref).abs().max())
        formats[fmt] = {
            "file": path.name, "acc": acc, "top1_agreement": float((logits.argmax(1) == ref.argmax(1)).float().mean()),
            "max_abs_logit_diff": max_diff, "latency_ms": m.median_ms, "latency_p10_ms": m.p10_ms,
            "latency_p90_ms": m.p90_ms, "runtime": m.runtime, "speedup_vs_teacher": teacher_ms / m.median_ms,
            "passed": acc == torch_acc and max_diff <= LOGIT_TOLERANCE,
        }
    report = {
        "device": ctx.device.name, "device_settings": ctx.device.spec.model_dump(), "n_val": len(labels),
        "pytorch": {"acc": torch_acc}, "teacher": {"acc": ctx.teacher.val_acc, "latency_ms": teacher_ms},
        "predicted_latency_ms": predicted_ms, "formats": formats, "logit_tolerance": LOGIT_TOLERANCE,
        "passed": all(f["passed"] for f in formats.values()),
    }
    write_json(out / "report.json", report)
    (out / "report.md").write_text(report_markdown(report))
    if not report["passed"]:
        bad = [k for k, f in formats.items() if not f["passed"]]
        raise ValidationFailed(f"exported {bad} disagree with PyTorch beyond tolerance; see {out / 'report.md'}")
    return report


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Validation on `{report['device']}` ({report['n_val']} held-out images)", "",
        f"PyTorch student top-1: {report['pytorch']['acc']:.4f}; teacher top-1: {report['teacher']['acc']:.4f}, "
        f"teacher latency {report['teacher']['latency_ms']:.4f} ms.", "",
        "| format | top-1 | agreement | max abs logit diff | latency ms (p10-p90) | vs teacher | passed |",
        "|---|---|---|---|---|---|---|",
    ]
    for fmt, f in report["formats"].items():
        lines.append(
            f"| {fmt} | {f['acc']:.4f} | {f['top1_agreement']:.4f} | {f['max_abs_logit_diff']:.2e} | "
            f"{f['latency_ms']:.4f} ({f['latency_p10_ms']:.4f}-{f['latency_p90_ms']:.4f}) | "
            f"{f['speedup_vs_teacher']:.2f}x faster | {'yes' if f['passed'] else 'NO'} |"
        )
    if report["predicted_latency_ms"] is not None:
        lines += ["", f"Latency the search measured for this architecture: {report['predicted_latency_ms']:.4f} ms."]
    return "\n".join(lines) + "\n"
