"""Bundles: made by a real tiny run, verified elsewhere, and refused when broken, tampered with or regressed."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.arch import ArchSpec, build
from edgekd.core.errors import BundleError, ValidationFailed
from edgekd.exporters.onnx import export_onnx
from edgekd.pipeline.package import sha256
from edgekd.pipeline.run import run_all
from edgekd.pipeline.trust import generate_keypair, private_key, sign
from edgekd.pipeline.verify import verify

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, make_tiny_config):
    root = tmp_path_factory.mktemp("made-here")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKD_CACHE", str(root / "cache"))
        # A tiny, briefly trained student loses a few points in int8: the limit is widened for it.
        # A phone format rides along: bundled, checksummed and verified in its own runtime too. Verification opens
        # every format through the one registry; each format's own round trip is in exporters/test_formats.py
        # (ExecuTorch's lowering would add half a minute here).
        export = {"formats": ["onnx", "onnx-int8", "tflite-int8"],
                  "max_accuracy_drop": {"onnx": 0.0, "onnx-int8": 20.0, "tflite-int8": 20.0}}
        cfg = make_tiny_config(name="rel", distill={"epochs": 10}, export=export)
        private, _ = generate_keypair(root / "release")
        return run_all(cfg, root / "runs", sign_key=private).bundle


@pytest.fixture(scope="module")
def public_key(bundle):
    return bundle.parents[3] / "release.pub.pem"


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


def test_a_bundle_verifies_in_a_fresh_directory(bundle, tmp_path, monkeypatch, median_device):
    elsewhere = tmp_path / "ci-job"
    elsewhere.mkdir()
    copy = shutil.copy(bundle, elsewhere)
    monkeypatch.chdir(elsewhere)
    report = verify(Path(copy).relative_to(elsewhere), median_device)
    assert report["passed"] and set(report["models"]) == {"onnx", "onnx-int8", "tflite-int8"}
    assert report["models"]["onnx"]["top1_agreement"] == 1.0 and report["models"]["onnx"]["max_abs_logit_diff"] <= 1e-4
    assert report["models"]["tflite-int8"]["runtime"].startswith("ai-edge-litert-")
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
    assert set(manifest["files"]) == {
        "model.onnx", "model-int8.onnx", "model-int8.tflite", "arch.json", "labels.json",
        "preprocessing.json", "validation.json", "validation.md", "reference.npz", "README.md"}
    assert manifest["models"]["onnx-int8"]["file"] == "model-int8.onnx"
    assert manifest["thresholds"]["max_accuracy_drop"]["onnx-int8"] == 20.0
    card = (folder / "README.md").read_text()
    assert manifest["arch_id"] in card and "model-int8.onnx" in card and "edgekd verify" in card
    assert ArchSpec.from_json((folder / "arch.json").read_text()).id == manifest["arch_id"]


def test_a_tampered_model_fails_with_the_file_named(bundle, tmp_path, median_device):
    folder = _unpack(bundle, tmp_path / "x")
    with (folder / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch for model\.onnx"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), median_device)


def test_a_missing_or_an_added_file_fails(bundle, tmp_path, median_device):
    folder = _unpack(bundle, tmp_path / "x")
    (folder / "model-int8.onnx").unlink()
    (folder / "extra.bin").write_bytes(b"?")
    with pytest.raises(BundleError, match=r"missing model-int8\.onnx; unlisted file extra\.bin"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), median_device)


def test_a_manifest_off_schema_fails_naming_the_field(bundle, tmp_path, median_device):
    folder = _unpack(bundle, tmp_path / "x")
    _edit_manifest(folder, lambda m: m.pop("models"))
    with pytest.raises(BundleError, match="schema: models: Field required"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), median_device)


def test_a_mismatched_input_shape_fails(bundle, tmp_path, median_device):
    folder = _unpack(bundle, tmp_path / "x")
    _edit_manifest(folder, lambda m: m["input"].update(shape=["batch", 3, 16, 16]))
    with pytest.raises(BundleError, match=r"reference images have shape \(3, 8, 8\).*\(3, 16, 16\)"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), median_device)


def test_a_consistent_but_regressed_model_fails_validation(bundle, tmp_path, median_device):
    """Swapped weights with a matching checksum: only re-running the model can catch it."""
    folder = _unpack(bundle, tmp_path / "x")
    arch = ArchSpec.from_json((folder / "arch.json").read_text())
    torch.manual_seed(123)
    export_onnx(build(arch).eval(), arch.input_shape, folder / "model.onnx")
    _edit_manifest(folder, lambda m: m["files"].update({"model.onnx": sha256(folder / "model.onnx")}))
    with pytest.raises(ValidationFailed, match="onnx: top-1 drop"):
        verify(_repack(folder, tmp_path / "t.tar.gz"), median_device)


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


def _flipped(bundle: Path, position: int, out: Path) -> Path:
    data = bytearray(bundle.read_bytes())
    data[position] ^= 0x01
    out.write_bytes(bytes(data))
    return out


def test_the_packaged_digest_refuses_any_flipped_byte_before_the_bundle_is_opened(bundle, tmp_path, median_device,
                                                                                  monkeypatch):
    digest = sha256(bundle)
    assert bundle.with_name(bundle.name + ".sha256").read_text() == f"{digest}  {bundle.name}\n"
    assert verify(bundle, median_device, expected_sha256=digest.upper())["authenticated_by"] == ["sha256"]
    size = bundle.stat().st_size
    # gzip's header and its trailer (CRC-32 and length) byte by byte, and a byte in every 4 KiB between them
    positions = sorted({*range(10), *range(size - 8, size), *range(10, size - 8, 4096)})
    monkeypatch.setattr("edgekd.pipeline.verify._extract", lambda *a: pytest.fail("opened an unauthenticated bundle"))
    for position in positions:
        with pytest.raises(BundleError, match="not the bundle that was packaged"):
            verify(_flipped(bundle, position, tmp_path / "f.tar.gz"), median_device, expected_sha256=digest)


def test_a_rewritten_manifest_fails_the_digest_and_the_ci_limits_ignore_the_bundles(bundle, tmp_path, median_device):
    """The attack the digest closes: a swapped int8 model with its checksum and a raised limit rewritten into the
    manifest passes a bare verify, since nothing inside a bundle can vouch for the bundle."""
    folder = _unpack(bundle, tmp_path / "x")
    arch = ArchSpec.from_json((folder / "arch.json").read_text())
    torch.manual_seed(123)
    export_onnx(build(arch).eval(), arch.input_shape, folder / "model-int8.onnx")  # untrained weights

    def forge(m):
        m["files"]["model-int8.onnx"] = sha256(folder / "model-int8.onnx")
        m["thresholds"]["max_accuracy_drop"]["onnx-int8"] = 100.0

    _edit_manifest(folder, forge)
    forged = _repack(folder, tmp_path / "rel-0.1.0.tar.gz")
    assert verify(forged, median_device)["passed"]  # unauthenticated and with the bundle's own limits
    with pytest.raises(BundleError, match="sha256"):
        verify(forged, median_device, expected_sha256=sha256(bundle))
    with pytest.raises(ValidationFailed, match="onnx-int8: top-1 drop"):
        verify(forged, median_device, max_accuracy_drop={"onnx": 0.0, "onnx-int8": 20.0})
    with pytest.raises(ValidationFailed, match="onnx-int8: top-1 drop"):  # unnamed formats: edgekd's defaults
        verify(forged, median_device, max_accuracy_drop={"onnx": 0.0})


def test_a_signed_bundle_verifies_with_its_key_and_not_when_altered_or_re_signed(bundle, public_key, tmp_path,
                                                                                 median_device):
    assert verify(bundle, median_device, public_key=public_key)["authenticated_by"] == ["signature"]
    altered = _flipped(bundle, bundle.stat().st_size // 2, tmp_path / bundle.name)
    (tmp_path / (bundle.name + ".sig")).write_bytes(bundle.with_name(bundle.name + ".sig").read_bytes())
    with pytest.raises(BundleError, match="altered or signed by another key"):
        verify(altered, median_device, public_key=public_key)
    other, _ = generate_keypair(tmp_path / "attacker")
    resigned = tmp_path / "resigned" / bundle.name
    resigned.parent.mkdir()
    shutil.copy(bundle, resigned)
    sign(resigned, private_key(other))
    with pytest.raises(BundleError, match="altered or signed by another key"):
        verify(resigned, median_device, public_key=public_key)
    unsigned = tmp_path / "unsigned" / bundle.name
    unsigned.parent.mkdir()
    shutil.copy(bundle, unsigned)
    with pytest.raises(BundleError, match="not signed"):
        verify(unsigned, median_device, public_key=public_key)


def test_cli_gate_with_digest_key_and_limits(bundle, public_key, tmp_path):
    digest, report = sha256(bundle), tmp_path / "verify.json"
    ok = runner.invoke(app, ["verify", str(bundle), "--sha256", digest, "--public-key", str(public_key),
                             "--max-accuracy-drop", "onnx=0", "--max-accuracy-drop", "onnx-int8=20",
                             "--max-accuracy-drop", "tflite-int8=20", "--report", str(report)])
    assert ok.exit_code == 0, ok.output
    written = json.loads(report.read_text())
    assert written["limits_from"] == "ci" and written["sha256"] == digest
    assert written["authenticated_by"] == ["sha256", "signature"]
    bad = runner.invoke(app, ["verify", str(bundle), "--sha256", "0" * 64])
    assert bad.exit_code == 7 and "not the bundle that was packaged" in bad.output
    assert runner.invoke(app, ["verify", str(bundle), "--sha256", "xyz"]).exit_code == 2
    bare = runner.invoke(app, ["verify", str(bundle), "--report", str(report)])
    assert bare.exit_code == 0 and json.loads(report.read_text())["authenticated_by"] == []
    made = runner.invoke(app, ["keygen", str(tmp_path / "k")])
    assert made.exit_code == 0 and (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert runner.invoke(app, ["keygen", str(tmp_path / "k")]).exit_code == 2  # never overwritten
    not_a_key = runner.invoke(app, ["verify", str(bundle), "--public-key", str(bundle)])
    assert not_a_key.exit_code == 2 and "not an unencrypted PEM public key" in not_a_key.output
