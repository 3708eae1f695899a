"""Bad input, as a careless or hostile user gives it: every case is a clean error (its exit code and one line
naming the culprit, no traceback), runs nothing it was handed, and leaves every existing file as it was."""

import hashlib
import os
import pickle
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.pipeline.teacher import save_checkpoint

runner = CliRunner()
TINY = ["--data", "synthetic", "--resolution", "8", "--teacher-epochs", "1", "--trials", "2", "--proxy-epochs", "1",
        "--distill-epochs", "1"]
MARKER = "payload-ran"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A whole tiny run (runs/done) with its bundle; each case works on a copy."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKD_CACHE", str(root / "cache"))
        result = runner.invoke(app, ["run", "--name", "done", "--runs-dir", str(root / "runs"), *TINY,
                                     "--formats", "onnx"])
    assert result.exit_code == 0, result.output
    return root / "runs"


class Payload:
    """Unpickling this runs a shell command that leaves MARKER behind."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        return os.system, (f"touch {self.folder / MARKER}",)


def _plant(path: Path, root: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(Payload(root), f)


def _devices(root: Path, body: str | bytes) -> list[str]:
    path = root / "devices.yaml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return ["devices", "--devices-file", str(path)]


def _alias_bomb(levels: int = 9) -> str:
    """YAML whose aliases expand to 9**levels values ("billion laughs")."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _check(root: Path, body: str, name: str) -> list[str]:
    return ["devices", "check", name, "--devices-file", _devices(root, body)[-1]]


def _run(root: Path, *args: str, name: str = "new") -> list[str]:
    return ["run", "--name", name, "--runs-dir", str(root / "runs"), *TINY, *args]


def _cifar(root: Path, spoil: Callable[[Path], None]) -> list[str]:
    folder = root / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    spoil(folder)
    return _run(root, "--data", f"cifar10:{folder}")


def _tree(root: Path, spoil: Callable[[Path], None]) -> list[str]:
    from PIL import Image

    for c in range(3):
        (root / "tree" / f"c{c}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), (80 * c, 0, 0)).save(root / "tree" / f"c{c}" / f"{i}.png")
    spoil(root / "tree")
    return _run(root, "--data", f"imagefolder:{root / 'tree'}")


def _truncated_png(tree: Path) -> None:
    """A PNG whose header is whole (the folder scan accepts it) and whose pixels stop half way."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tree / "c2" / "trunc.png")
    data = (tree / "c2" / "trunc.png").read_bytes()
    (tree / "c2" / "trunc.png").write_bytes(data[: len(data) // 2])


def _tiny_arch(classes: int = 10, channels: int = 3, width: int = 16) -> ArchSpec:
    return ArchSpec(resolution=8, in_channels=channels, num_classes=classes, stem_channels=8, head_channels=16,
                    blocks=(BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=width, stride=1),))


def _teacher(root: Path, make: Callable[[Path], None], *extra: str) -> list[str]:
    path = root / "teacher.pt"
    make(path)
    return _run(root, "--teacher", str(path), *extra)


def _mismatched_checkpoint(path: Path) -> None:
    torch.save({"arch": _tiny_arch().to_dict(), "state_dict": build(_tiny_arch(width=24)).state_dict()}, path)


def _in_run(root: Path, edit: Callable[[Path], None], *command: str) -> list[str]:
    """``command`` on the copy of the finished run, after ``edit`` spoiled one of its files."""
    edit(root / "runs" / "done")
    return [*command, "--name", "done", "--runs-dir", str(root / "runs")]


def _bundle(root: Path) -> Path:
    return next((root / "runs" / "done" / "bundle").glob("*.tar.gz"))


def _verify(root: Path, spoil: Callable[[Path], Path], *extra: str) -> list[str]:
    return ["verify", str(spoil(_bundle(root))), *extra]


def _rewrite(bundle: Path, edit: Callable[[Path], None]) -> Path:
    """The bundle unpacked, edited and packed again under another name (the original stays as it was)."""
    work = bundle.parent.parent / "unpacked"
    with tarfile.open(bundle) as tar:
        tar.extractall(work, filter="data")
    folder = next(work.iterdir())
    edit(folder)
    out = bundle.with_name("edited.tar.gz")
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


def _traversal(bundle: Path) -> Path:
    out = bundle.with_name("evil.tar.gz")
    evil = bundle.parent / "x.txt"
    evil.write_text("x")
    with tarfile.open(out, "w:gz") as tar:
        tar.add(evil, arcname="../../escaped.txt")
    return out


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], list[str]]
    exit_code: int
    says: str
    """Text the error line must hold: it names the culprit ({root} is the case's folder)."""


CASES = [
    # devices.yaml
    Case("devices file missing", lambda r: ["devices", "--devices-file", str(r / "nope.yaml")], 2, "nope.yaml"),
    Case("devices file binary", lambda r: _devices(r, b"\x00\xff\xfe" * 50), 2, "not a text file"),
    Case("devices file not YAML", lambda r: _devices(r, "devices: [unclosed"), 2, "not valid YAML"),
    Case("devices file alias bomb", lambda r: _devices(r, _alias_bomb()), 2, "alias bomb"),
    Case("devices file is a list", lambda r: _devices(r, "- local\n- ssh\n"), 2, "devices.yaml"),
    Case("device of an unknown kind", lambda r: _devices(r, "devices:\n  x:\n    kind: quantum\n"), 2, "'quantum'"),
    Case("device without its kind", lambda r: _devices(r, "devices:\n  x:\n    threads: 2\n"), 2, "device 'x'"),
    Case("ssh device without a host", lambda r: _devices(
        r, "devices:\n  b:\n    kind: ssh\n    command: x\n    pattern: (y)\n"), 2, "field 'host'"),
    Case("device with an unknown field", lambda r: _devices(
        r, "devices:\n  x:\n    kind: local\n    colour: red\n"), 2, "field 'colour'"),
    Case("device with threads 0", lambda r: _devices(
        r, "devices:\n  x:\n    kind: local\n    threads: 0\n"), 2, "field 'threads'"),
    Case("device not in the registry", lambda r: _check(r, "devices:\n  x:\n    kind: local\n", "phone"), 2,
         "unknown device 'phone'"),
    Case("predictor file missing", lambda r: _check(
        r, "devices:\n  p:\n    kind: predictor\n    file: gone.json\n", "p"), 4, "gone.json"),
    Case("predictor file not JSON", lambda r: _check(
        r, "devices:\n  p:\n    kind: predictor\n    file: " + str(_write(r / "p.json", b"\x89PNG")) + "\n", "p"),
         4, "p.json"),
    # data
    Case("unknown data source", lambda r: _run(r, "--data", "mnist:/x"), 3, "unknown data source 'mnist'"),
    Case("cifar10 folder missing", lambda r: _run(r, "--data", f"cifar10:{r / 'none'}"), 3, "cifar10 folder not found"),
    Case("cifar10 batch missing", lambda r: _cifar(r, lambda f: (f / "data_batch_3").unlink()), 3, "data_batch_3"),
    Case("cifar10 batch with a pickled payload", lambda r: _cifar(r, lambda f: _plant(f / "data_batch_2", r)), 3,
         "data_batch_2"),
    Case("cifar10 batch of the wrong shape", lambda r: _cifar(r, lambda f: (f / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}))), 3, "test_batch"),
    Case("cifar10 meta without class names", lambda r: _cifar(r, lambda f: (f / "batches.meta").write_bytes(
        pickle.dumps({b"num_vis": 3072}))), 3, "batches.meta"),
    Case("imagefolder root missing", lambda r: _run(r, "--data", f"imagefolder:{r / 'none'}"), 3, "none"),
    Case("imagefolder with a file that is no image", lambda r: _tree(
        r, lambda t: (t / "c1" / "notes.png").write_text("not an image")), 3, "notes.png"),
    Case("imagefolder with a truncated image, read by a loader process", lambda r: [
        *_tree(r, _truncated_png), "--workers", "1"], 3, "trunc.png: image file is truncated"),
    Case("imagefolder with one class", lambda r: _tree(
        r, lambda t: [shutil.rmtree(t / c) for c in ("c1", "c2")]), 3, "at least 2 classes"),
    Case("synthetic data given a path", lambda r: _run(r, "--data", "synthetic:/x"), 3, "synthetic"),
    Case("resolution out of range", lambda r: _run(r, "--resolution", "100000"), 2, "resolution"),
    # teachers
    Case("teacher file missing", lambda r: _run(r, "--teacher", str(r / "t.pt")), 3, "t.pt"),
    Case("teacher file of random bytes", lambda r: _teacher(r, lambda p: p.write_bytes(os.urandom(300))), 3,
         "teacher.pt"),
    Case("teacher file with a pickled payload", lambda r: _teacher(r, lambda p: _plant(p, r)), 3, "teacher.pt"),
    Case("teacher weights that do not fit its arch", lambda r: _teacher(r, _mismatched_checkpoint), 3,
         "do not match"),
    Case("teacher with the wrong number of classes", lambda r: _teacher(r, lambda p: save_checkpoint(
        p, build(_tiny_arch(classes=7)), _tiny_arch(classes=7))), 3, "outputs shape"),
    Case("torchvision teacher without weights", lambda r: _run(r, "--teacher", "torchvision:resnet18"), 3,
         "--teacher-weights"),
    Case("torchvision teacher unknown", lambda r: _run(
        r, "--teacher", "torchvision:resnet9000", "--teacher-weights", str(_write(r / "w.pt", b""))), 3,
         "resnet9000"),
    Case("teacher of an unknown kind prefix is a missing file", lambda r: _run(r, "--teacher", "hub:foo/bar"), 3,
         "hub:foo/bar"),
    # checkpoints and run files
    Case("export checkpoint missing", lambda r: ["export", "--name", "x", "--runs-dir", str(r / "runs"), *TINY[:4],
                                                 "--checkpoint", str(r / "c.pt")], 3, "c.pt"),
    Case("export checkpoint with a pickled payload", lambda r: (_plant(r / "c.pt", r), [
        "export", "--name", "x", "--runs-dir", str(r / "runs"), *TINY[:4], "--checkpoint", str(r / "c.pt")])[1], 3,
         "c.pt"),
    Case("student with a pickled payload", lambda r: _in_run(
        r, lambda d: _plant(d / "student" / "student.pt", r), "export"), 6, "student.pt"),
    Case("student truncated", lambda r: _in_run(
        r, lambda d: _write(d / "student" / "student.pt", (d / "student" / "student.pt").read_bytes()[:200]),
        "validate"), 6, "student.pt"),
    Case("teacher logits with a pickled payload", lambda r: _in_run(
        r, lambda d: _plant(d / "teacher" / "logits.pt", r), "distill"), 6, "logits.pt"),
    Case("search result not JSON", lambda r: _in_run(
        r, lambda d: (shutil.rmtree(d / "student"), _write(d / "search" / "best.json", b"{oops")), "distill"), 6,
         "best.json"),
    Case("run config not JSON", lambda r: _in_run(
        r, lambda d: _write(d / "config.json", b"\x00garbage"), "distill"), 6, "config.json"),
    Case("exported ONNX truncated", lambda r: _in_run(
        r, lambda d: _write(d / "export" / "model.onnx", (d / "export" / "model.onnx").read_bytes()[:100]),
        "validate"), 6, "model.onnx"),
    Case("exported formats list missing", lambda r: _in_run(
        r, lambda d: (d / "export" / "formats.json").unlink(), "validate"), 6, "export"),
    # bundles
    Case("bundle missing", lambda r: ["verify", str(r / "nothing.tar.gz")], 7, "nothing.tar.gz"),
    Case("bundle that is no archive", lambda r: ["verify", str(_write(r / "b.tar.gz", b"plain text"))], 7,
         "b.tar.gz"),
    Case("bundle with a member escaping its folder", lambda r: _verify(r, _traversal), 7, "escaped.txt"),
    Case("bundle with its manifest edited", lambda r: _verify(r, lambda b: _rewrite(
        b, lambda f: _write(f / "manifest.json", (f / "manifest.json").read_bytes().replace(b'"0.1.0"', b'"9.9.9"'))),
        "--sha256", hashlib.sha256(_bundle(r).read_bytes()).hexdigest()), 7, "sha256"),
    Case("bundle against another digest", lambda r: _verify(r, lambda b: b, "--sha256", "ab" * 32), 7, "sha256"),
    Case("bundle digest not hex", lambda r: _verify(r, lambda b: b, "--sha256", "xyz"), 2, "xyz"),
    Case("bundle public key not a key", lambda r: _verify(
        r, lambda b: b, "--public-key", str(_write(r / "k.pem", b"-----BEGIN nonsense"))), 2, "k.pem"),
    Case("bundle accuracy limit not a number", lambda r: _verify(r, lambda b: b, "--max-accuracy-drop", "onnx=abc"),
         2, "onnx=abc"),
    Case("bundle latency drift below zero", lambda r: _verify(r, lambda b: b, "--max-latency-drift", "-2"), 2,
         "--max-latency-drift"),
    Case("limit for an unknown format on a finished run", lambda r: _in_run(
        r, lambda d: None, "validate", "--max-accuracy-drop", "coreml=1"), 2, "'coreml'"),
    Case("unknown format on a finished run", lambda r: _in_run(r, lambda d: None, "export", "--formats", "coreml"), 2,
         "'coreml'"),
    Case("report page named as a folder", lambda r: ["report", "done", "--runs-dir", str(r / "runs"), "--out",
                                                     str(r / "runs")], 2, "is a folder"),
    Case("predictor folder that is a file", lambda r: ["profile", "--out", str(_write(r / "p", b"x"))], 2,
         "cannot make the folder"),
    Case("ablation of a run against itself", lambda r: ["ablate", "done", "done", "--runs-dir", str(r / "runs")], 2,
         "two different runs"),
    Case("ablation of no student", lambda r: ["ablate", "done", "other", "--top", "0"], 2, "--top"),
    # command-line values
    Case("run name escaping the runs folder", lambda r: _run(r, name="../escape"), 2, "../escape"),
    Case("run name with a slash", lambda r: _run(r, name="a/b"), 2, "a/b"),
    Case("runs folder that is a file", lambda r: ["run", "--runs-dir", str(_write(r / "runs-file", b"x")), *TINY], 2,
         "runs-file"),
    Case("no export format", lambda r: _run(r, "--formats", ""), 2, "formats"),
    Case("unknown export format", lambda r: _run(r, "--formats", "onnx,coreml"), 2, "'coreml'"),
    Case("unknown search space", lambda r: _run(r, "--space", "resnet"), 2, "'resnet'"),
    Case("unknown strategy", lambda r: _run(r, "--strategy", "grid"), 2, "'grid'"),
    Case("unknown evaluator", lambda r: _run(r, "--evaluator", "oracle"), 2, "'oracle'"),
    Case("one-shot evaluator with searched KD", lambda r: _run(r, "--evaluator", "ennas", "--search-kd"), 2, "ennas"),
    Case("PAMKD on a space without a supernet", lambda r: _run(r, "--evaluator", "pamkd"), 2, "mbv2"),
    Case("PAMKD without learners", lambda r: _run(r, "--evaluator", "pamkd", "--learners", "0"), 2, "learners"),
    Case("unknown PAMKD relaxation", lambda r: _run(r, "--evaluator", "pamkd", "--relaxation", "soft"), 2,
         "relaxation"),
    Case("trials out of range", lambda r: _run(r, "--trials", "0"), 2, "trials"),
    Case("KD weight above 1", lambda r: _run(r, "--kd-alpha", "2"), 2, "kd.alpha"),
    Case("two targets", lambda r: _run(r, "--target-ms", "1", "--target-mmacs", "1"), 2, "target"),
    Case("unusable study storage", lambda r: _run(r, "--storage", "nosuchdb://x"), 2, "nosuchdb://x"),
    Case("unknown augmentation", lambda r: _run(r, "--augment", "fancy"), 2, "augment"),
    Case("zero threads", lambda r: _run(r, "--threads", "0"), 2, "threads"),
    Case("unknown training device", lambda r: _run(r, "--train-device", "tpu"), 2, "train_device"),
    Case("sign key that is no key", lambda r: _run(r, "--sign-key", str(_write(r / "s.pem", b"not a key"))), 2,
         "s.pem"),
    Case("teacher weights for a trained teacher", lambda r: _run(r, "--teacher-weights", "w.pt"), 2, "teacher_weights"),
    Case("an invalid value for a finished run", lambda r: _run(r, "--kd-alpha", "2", name="done"), 2, "kd.alpha"),
    Case("key pair named as a folder", lambda r: ["keygen", f"{r}/."], 2, "needs a file name"),
    Case("key pair in a missing folder", lambda r: ["keygen", str(r / "nowhere" / "k")], 2, "no folder"),
]


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_suite_has_at_least_40_distinct_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_clean_error_that_changes_nothing(case, tmp_path, finished_run, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "400")  # a usage error's box is not wrapped, so its line holds the culprit
    shutil.copytree(finished_run, tmp_path / "runs")
    argv = case.setup(tmp_path)
    before = _snapshot(tmp_path)
    result = runner.invoke(app, argv)
    output = result.output
    assert result.exit_code == case.exit_code, f"{argv}\n{output}"
    assert "Traceback" not in output and isinstance(result.exception, SystemExit | None), repr(result.exception)
    lines = [line for line in output.splitlines() if case.says.format(root=tmp_path) in line]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert lines, output
    assert len(errors) <= 1 and (not errors or case.says.format(root=tmp_path) in errors[0]), output
    assert not (tmp_path / MARKER).exists(), "a pickled payload ran"
    after = _snapshot(tmp_path)
    changed = [str(p) for p, data in before.items() if after.get(p) != data]
    assert not changed, f"changed or removed: {changed}"
