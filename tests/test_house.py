"""The house rules: arrows point down (import-linter), and every member of every registry keeps its contract."""

import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.devices import DEVICE_KINDS, NamedDevice
from edgekd.core.errors import ConfigError, DeviceError
from edgekd.core.registry import ALL, Registry
from edgekd.data import load_data
from edgekd.latency_models import PREDICTING
from edgekd.latency_models.predictors import fit_block_table, fit_predictor, load_predictor
from edgekd.latency_models.transfer import fit_transfer
from edgekd.pipeline.opening import open_run
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.teacher import save_checkpoint
from edgekd.runtime import BACKENDS
from edgekd.spaces import make_space
from edgekd.train import LOCAL

ROOT = Path(__file__).resolve().parents[1]


def test_arrows_point_down_and_no_package_has_an_import_circle():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def _tiny_arch(in_channels=1, resolution=16, classes=10) -> ArchSpec:
    return ArchSpec(resolution=resolution, in_channels=in_channels, num_classes=classes, stem_channels=8,
                    blocks=(BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=16, stride=2),), head_channels=32)


DEVICE_EXAMPLES = {
    "local": {"kind": "local", "warmup": 1, "repeats": 3, "processes": 1},
    "ssh": {"kind": "ssh", "host": "nobody@127.0.0.1", "port": 1, "command": "true", "pattern": "(x)", "timeout_s": 5},
    "adb": {"kind": "adb", "tool": "benchmark_model", "binary": "/data/local/tmp/benchmark_model", "timeout_s": 5},
    "tensorrt": {"kind": "tensorrt"},
    "qaihub": {"kind": "qaihub", "device": "Samsung Galaxy S24 (Family)"},
    "predictor": {"kind": "predictor", "file": "PREDICTOR"},
    "nnmeter": {"kind": "nnmeter", "predictor": "no_such_predictor_here"},
}
"""A small valid entry of each device kind (the predictor file is written by the test)."""


def _device(kind: str, tmp_path: Path) -> NamedDevice:
    if kind not in DEVICE_EXAMPLES:
        pytest.fail(f"device kind {kind!r} has no example entry in this contract test")
    entry = dict(DEVICE_EXAMPLES[kind])
    if entry.get("file") == "PREDICTOR":
        space = make_space("mnas", 16, 1, 10, 0.25)
        rng = random.Random(0)
        pairs = [(s, 0.1 + 0.01 * s.blocks[0].out_channels) for s in
                 (space.decode(space.sample(rng)) for _ in range(12))]
        entry["file"] = str(fit_predictor("flops", pairs).save(tmp_path / "predictor.json"))
    return NamedDevice(name=f"example-{kind}", spec=DEVICE_KINDS.get(kind).model_validate(entry))


def _rows_are_check_rows(rows) -> None:
    assert rows and all(isinstance(w, str) and isinstance(ok, bool) and isinstance(d, str) for w, ok, d in rows)


def space_contract(name, preset, tmp_path):
    space = preset(resolution=16, in_channels=1, num_classes=10, width=0.25)
    rng = random.Random(0)
    for _ in range(3):
        spec = space.decode(space.sample(rng))
        assert space.decode(space.encode(spec)) == spec and ArchSpec.from_json(spec.to_json()) == spec
        assert build(spec)(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def strategy_contract(name, factory, tmp_path):
    strategy = factory(0, 2)
    study = optuna.create_study(directions=list(strategy.directions), sampler=strategy.sampler,
                                pruner=strategy.pruner)

    def objective(trial):
        x, y = trial.suggest_categorical("x", (1, 2, 3)), trial.suggest_categorical("y", ("a", "b"))
        return (x / 3, x * 0.1) if strategy.pareto else x + (y == "b")

    study.optimize(objective, n_trials=6)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 6


def evaluator_contract(name, kind, tmp_path, make_tiny_config):
    cfg = make_tiny_config(resolution=16, search={  # DNA's blocks need 16 px or more
        "space": "mbv2" if kind.one_shot else "mnas", "space_width": 0.25, "evaluator": name, "trials": 2,
        "target_mmacs": 5.0, "proxy": {"epochs": 1}, "oneshot": {"train": {"epochs": 1}, "rating_images": 16}})
    shared_teacher = tmp_path.parent / "teacher"  # trained for the first kind, copied for the others
    if shared_teacher.is_dir():
        shutil.copytree(shared_teacher, tmp_path / "runs" / cfg.name / "teacher")
    ctx = open_run(cfg, tmp_path / "runs")
    evaluator = kind.prepare(ctx)
    if not shared_teacher.is_dir():
        shutil.copytree(ctx.stage_dir("teacher"), shared_teacher)
    spec = ctx.space.decode(ctx.space.sample(random.Random(0)))
    assert 0.0 <= evaluator.evaluate(spec) <= 1.0 and evaluator.budget >= 1
    if kind.pick:
        result = kind.pick(ctx, Reward(1e6, "mmacs"), evaluator)
        assert ctx.space.decode(ctx.space.encode(result.best_arch)) == result.best_arch


def format_contract(name, fmt, tmp_path, fast_device):
    spec = _tiny_arch()
    torch.manual_seed(0)
    model = build(spec).eval()
    images = np.random.default_rng(0).standard_normal((16, 1, 16, 16), dtype=np.float32)
    options = {"opset": 17, "exporter": "dynamo", "simplify": False, "device": fast_device, "calibration": images}
    try:
        path = fmt.export(model, spec, tmp_path, options)
    except DeviceError as exc:  # TensorRT without TensorRT or a GPU: a clear error, never a traceback
        assert "TensorRT" in str(exc) or "GPU" in str(exc)
        return
    logits = fmt.open(path, fast_device)(images[:4])
    with torch.no_grad():
        ref = model(torch.from_numpy(images[:4])).numpy()
    assert logits.shape == ref.shape and np.isfinite(logits).all()
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.5 and fmt.runtime()


def source_contract(name, read, tmp_path, write_cifar, write_image_tree):
    specs = {"digits": "digits", "synthetic": "synthetic", "glyphs": "glyphs:1"}
    if name == "cifar10":
        write_cifar(tmp_path / "cifar")
        specs[name] = f"cifar10:{tmp_path / 'cifar'}"
    if name == "imagefolder":
        write_image_tree(tmp_path / "tree", per_class=10)
        specs[name] = f"imagefolder:{tmp_path / 'tree'}"
    if name not in specs:
        pytest.fail(f"data source {name!r} has no fixture in this contract test")
    data = load_data(specs[name], resolution=16)
    x, y = data.tensors("mini_train", limit=4)
    assert x.shape[1:] == data.input_shape and len(y) == len(x) and int(y.max()) < data.num_classes
    assert len(data.index("val")) and len(data.index("mini_val"))


def teacher_contract(name, load, tmp_path, make_tiny_config):
    data = load_data("synthetic", resolution=16)
    cfg = make_tiny_config(resolution=16)
    args = {"train": "", "file": str(tmp_path / "teacher.pt")}
    if name == "file":
        save_checkpoint(tmp_path / "teacher.pt", build(_tiny_arch(3, 16, data.num_classes)),
                        _tiny_arch(3, 16, data.num_classes))
    if name == "torchvision":
        import torchvision

        weights = tmp_path / "resnet18.pt"
        torch.save(torchvision.models.resnet18(num_classes=data.num_classes).state_dict(), weights)
        cfg = cfg.model_copy(update={"teacher_weights": str(weights)})
        args[name] = "resnet18"
    if name not in args:
        pytest.fail(f"teacher kind {name!r} has no fixture in this contract test")
    model, arch = load(args[name], cfg, data, tmp_path / "teacher", LOCAL)
    x, _ = data.tensors("val", limit=2)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, data.num_classes)
    assert arch is None or arch.num_classes == data.num_classes


def device_kind_contract(name, schema, tmp_path):
    device = _device(name, tmp_path)
    assert device.spec.kind == name and isinstance(device.spec, schema)
    assert name in (BACKENDS if device.measurable else PREDICTING), f"{name!r} can neither measure nor predict"


def backend_contract(name, make, tmp_path):
    device = _device(name, tmp_path)
    backend = make(device.spec)
    _rows_are_check_rows(backend.check())
    if name == "local":
        from edgekd.exporters.onnx import export_onnx

        path = export_onnx(build(_tiny_arch()), (1, 16, 16), tmp_path / "m.onnx")
        assert backend.measure_onnx(path, (1, 16, 16)).median_ms > 0


def predicting_contract(name, kind, tmp_path):
    device = _device(name, tmp_path)
    rows = kind.check(device.spec)
    _rows_are_check_rows(rows)
    if all(ok for _, ok, _ in rows):
        spec = make_space("mnas", 16, 1, 10, 0.25).decode(make_space("mnas", 16, 1, 10, 0.25).sample(random.Random(1)))
        assert kind.open(device.spec).latency_ms(spec) > 0
    else:  # not ready: opening it is a clear error, not a traceback
        with pytest.raises((ConfigError, DeviceError)):
            kind.open(device.spec)


def predictor_kind_contract(name, kind, tmp_path):
    space = make_space("mnas", 16, 1, 10, 0.25)
    rng = random.Random(0)
    specs = [space.decode(space.sample(rng)) for _ in range(24)]
    pairs = [(s, 0.05 + 0.002 * len(s.blocks) + 0.01 * s.blocks[-1].out_channels / 16) for s in specs]
    if kind.fit is not None:
        predictor = fit_predictor(name, pairs[:16])
    elif name == "transfer":
        predictor = fit_transfer(fit_predictor("lut", pairs[:16]), pairs[:8])
    else:
        reference = {d: v[0] for d, v in space.choices.items()}
        from edgekd.latency_models.predictors import block_table_archs

        table = [s for _, _, s in block_table_archs(space, reference)]
        predictor = fit_block_table(space, reference, [0.1] * len(table), pairs[:16])
    again = load_predictor(predictor.save(tmp_path / f"{name}.json"))
    predicted = again.predict_many([s for s, _ in pairs[16:]])
    assert predicted.shape == (8,) and np.isfinite(predicted).all()
    assert np.allclose(predicted, predictor.predict_many([s for s, _ in pairs[16:]]))


CONTRACTS = {
    "spaces": space_contract, "strategies": strategy_contract, "evaluators": evaluator_contract,
    "formats": format_contract, "sources": source_contract, "teachers": teacher_contract,
    "device_kinds": device_kind_contract, "backends": backend_contract, "predicting_kinds": predicting_contract,
    "predictor_kinds": predictor_kind_contract,
}


def test_every_registry_has_a_contract():
    assert set(ALL) == set(CONTRACTS)


@pytest.mark.parametrize("registry", sorted(CONTRACTS))
def test_every_member_of_every_registry_keeps_its_contract(registry, tmp_path, request):
    contract = CONTRACTS[registry]
    wanted = [p for p in contract.__code__.co_varnames[3:contract.__code__.co_argcount]]
    fixtures = {name: request.getfixturevalue(name) for name in wanted}
    assert ALL[registry].names(), f"registry {registry} is empty"
    for name, member in ALL[registry].items():
        folder = tmp_path / name
        folder.mkdir()
        contract(name, member, folder, **fixtures)


PLUGIN = '''
"""A separate package adding a device kind (schema + measuring backend) and a strategy to edgekd."""
from typing import Literal

from edgekd.core.devices import DeviceEntry
from edgekd.core.measurement import Measurement
from edgekd.strategies import Strategy


class ConstantDevice(DeviceEntry):
    kind: Literal["constant"]
    latency_ms: float


class ConstantBackend:
    runtime = "constant-1"

    def __init__(self, spec):
        self.spec = spec

    def measure_onnx(self, path, input_shape):
        ms = self.spec.latency_ms
        return Measurement(ms, ms, ms, 3, 1, 1, self.runtime)

    def check(self):
        return [("constant", True, f"always {self.spec.latency_ms} ms")]


def first_value_strategy(seed, max_epochs):
    import optuna
    return Strategy(optuna.samplers.RandomSampler(seed=seed))
'''


def _install_plugin(site: Path, entry_points: str) -> dict[str, str]:
    """A plugin distribution on ``site`` (module + dist-info with entry points), found through importlib.metadata."""
    (site / "edgekd_plugin_demo.py").write_text(PLUGIN)
    info = site / "edgekd_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edgekd-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return {"PYTHONPATH": str(site), "PATH": str(Path(sys.executable).parent), "COLUMNS": "200"}


def test_a_separate_package_adds_a_device_kind_and_a_strategy_through_entry_points(tmp_path):
    env = _install_plugin(tmp_path, """
        [edgekd.device_kinds]
        constant = edgekd_plugin_demo:ConstantDevice
        [edgekd.backends]
        constant = edgekd_plugin_demo:ConstantBackend
        [edgekd.strategies]
        firstvalue = edgekd_plugin_demo:first_value_strategy
    """)
    (tmp_path / "devices.yaml").write_text("devices:\n  steady:\n    kind: constant\n    latency_ms: 1.5\n")
    edgekd = [sys.executable, "-m", "edgekd"]
    check = subprocess.run([*edgekd, "devices", "check", "steady", "--devices-file", str(tmp_path / "devices.yaml")],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert check.returncode == 0 and "always 1.5 ms" in check.stderr, check.stdout + check.stderr
    code = ("from edgekd.strategies import STRATEGIES; from edgekd.runtime import BACKENDS; "
            "print(sorted(set(STRATEGIES.names()) & {'firstvalue', 'random'}), 'constant' in BACKENDS)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert shown.stdout.split() == ["['firstvalue',", "'random']", "True"], shown.stderr


def test_a_broken_plugin_is_a_clear_error_naming_it(tmp_path):
    env = _install_plugin(tmp_path, """
        [edgekd.device_kinds]
        broken = edgekd_plugin_demo:NoSuchThing
    """)
    (tmp_path / "devices.yaml").write_text("devices:\n  x:\n    kind: local\n")
    done = subprocess.run([sys.executable, "-m", "edgekd", "devices", "--devices-file", str(tmp_path / "devices.yaml")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'broken'" in done.stderr and "edgekd_plugin_demo:NoSuchThing" in done.stderr


def test_two_members_under_one_name_are_refused():
    registry = Registry("test-only", "thing")
    registry.add("a", 1)
    registry.add("a", 1)  # the same member again (a module imported twice) is fine
    with pytest.raises(ConfigError, match="two things are registered as 'a'"):
        registry.add("a", 2)
    del ALL["test-only"]
