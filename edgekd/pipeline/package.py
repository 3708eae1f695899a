"""The deployable bundle: models, architecture, labels, preprocessing, validation report, reference sample,
model card and a manifest.json holding the sha256 of every other file (the schema ``edgekd verify`` checks).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tarfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgekd.core.config import write_json
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.distill import Student
from edgekd.pipeline.validate import LOGIT_TOLERANCE, ValidationReport, reference_sample, report_markdown
from edgekd.runtime.ort import INPUT_NAME, OUTPUT_NAME

MANIFEST_SCHEMA = 2
VERSIONED = ("edgekd", "torch", "torchvision", "onnx", "onnxruntime", "optuna", "tensorrt")
REFERENCE_FILE = "reference.npz"


class BundledModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    runtime: str
    acc: float
    latency_ms: float


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int | str]
    dtype: str


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_accuracy_drop: dict[str, float]
    logit_tolerance: float
    max_latency_drift: float | None


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str
    n: int
    pytorch_acc: float


class Manifest(BaseModel):
    """manifest.json; ``files`` maps every other file of the bundle to its sha256."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int
    name: str
    version: str
    created: str
    files: dict[str, str]
    models: dict[str, BundledModel]
    versions: dict[str, str]
    device: dict[str, Any]
    input: TensorSpec
    output: TensorSpec
    preprocessing: dict[str, Any]
    arch_id: str
    metrics: dict[str, float | None]
    thresholds: Thresholds
    reference: Reference
    run_config: dict[str, Any]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that made the bundle (those installed)."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def package(ctx: RunContext, student: Student, exported: dict[str, Path], report: ValidationReport) -> Path:
    """Write bundle/NAME-VERSION.tar.gz; return its path."""
    cfg = ctx.cfg
    stem = f"{cfg.name}-{cfg.version}"
    out = ctx.stage_dir("bundle")
    staging = out / stem
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for path in exported.values():
        shutil.copy2(path, staging / path.name)
    (staging / "arch.json").write_text(student.arch.to_json())
    write_json(staging / "labels.json", ctx.data.classes)
    write_json(staging / "preprocessing.json", ctx.data.preprocessing)
    write_json(staging / "validation.json", report)
    (staging / "validation.md").write_text(report_markdown(report))
    sample = reference_sample(ctx, student)
    np.savez_compressed(staging / REFERENCE_FILE, **sample)
    manifest = _manifest(ctx, student, report, sample, stem)
    (staging / "README.md").write_text(model_card(manifest, student, report))
    manifest["files"] = {p.name: sha256(p) for p in sorted(staging.iterdir())}
    Manifest.model_validate(manifest)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    bundle = out / f"{stem}.tar.gz"
    tmp = bundle.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(staging, arcname=stem)
    tmp.replace(bundle)
    return bundle


def _manifest(ctx: RunContext, student: Student, report: ValidationReport, sample: dict, stem: str) -> dict[str, Any]:
    cfg, formats = ctx.cfg, report["formats"]
    teacher = report["teacher"] or {}
    sample_acc = float((sample["pytorch_logits"].argmax(1) == sample["labels"]).mean())
    return {
        "schema_version": MANIFEST_SCHEMA,
        "name": cfg.name,
        "version": cfg.version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {},
        "models": {fmt: {"file": f["file"], "runtime": f["runtime"], "acc": f["acc"], "latency_ms": f["latency_ms"]}
                   for fmt, f in formats.items()},
        "versions": versions(),
        "device": {"name": ctx.device.name, "fingerprint": ctx.device.fingerprint, **ctx.device.spec.model_dump()},
        "input": {"name": INPUT_NAME, "shape": ["batch", *ctx.data.input_shape], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", ctx.data.num_classes], "dtype": "float32"},
        "preprocessing": ctx.data.preprocessing,
        "arch_id": student.arch.id,
        "metrics": {
            "pytorch_acc": report["pytorch"]["acc"],
            "teacher_acc": teacher.get("acc"),
            "teacher_latency_ms": teacher.get("latency_ms"),
            "predicted_latency_ms": report["predicted_latency_ms"],
            **{f"{fmt}_{k}": f[k] for fmt, f in formats.items() for k in ("acc", "latency_ms", "max_abs_logit_diff")},
            "mmacs": student.metrics["mmacs"],
            "mparams": student.metrics["mparams"],
        },
        "thresholds": {"max_accuracy_drop": dict(cfg.export.max_accuracy_drop), "logit_tolerance": LOGIT_TOLERANCE,
                       "max_latency_drift": cfg.export.max_latency_drift},
        "reference": {"file": REFERENCE_FILE, "n": len(sample["labels"]), "pytorch_acc": sample_acc},
        "run_config": cfg.public_dump(),
    }


def model_card(manifest: dict[str, Any], student: Student, report: ValidationReport) -> str:
    """README.md of the bundle: what the student is, how it was found, its figures and how to run it."""
    m, cfg = manifest["metrics"], manifest["run_config"]
    stages = sorted({b.stage for b in student.arch.blocks})
    ops = ", ".join(sorted({f"{b.op} k{b.kernel}" for b in student.arch.blocks}))
    found = (f"searched with the `{cfg['search']['strategy']}` strategy over the `{cfg['search']['space']}` space "
             f"({cfg['search']['trials']} candidates, each distilled for {cfg['search']['proxy']['epochs']} epochs "
             f"on mini-train and scored on mini-val, MnasNet {cfg['search']['reward']} reward), then distilled "
             f"from the teacher (`{cfg['teacher']}`, KD tau {cfg['kd']['tau']}, alpha {cfg['kd']['alpha']})"
             if "source" not in student.metrics else f"exported from the checkpoint `{student.metrics['source']}`")
    lines = [
        f"# {manifest['name']} {manifest['version']}", "",
        f"An image classifier for {manifest['output']['shape'][1]} classes "
        f"(labels.json) taking {manifest['input']['shape'][1:]} float32 input (NCHW), made by edgekd. "
        f"Architecture `{manifest['arch_id']}` (arch.json): {len(student.arch.blocks)} blocks in {len(stages)} "
        f"stages ({ops}), {m['mmacs']:.2f} MMACs, {m['mparams']:.3f} M parameters.", "",
        f"How it was found: {found}.", "",
        f"Data: `{cfg['data']}`; held-out top-1 of the PyTorch student {m['pytorch_acc']:.4f}"
        + (f", of the teacher {m['teacher_acc']:.4f}." if m["teacher_acc"] is not None else "."), "",
        f"## Figures on `{manifest['device']['name']}`", "",
        "| file | runtime | held-out top-1 | latency ms |", "|---|---|---|---|",
        *[f"| {b['file']} | {b['runtime']} | {b['acc']:.4f} | {b['latency_ms']:.4f} |"
          for b in manifest["models"].values()],
        "", "validation.md has the full report (agreement with PyTorch, logit error, latency spread).", "",
        "## Use", "",
        "Preprocess as preprocessing.json says: resize to the input size, `x = (pixel / 255 - mean) / std`, "
        "NCHW. Then, for example:", "",
        "```python",
        "import onnxruntime as ort",
        "session = ort.InferenceSession('model.onnx')",
        f"logits = session.run(None, {{'{INPUT_NAME}': x}})[0]",
        "```", "",
        "`edgekd verify BUNDLE.tar.gz` re-checks every checksum in manifest.json and re-runs the models on "
        "reference.npz (held-out images with the PyTorch student's logits).", "",
    ]
    return "\n".join(lines)
