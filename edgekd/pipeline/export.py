"""Export stage: every requested format of the distilled student, via the exporter registry."""

from __future__ import annotations

from pathlib import Path

from edgekd.exporters import get_exporter
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.distill import Student


def export_student(ctx: RunContext, student: Student, formats: tuple[str, ...] = ("onnx",)) -> dict[str, Path]:
    """Write export/ files, one per format; returns {format: path}."""
    options = {"opset": ctx.cfg.opset, "exporter": ctx.cfg.onnx_exporter}
    return {fmt: get_exporter(fmt)(student.model, student.arch, ctx.stage_dir("export"), options) for fmt in formats}
