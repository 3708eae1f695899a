"""nn-Meter through the `nnmeter` extra: a small predictor in nn-Meter's own format, registered with nn-Meter's
own CLI, predicts edgekd architectures. nn-Meter keeps its registry under ~, so every step runs in a process
whose HOME is a temporary folder."""

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
from sklearn.ensemble import RandomForestRegressor

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nn_meter") is None,
                                reason="nn-Meter is not installed (pip install 'edgekd[nnmeter]')")

# Kernels nn-Meter detects in edgekd's ONNX models, with the length of its feature vector for each.
KERNELS = {"conv-bn-relu": 7, "dwconv-bn-relu": 7, "fc": 4, "global-avgpool": 2, "add": 3}
FLOPS_FEATURE = {"conv-bn-relu": 5, "dwconv-bn-relu": 5, "fc": 2, "global-avgpool": 1, "add": 1}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A HOME where a small predictor `edgekd-test` is registered with `nn-meter register`."""
    home = tmp_path_factory.mktemp("home")
    folder = home / "edgekd-test-predictor"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for kernel, n in KERNELS.items():
        x = rng.uniform(0, 10, size=(200, n))
        y = 0.01 + 0.02 * x[:, FLOPS_FEATURE[kernel]]  # ms: overhead plus a cost per MFLOP, as on a device
        with (folder / f"{kernel}.pkl").open("wb") as f:
            pickle.dump(RandomForestRegressor(n_estimators=10, random_state=0).fit(x, y), f)
    rules = {f"BF_{a}_{b}": {"obey": True} for a, b in [("conv", "bn"), ("conv", "relu"), ("dwconv", "bn"),
                                                        ("dwconv", "relu"), ("bn", "relu")]}
    (folder / "fusion_rules.json").write_text(json.dumps(rules))
    meta = {"name": "edgekd-test", "version": 1.0, "category": "cpu", "package_location": str(folder),
            "kernel_predictors": list(KERNELS)}
    (home / "meta.yaml").write_text(yaml.safe_dump(meta))
    (home / "devices.yaml").write_text(yaml.safe_dump({"devices": {
        "phone": {"kind": "nnmeter", "predictor": "edgekd-test", "version": 1.0},
        "unknown": {"kind": "nnmeter", "predictor": "not-registered"},
    }}))
    cli = shutil.which("nn-meter", path=os.path.dirname(sys.executable))
    subprocess.run([cli, "register", "--predictor", str(home / "meta.yaml")], check=True, env=_env(home),
                   capture_output=True)
    return home


def _env(home):
    return {**os.environ, "HOME": str(home)}


def _run(home, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=_env(home), capture_output=True,
                          text=True, cwd=home)


def test_a_registered_nn_meter_predictor_predicts_edgekd_architectures(home):
    result = _run(home, """
        import json, random
        from pathlib import Path
        from edgekd.core.devices import get_device
        from edgekd.latency_models import make_latency_model
        from edgekd.spaces import make_space
        space = make_space("mnas", 16, 1, 10, width=0.25)
        base = space.sample(random.Random(0))
        def variant(layers, width):
            return space.decode({**base, **{f"s{i}_layers": layers for i in range(7)},
                                 **{f"s{i}_width": width for i in range(7)}})
        model = make_latency_model(get_device("phone", Path("devices.yaml")), Path("cache.sqlite"))
        print(json.dumps({"kind": type(model).__name__, "small": model.latency_ms(variant(-1, 0.75)),
                          "big": model.latency_ms(variant(1, 1.25))}))
    """)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["kind"] == "NnMeterLatency" and 0 < out["small"] < out["big"]


def test_devices_check_loads_it_and_an_unregistered_one_is_a_clear_error(home):
    check = [shutil.which("edgekd", path=os.path.dirname(sys.executable)), "devices", "check"]
    ok = subprocess.run([*check, "phone", "--devices-file", "devices.yaml"], env=_env(home), cwd=home,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*check, "unknown", "--devices-file", "devices.yaml"], env=_env(home), cwd=home,
                         capture_output=True, text=True)
    assert bad.returncode == 4 and "no predictor 'not-registered'" in bad.stderr + bad.stdout
