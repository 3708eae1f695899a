"""Search-free packaging from a checkpoint, its input checks, and validation limits through the CLI."""

import json
import tarfile
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.config import TrainConfig
from edgekd.data import load_data
from edgekd.pipeline.teacher import save_checkpoint
from edgekd.train import train

runner = CliRunner()
DATA = ["--data", "synthetic", "--resolution", "8"]


def _arch(resolution: int = 8, width: int = 16) -> ArchSpec:
    return ArchSpec(resolution=resolution, in_channels=3, num_classes=10, stem_channels=8, head_channels=32,
                    blocks=(BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=width, stride=2),
                            BlockSpec(op="dsconv", kernel=3, out_channels=width, residual=True)))


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    arch = _arch()
    model = build(arch)
    train(model, load_data("synthetic", resolution=8), TrainConfig(epochs=6, lr=5e-3))
    path = tmp_path / "release" / "student.pt"
    save_checkpoint(path, model, arch)
    return path


def test_a_checkpoint_is_exported_validated_packaged_and_verified_without_search(tmp_path, checkpoint):
    runs = tmp_path / "runs"
    args = ["export", "--name", "rel", "--runs-dir", str(runs), *DATA, "--checkpoint", str(checkpoint),
            "--formats", "onnx,onnx-fp16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = runs / "rel"
    assert not (run / "teacher").exists() and not (run / "search").exists()  # nothing trained or searched
    report = json.loads((run / "validation/report.json").read_text())
    assert report["teacher"] is None and set(report["formats"]) == {"onnx", "onnx-fp16"}
    assert report["formats"]["onnx"]["acc"] == report["pytorch"]["acc"] > 0.5
    bundle = run / "bundle" / "rel-0.1.0.tar.gz"
    assert runner.invoke(app, ["verify", str(bundle)]).exit_code == 0


def test_a_release_for_an_ssh_board_holds_an_engine_built_there_and_verifies_on_it(tmp_path, checkpoint, board,
                                                                                  trtexec_emulator):
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({"devices": {
        "jetson": board(trtexec=trtexec_emulator).spec.model_dump(exclude_unset=True)}}))
    target = ["--device", "jetson", "--devices-file", str(devices)]
    args = ["export", "--name", "rel", "--runs-dir", str(tmp_path / "runs"), *DATA, "--checkpoint", str(checkpoint),
            "--formats", "onnx,tensorrt-fp16", *target]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "rel"
    engine = json.loads((run / "validation/report.json").read_text())["formats"]["tensorrt-fp16"]
    assert engine["file"] == "model-fp16.plan" and engine["latency_where"] == "jetson"
    assert engine["top1_agreement"] >= 0.98
    bundle = run / "bundle" / "rel-0.1.0.tar.gz"
    with tarfile.open(bundle) as tar:
        assert "rel-0.1.0/model-fp16.plan" in tar.getnames()
    verified = tmp_path / "verify.json"
    result = runner.invoke(app, ["verify", str(bundle), *target, "--report", str(verified)])
    assert result.exit_code == 0, result.output
    assert json.loads(verified.read_text())["models"]["tensorrt-fp16"]["latency_where"] == "jetson"


def test_a_state_dict_with_arch_json_beside_it_is_accepted(tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    bare = tmp_path / "bare" / "weights.pt"
    bare.parent.mkdir()
    torch.save(state["state_dict"], bare)
    (bare.parent / "arch.json").write_text(ArchSpec.from_dict(state["arch"]).to_json())
    args = ["export", "--name", "bare", "--runs-dir", str(tmp_path / "runs"), *DATA, "--checkpoint", str(bare),
            "--formats", "onnx"]
    assert runner.invoke(app, args).exit_code == 0


@pytest.mark.parametrize("case, message", [
    ("arch.json does not fit the weights", "do not match the architecture: size mismatch"),
    ("no arch.json", "has no arch.json beside it"),
    ("other input size", "takes input (3, 12, 12)"),
    ("no file", "checkpoint not found"),
])
def test_bad_checkpoints_are_clear_errors_with_exit_3(tmp_path, checkpoint, case, message):
    state = torch.load(checkpoint, weights_only=True)
    path = tmp_path / "bad" / "weights.pt"
    path.parent.mkdir()
    if case == "arch.json does not fit the weights":
        torch.save(state["state_dict"], path)
        (path.parent / "arch.json").write_text(_arch(width=24).to_json())
    elif case == "no arch.json":
        torch.save(state["state_dict"], path)
    elif case == "other input size":
        save_checkpoint(path, build(_arch(resolution=12)), _arch(resolution=12))
    args = ["export", "--name", "bad", "--runs-dir", str(tmp_path / "runs"), *DATA, "--checkpoint", str(path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 3 and message in result.output, result.output


def test_validate_turns_a_broken_limit_into_exit_5_with_the_report_written(tmp_path, checkpoint):
    runs = tmp_path / "runs"
    base = ["--name", "rel", "--runs-dir", str(runs)]
    assert runner.invoke(app, ["export", *base, *DATA, "--checkpoint", str(checkpoint), "--formats", "onnx"]
                         ).exit_code == 0
    result = runner.invoke(app, ["validate", *base, "--max-latency-drift", "1e-9"])
    assert result.exit_code == 5 and "drifts" in result.output
    assert "FAIL: latency" in (runs / "rel/validation/report.md").read_text()
    assert runner.invoke(app, ["validate", *base, "--max-latency-drift", "1000"]).exit_code == 0
    result = runner.invoke(app, ["validate", *base, "--max-accuracy-drop", "onnx"])
    assert result.exit_code == 2 and "FORMAT=NUMBER" in result.output
    model = runs / "rel" / "export" / "model.onnx"
    model.write_bytes(model.read_bytes()[:200])  # truncated by a full disk
    result = runner.invoke(app, ["validate", *base])
    assert result.exit_code == 6 and f"{model} does not load" in " ".join(result.output.split())


def test_a_format_slower_than_another_with_no_accuracy_gain_is_named_in_the_report():
    from edgekd.pipeline.validate import dominated, report_markdown

    def fmt(acc, p10, median, p90, where="this host"):
        return {"acc": acc, "latency_p10_ms": p10, "latency_ms": median, "latency_p90_ms": p90, "latency_where": where}

    formats = {"onnx": fmt(0.97, 1.0, 1.1, 1.2), "onnx-int8": fmt(0.96, 1.9, 2.0, 2.2),
               "onnx-fp16": fmt(0.97, 1.15, 1.25, 1.4), "ort": fmt(0.97, 0.8, 0.9, 0.95)}
    assert dominated(formats) == {"onnx-int8": "ort", "onnx": "ort", "onnx-fp16": "ort"}
    formats["onnx"] = fmt(0.98, 1.0, 1.1, 1.2)  # more accurate: not beaten, though slower
    formats["ort"] = fmt(0.97, 0.9, 1.05, 1.3)  # faster on median only, within the spread: not beaten either
    assert dominated(formats) == {"onnx-int8": "ort"}  # the fastest of those that beat it
    formats["tflite"] = fmt(0.99, 0.1, 0.2, 0.3, where="phone")  # timed elsewhere: it competes with none
    assert dominated(formats) == {"onnx-int8": "ort"}
    rows = {k: {**v, "runtime": "r", "acc_drop_points": 0.0, "top1_agreement": 1.0, "max_abs_logit_diff": 0.0,
                "passed": True, "failures": []} for k, v in formats.items()}
    rows["onnx-int8"]["dominated_by"] = "onnx"
    report = {"device": "d", "n_val": 10, "pytorch": {"acc": 0.98}, "teacher": None, "predicted_latency_ms": None,
              "formats": rows}
    assert "pass (slower than `onnx` with no accuracy gain)" in report_markdown(report)


def test_auto_exports_every_installed_format(monkeypatch):
    from edgekd.exporters import available_formats
    from edgekd.runtime.tensorrt import require_tensorrt

    found = available_formats()
    assert {"onnx", "onnx-fp16", "onnx-int8", "ort", "tflite", "tflite-int8", "executorch", "executorch-int8",
            "executorch-int8-pointwise"} <= set(found)  # the test extra installs LiteRT and ExecuTorch
    try:
        require_tensorrt()
    except Exception:
        assert not any(f.startswith("tensorrt") for f in found)
    def not_installed(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr("edgekd.runtime.litert.version", not_installed)
    assert not {"tflite", "tflite-int8"} & set(available_formats())


def test_auto_bundles_only_the_formats_that_pass_and_that_none_beats(tmp_path, checkpoint, monkeypatch):
    # auto's discovery narrowed to the ONNX formats, so that this test stays fast; the rest is the real flow
    monkeypatch.setattr("edgekd.pipeline.export.available_formats", lambda: ["onnx", "onnx-fp16", "onnx-int8"])
    runs = tmp_path / "runs"
    args = ["export", "--name", "rel", "--runs-dir", str(runs), *DATA, "--checkpoint", str(checkpoint),
            "--formats", "auto", "--max-accuracy-drop", "onnx-int8=0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((runs / "rel/validation/report.json").read_text())
    kept, left = report["formats"], report["left_out"]
    assert set(kept) | set(left) == {"onnx", "onnx-fp16", "onnx-int8"} and kept and not set(kept) & set(left)
    assert all(f["passed"] and "dominated_by" not in f for f in kept.values())
    assert all(f["failures"] or "dominated_by" in f for f in left.values())
    with tarfile.open(runs / "rel/bundle/rel-0.1.0.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {f["file"] for f in kept.values()} <= names and not {f["file"] for f in left.values()} & names
    assert "left out of the bundle" in (runs / "rel/validation/report.md").read_text() or not left
    assert runner.invoke(app, ["verify", str(runs / "rel/bundle/rel-0.1.0.tar.gz")]).exit_code == 0
    result = runner.invoke(app, ["export", "--name", "x", "--runs-dir", str(runs), *DATA, "--checkpoint",
                                 str(checkpoint), "--formats", "auto,onnx"])
    assert result.exit_code == 2 and "give it alone" in result.output
