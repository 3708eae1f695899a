"""Export stage: every configured format of the distilled student, via the format registry.

``adopt_checkpoint`` makes a run directory's student from a given checkpoint instead, so a release can be
exported, validated and packaged without a search (``edgekd export --checkpoint PATH``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekd.core.arch import ArchSpec, build
from edgekd.core.config import AUTO_FORMATS, read_json, write_json
from edgekd.core.errors import DataError, RunStateError
from edgekd.core.ui import progress
from edgekd.exporters import available_formats, get_format
from edgekd.latency_models.flops import count_macs_params
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.distill import Student
from edgekd.pipeline.teacher import load_weights, save_checkpoint
from edgekd.train import evaluate

FORMATS_FILE = "formats.json"


def calibration_images(ctx: RunContext) -> torch.Tensor:
    """``export.calibration_images`` normalized training images, a seeded random draw."""
    idx = ctx.data.index("train")
    n = min(ctx.cfg.export.calibration_images, len(idx))
    pick = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(ctx.cfg.seed))[:n]]
    return ctx.data.normalize(ctx.data.images(pick))


def export_student(ctx: RunContext, student: Student) -> dict[str, Path]:
    """Write one artifact per configured format under export/ (and export/formats.json); returns {format: path}."""
    cfg = ctx.cfg.export
    names = available_formats() if cfg.formats == (AUTO_FORMATS,) else cfg.formats
    formats = [get_format(name) for name in names]  # unknown names fail before any work
    options = {
        "opset": cfg.opset, "exporter": cfg.onnx_exporter, "simplify": cfg.simplify, "device": ctx.device,
        "calibration": calibration_images(ctx).numpy(),
    }
    out = ctx.stage_dir("export")
    out.mkdir(parents=True, exist_ok=True)
    exported: dict[str, Path] = {}
    with progress("export", len(formats)) as bar:
        for fmt in formats:
            exported[fmt.name] = fmt.export(student.model, student.arch, out, options)
            bar(info=fmt.name)
    write_json(out / FORMATS_FILE, {name: path.name for name, path in exported.items()})
    return exported


def exported_files(ctx: RunContext) -> dict[str, Path]:
    """The artifacts the last ``edgekd export`` wrote, by format."""
    path = ctx.stage_dir("export") / FORMATS_FILE
    if not path.is_file():
        raise RunStateError(f"nothing exported yet ({path} missing); run `edgekd export` first")
    files = {name: ctx.stage_dir("export") / file for name, file in read_json(path).items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise RunStateError(f"exported files are missing: {', '.join(missing)}; run `edgekd export` again")
    return files


def _read_checkpoint(path: Path) -> tuple[ArchSpec, dict]:
    """(architecture, state_dict) of an edgekd checkpoint, or of a plain state_dict with arch.json beside it."""
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "arch" in state and "state_dict" in state:
        return ArchSpec.from_dict(state["arch"]), state["state_dict"]
    arch_json = path.with_name("arch.json")
    if not arch_json.is_file():
        raise DataError(f"{path} is a bare state_dict and has no arch.json beside it to say what it holds")
    try:
        return ArchSpec.from_json(arch_json.read_text()), state
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{arch_json} is not a valid edgekd architecture: {exc}") from exc


def adopt_checkpoint(ctx: RunContext, checkpoint: Path) -> Student:
    """Make ``checkpoint`` the run's student (student/), after checking it fits the run's data."""
    arch, state_dict = _read_checkpoint(checkpoint)
    if arch.input_shape != ctx.data.input_shape or arch.num_classes != ctx.data.num_classes:
        raise DataError(
            f"{checkpoint} takes input {arch.input_shape} with {arch.num_classes} classes, but {ctx.data.name} "
            f"gives {ctx.data.input_shape} with {ctx.data.num_classes} classes (set --resolution or --data)"
        )
    model = build(arch)
    load_weights(model, state_dict, str(checkpoint))
    out = ctx.stage_dir("student")
    if (out / "arch.json").is_file() and ArchSpec.from_json((out / "arch.json").read_text()) != arch:
        raise RunStateError(f"{out} holds another student; use another --name for this checkpoint")
    model.eval()
    mmacs, mparams = count_macs_params(model, arch.input_shape)
    metrics = {"val_acc": evaluate(model, ctx.data, "val"), "mmacs": mmacs, "mparams": mparams,
               "arch_id": arch.id, "source": str(checkpoint)}
    save_checkpoint(out / "student.pt", model, arch)
    (out / "arch.json").write_text(arch.to_json())
    write_json(out / "metrics.json", metrics)
    return Student(model, arch, metrics)
