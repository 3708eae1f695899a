"""``edgekd verify``: re-check a bundle anywhere, so that CI can gate a release on it.

Checks, in order: where given, the whole archive's sha256 (``--sha256``) and its ed25519 signature
(``--public-key``), the trust anchors that make every later check mean something (see ``trust``); the archive
reads and holds one bundle folder; manifest.json follows the schema; every file is listed with a matching
sha256 and nothing unlisted was added; the reference sample matches the manifest's input shape; every bundled
model, run in its runtime on the given device, still agrees with the PyTorch logits stored with the sample
within the limits (the CI's, where it gives them; else the manifest's); and, where asked, its latency has not
drifted. A broken or tampered bundle raises BundleError (exit 7), a regression ValidationFailed (exit 5).
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from edgekd.core.config import ExportConfig
from edgekd.core.devices import NamedDevice
from edgekd.core.errors import BundleError, ValidationFailed
from edgekd.core.scratch import scratch_dir
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.context import latency_cache
from edgekd.pipeline.package import Manifest, sha256
from edgekd.pipeline.trust import check_digest, check_signature
from edgekd.pipeline.validate import TIMED_AS_SEARCHED, check_format, validate_artifact


def _extract(bundle: Path, into: Path) -> Path:
    if bundle.is_dir():
        raise BundleError(f"{bundle} is a folder; give the NAME-VERSION.tar.gz bundle that `edgekd export` made")
    if not bundle.is_file():
        raise BundleError(f"bundle not found: {bundle}")
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{bundle} is not a readable .tar.gz bundle: {exc}") from exc
    folders = [p for p in into.iterdir()]
    if len(folders) != 1 or not folders[0].is_dir():
        raise BundleError(f"{bundle} should hold exactly one bundle folder, found {sorted(p.name for p in folders)}")
    return folders[0]


def read_manifest(root: Path) -> Manifest:
    """The manifest of the bundle folder ``root``, checked against the bundle schema."""
    path = root / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{root.name}/manifest.json is missing")
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"manifest.json is not valid JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BundleError(f"manifest.json does not follow the bundle schema: {problems}") from exc


def _check_files(root: Path, manifest: Manifest) -> None:
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.json"}
    problems = [f"missing {name}" for name in sorted(set(manifest.files) - present)]
    problems += [f"unlisted file {name}" for name in sorted(present - set(manifest.files))]
    problems += [
        f"checksum mismatch for {name}" for name in sorted(set(manifest.files) & present)
        if sha256(root / name) != manifest.files[name]
    ]
    unlisted_models = [m.file for m in manifest.models.values() if m.file not in manifest.files]
    problems += [f"model {file} is not covered by a checksum" for file in unlisted_models]
    if problems:
        raise BundleError(f"bundle integrity check failed: {'; '.join(problems)}")


def _reference(root: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    try:
        with np.load(root / manifest.reference.file) as npz:
            sample = {k: npz[k] for k in ("images", "labels", "pytorch_logits")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{manifest.reference.file} is not a readable reference sample: {exc}") from exc
    expected = tuple(manifest.input.shape[1:])
    if tuple(sample["images"].shape[1:]) != expected:
        raise BundleError(
            f"reference images have shape {tuple(sample['images'].shape[1:])} but the manifest's input is {expected}"
        )
    return sample


def verify(bundle: Path, device: NamedDevice, max_latency_drift: float | None = None, *,
           expected_sha256: str | None = None, public_key: Path | None = None, signature: Path | None = None,
           max_accuracy_drop: dict[str, float] | None = None) -> dict[str, Any]:
    """Verify ``bundle`` on ``device``; returns the report, or raises BundleError / ValidationFailed.

    ``expected_sha256`` and ``public_key`` (with ``signature``, default BUNDLE.sig) authenticate the archive
    before it is opened. ``max_accuracy_drop`` (points per format) replaces the manifest's limits: a format the CI
    names no limit for is held to edgekd's default, never to a limit read from the bundle."""
    if bundle.is_file() and expected_sha256 is not None:
        check_digest(bundle, expected_sha256)
    if bundle.is_file() and public_key is not None:
        check_signature(bundle, public_key, signature)
    with scratch_dir("verify") as tmp:
        root = _extract(bundle, Path(tmp))
        manifest = read_manifest(root)
        _check_files(root, manifest)
        sample = _reference(root, manifest)
        ref_acc = float((sample["pytorch_logits"].argmax(1) == sample["labels"]).mean())
        same_device = device.fingerprint == manifest.device.get("fingerprint")
        limits = ({**ExportConfig().max_accuracy_drop, **max_accuracy_drop} if max_accuracy_drop is not None
                  else manifest.thresholds.max_accuracy_drop)
        latency = MeasuredLatency(device, latency_cache()) if device.measurable else None
        models = {}
        for fmt, bundled in manifest.models.items():
            try:
                f = validate_artifact(fmt, root / bundled.file, sample["images"], sample["pytorch_logits"],
                                      sample["labels"], device, latency)
            except (RuntimeError, ValueError) as exc:  # the runtime rejects the model or its input
                raise BundleError(f"{bundled.file} does not run on the reference input: {exc}") from exc
            recorded = bundled.latency_ms if same_device else None
            drift = max_latency_drift if fmt == TIMED_AS_SEARCHED else None
            f["recorded_latency_ms"] = recorded
            f["max_accuracy_drop"] = limits.get(fmt, 0.0)
            f["failures"] = check_format(fmt, f, ref_acc, limits, recorded, drift)
            f["passed"] = not f["failures"]
            models[fmt] = f
    report = {"bundle": str(bundle), "name": manifest.name, "version": manifest.version, "device": device.name,
              "same_device_as_manifest": same_device, "reference_n": len(sample["labels"]),
              "reference_pytorch_acc": ref_acc, "models": models, "passed": all(m["passed"] for m in models.values()),
              "sha256": sha256(bundle), "authenticated_by": [a for a, given in (
                  ("sha256", expected_sha256), ("signature", public_key)) if given is not None],
              "limits_from": "ci" if max_accuracy_drop is not None else "bundle"}
    if not report["passed"]:
        bad = "; ".join(f"{fmt}: {', '.join(m['failures'])}" for fmt, m in models.items() if m["failures"])
        raise ValidationFailed(f"{bundle.name} regressed on {device.name}: {bad}")
    return report
