"""The deployable bundle: models, architecture, labels, preprocessing, validation report and a manifest."""

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

from edgekd.config import write_json
from edgekd.exporters.onnx import INPUT_NAME, OUTPUT_NAME
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.distill import Student

MANIFEST_SCHEMA = 1
VERSIONED = ("edgekd", "torch", "torchvision", "onnx", "onnxruntime", "optuna")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{name: metadata.version(name) for name in VERSIONED}}


def package(ctx: RunContext, student: Student, exported: dict[str, Path], report: dict[str, Any]) -> Path:
    """Write bundle/NAME-VERSION.tar.gz (files + manifest.json with the sha256 of every file); return its path."""
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
    files = {p.name: sha256(p) for p in sorted(staging.iterdir())}
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "name": cfg.name,
        "version": cfg.version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        "versions": versions(),
        "device": {"name": ctx.device.name, **ctx.device.spec.model_dump()},
        "input": {"name": INPUT_NAME, "shape": ["batch", *ctx.data.input_shape], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", ctx.data.num_classes], "dtype": "float32"},
        "preprocessing": ctx.data.preprocessing,
        "arch_id": student.arch.id,
        "metrics": {
            "pytorch_acc": report["pytorch"]["acc"],
            "teacher_acc": report["teacher"]["acc"],
            "teacher_latency_ms": report["teacher"]["latency_ms"],
            **{f"{fmt}_{k}": f[k] for fmt, f in report["formats"].items()
               for k in ("acc", "latency_ms", "max_abs_logit_diff")},
            "mmacs": student.metrics["mmacs"],
            "mparams": student.metrics["mparams"],
        },
        "run_config": cfg.model_dump(),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    bundle = out / f"{stem}.tar.gz"
    tmp = bundle.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(staging, arcname=stem)
    tmp.replace(bundle)
    return bundle
