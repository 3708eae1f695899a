"""Bundles: made by a real tiny run, verified elsewhere, and refused when broken, tampered with or regressed."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import BundleError, ValidationFailed
from edgekd.exporters.onnx import export_onnx
from edgekd.pipeline.arch import ArchSpec, build
from edgekd.pipeline.package import sha256
from edgekd.pipeline.run import run_all
from edgekd.pipeline.verify import verify

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, make_tiny_config):
    root = tmp_path_factory.mktemp("made-here")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKD_CACHE", str(root / "cache"))
        # A tiny, briefly trained student loses a few points in int8: the limit is widened for it.
        export = {"formats": ["onnx", "onnx-int8"], "max_accuracy_drop": {"onnx": 0.0, "onnx-int8": 20.0}}
        cfg = make_tiny_config(name="rel", distill={"epochs": 10}, export=export)
        return run_all(cfg, root / "runs").bundle


def _unpack(bundle: Path, into: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(into, filter="data")
    return next(into.iterdir())


def _repack(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_a_bundle_verifies_in_a_fresh_directory(bundle, tmp_path, monkeypatch, fast_device):
    elsewhere = tmp_path / "ci-job"
    elsewhere.mkdir()
    copy = shutil.copy(bundle, elsewhere)
    monkeypatch.chdir(elsewhere)
    report = verify(Path(copy).relative_to(elsewhere), fast_device)
    assert report["passed"] and set(report["models"]) == {"onnx", "onnx-int8"}
    onnx = report["models"]["onnx"]
    assert onnx["top1_agreement"] == 1.0 and onnx["max_abs_logit_diff"] <= 1e-4
    assert report["reference_n"] > 0 and not report["same_device_as_manifest"]  # test device != host-cpu


@pytest.mark.cuda
def test_a_bundle_made_on_the_cpu_verifies_on_the_gpu(bundle, cuda_device):
    report = verify(bundle, cuda_device)
    fp32 = report["models"]["onnx"]
    assert report["passed"] and fp32["runtime"].endswith("-cuda")
    assert fp32["top1_agreement"] == 1.0 and fp32["max_abs_logit_diff"] <= 1e-4


def test_the_bundle_holds_models_card_reference_and_checksums(bundle, tmp_path):
    folder = _unpack(bundle, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"model.onnx", "model-int8.onnx", "arch.json", "labels.json", "preprocessing.json", "validation.json",
            "validation.md", "reference.npz", "README.md"} == set(manifest["files"])
    assert manifest["models"]["onnx-int8"]["file"] == "model-int8.onnx"
    assert manifest["thresholds"]["max_accuracy_drop"]["onnx-int8"] == 20.0
    card = (folder / "README.md").read_text()
    assert manifest["arch_id"] in card and "model-int8.onnx" in card and "edgekd verify" in card
    assert ArchSpec.from_json((folder / "arch.json").read_text()).id == manifest["arch_id"]


def test_a_tampered_model_fails_with_the_file_named(bundle, tmp_path, fast_device):
    folder = _unpack(bundle, tmp_path / "x")
    with (folder / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch for model\.onnx"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), fast_device)


def test_a_missing_or_an_added_file_fails(bundle, tmp_path, fast_device):
    folder = _unpack(bundle, tmp_path / "x")
    (folder / "model-int8.onnx").unlink()
    (folder / "extra.bin").write_bytes(b"?")
    with pytest.raises(BundleError, match=r"missing model-int8\.onnx; unlisted file extra\.bin"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), fast_device)


def test_a_manifest_off_schema_fails_naming_the_field(bundle, tmp_path, fast_device):
    folder = _unpack(bundle, tmp_path / "x")
    _edit_manifest(folder, lambda m: m.pop("models"))
    with pytest.raises(BundleError, match="schema: models: Field required"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), fast_device)


def test_a_mismatched_input_shape_fails(bundle, tmp_path, fast_device):
    folder = _unpack(bundle, tmp_path / "x")
    _edit_manifest(folder, lambda m: m["input"].update(shape=["batch", 3, 16, 16]))
    with pytest.raises(BundleError, match=r"reference images have shape \(3, 8, 8\).*\(3, 16, 16\)"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), fast_device)


def test_a_consistent_but_regressed_model_fails_validation(bundle, tmp_path, fast_device):
    """Swapped weights with a matching checksum: only re-running the model can catch it."""
    folder = _unpack(bundle, tmp_path / "x")
    arch = ArchSpec.from_json((folder / "arch.json").read_text())
    torch.manual_seed(123)
    export_onnx(build(arch).eval(), arch.input_shape, folder / "model.onnx")
    _edit_manifest(folder, lambda m: m["files"].update({"model.onnx": sha256(folder / "model.onnx")}))
    with pytest.raises(ValidationFailed, match="onnx: top-1 drop"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), fast_device)


def test_cli_exit_codes_gate_ci(bundle, tmp_path):
    assert runner.invoke(app, ["verify", str(bundle)]).exit_code == 0
    folder = _unpack(bundle, tmp_path / "x")
    (folder / "labels.json").write_text("[]")
    result = runner.invoke(app, ["verify", str(_repack(folder, tmp_path / "t.tar.gz"))])
    assert result.exit_code == 7 and "checksum mismatch for labels.json" in result.output
    result = runner.invoke(app, ["verify", str(folder)])  # the unpacked folder instead of the bundle
    assert result.exit_code == 7 and "is a folder; give the NAME-VERSION.tar.gz" in result.output
    result = runner.invoke(app, ["verify", str(bundle), "--max-latency-drift", "1e-9"])
    assert result.exit_code == 5 and "drifts" in result.output  # same device as the bundle: drift is checked
