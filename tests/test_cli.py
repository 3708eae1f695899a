import json
import tarfile

import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.pipeline.package import sha256

runner = CliRunner()
TINY = ["--data", "synthetic", "--resolution", "8", "--teacher-epochs", "2", "--trials", "2", "--proxy-epochs", "1",
        "--distill-epochs", "2"]


def test_edgekd_run_end_to_end_on_a_tiny_budget(tmp_path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", "--name", "e2e", "--runs-dir", str(runs), *TINY])
    assert result.exit_code == 0, result.output
    run = runs / "e2e"
    for f in ("config.json", "teacher/teacher.pt", "search/study.db", "search/best.json", "search/pareto.json",
              "student/student.pt", "student/arch.json", "student/metrics.json", "export/model.onnx",
              "validation/report.json", "validation/report.md", "bundle/e2e-0.1.0.tar.gz"):
        assert (run / f).is_file(), f
    report = json.loads((run / "validation/report.json").read_text())
    onnx = report["formats"]["onnx"]
    assert onnx["acc"] == report["pytorch"]["acc"]
    assert onnx["max_abs_logit_diff"] <= 1e-4 and onnx["top1_agreement"] == 1.0
    assert report["passed"]

    extract = tmp_path / "extract"
    with tarfile.open(run / "bundle/e2e-0.1.0.tar.gz") as tar:
        tar.extractall(extract, filter="data")
    bundle = extract / "e2e-0.1.0"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {p.name for p in bundle.iterdir()} - {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert sha256(bundle / name) == digest
    assert manifest["input"]["shape"] == ["batch", 3, 8, 8]
    assert manifest["preprocessing"]["mean"] and manifest["device"]["name"] == "host-cpu"
    assert {"torch", "onnxruntime", "edgekd"} <= set(manifest["versions"])

    # Stages re-run on the finished run directory reuse its work: the student is not retrained.
    before = torch.load(run / "student/student.pt")["state_dict"]
    assert runner.invoke(app, ["distill", "--name", "e2e", "--runs-dir", str(runs)]).exit_code == 0
    after = torch.load(run / "student/student.pt")["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert runner.invoke(app, ["export", "--name", "e2e", "--runs-dir", str(runs)]).exit_code == 0


def test_stage_out_of_order_and_bad_input_are_one_line_errors(tmp_path):
    runs = str(tmp_path / "runs")
    result = runner.invoke(app, ["run", "--runs-dir", runs, "--data", "cifar10:/does/not/exist"])
    assert result.exit_code == 3 and "cifar10 folder not found" in result.output
    # That attempt did no work, so its settings do not hold the run: a corrected path is taken.
    result = runner.invoke(app, ["run", "--runs-dir", runs, "--data", "cifar10:/does/not/exist/either"])
    assert result.exit_code == 3 and "exist/either" in result.output
    for args, says in [(["--strategy", "foo"], "unknown search strategy 'foo'"),
                       (["--space", "nope"], "unknown search space 'nope'"),
                       (["--formats", "onnx,foo"], "unknown export format 'foo'"),
                       (["--storage", "nosuchdb://x"], "study storage nosuchdb://x cannot be used")]:
        result = runner.invoke(app, ["run", "--runs-dir", runs, "--name", "names", *args])
        assert result.exit_code == 2 and says in result.output, result.output
    assert not (tmp_path / "runs" / "names").exists()  # refused before any work: nothing written
    result = runner.invoke(app, ["run", "--runs-dir", runs, "--name", "x", "--kd-alpha", "2"])
    assert result.exit_code == 2 and "kd.alpha" in result.output


def test_help_lists_the_stages():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "search", "distill", "export"):
        assert command in result.output


def test_every_option_of_every_command_says_what_it_does():
    import typer

    def commands(group, path=()):
        for name, cmd in group.commands.items():
            yield from commands(cmd, (*path, name)) if hasattr(cmd, "commands") else [((*path, name), cmd)]

    undocumented, unshown = [], []
    for path, cmd in commands(typer.main.get_command(app)):
        shown = " ".join(runner.invoke(app, [*path, "--help"], env={"COLUMNS": "3000"}).output.split())
        for p in cmd.params:
            text = " ".join((getattr(p, "help", None) or "").split()).replace("\\[", "[")
            if not text and p.name != "help":
                undocumented.append((" ".join(path), p.name))
            elif text not in shown:  # e.g. "[default: ...]" taken for rich markup and dropped
                unshown.append((" ".join(path), p.name, text))
    assert not undocumented and not unshown


def test_a_missing_gpu_asked_for_is_a_clear_error_not_a_fall_back(tmp_path):
    if torch.cuda.is_available():
        import pytest

        pytest.skip("a CUDA GPU is visible here")
    result = runner.invoke(app, ["search", "--name", "gpu", "--runs-dir", str(tmp_path), "--train-device", "cuda",
                                 *TINY])
    assert result.exit_code == 4
    assert "no CUDA GPU" in result.output and "--train-device cpu" in result.output
    assert not (tmp_path / "gpu" / "teacher").exists()  # refused before any training
