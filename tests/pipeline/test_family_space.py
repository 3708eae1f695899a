"""AutoKD's student families: a family's hyper-parameters draw students deterministically per seed; they build,
export, count and predict like every ArchSpec; the best family's samples are distilled and reported."""

import json
import random

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.arch import ArchSpec, build, sinks_of
from edgekd.core.errors import ConfigError
from edgekd.exporters.onnx import export_onnx
from edgekd.latency_models.features import operators
from edgekd.runtime.ort import open_onnx
from edgekd.spaces import make_space, space_of
from edgekd.spaces.family import draw_wiring, split_stages


@pytest.fixture
def space():
    return make_space("family", 16, 1, 10, width=0.25)


def test_a_family_draws_the_same_student_for_a_seed_and_others_for_other_seeds(space):
    rng = random.Random(0)
    for _ in range(5):
        family = space.sample(rng)
        first, again = space.member(family, 0), space.member(family, 0)
        assert first == again and first.id == again.id and space.decode(family) == first
        assert space.encode(first) == family and ArchSpec.from_json(first.to_json()) == first
        others = {space.member(family, seed).id for seed in range(1, 6)}
        big = family["top_nodes"] * family["mid_nodes"] * family["bottom_nodes"] > 4
        assert first.id not in others and (len(others) > 1 or not big)  # the seed is part of the id
        assert space.encode(space.member(family, 3)) == family


@pytest.mark.parametrize("model", ["er", "ws", "ba"])
def test_each_random_graph_model_gives_a_dag_whose_every_node_has_an_input(model):
    for n in (1, 2, 5, 8):
        wiring = draw_wiring(model, n, 0.5, 4, seed=n)
        assert len(wiring) == n and all(preds and all(-1 <= p < i for p in preds) for i, preds in enumerate(wiring))
        assert sinks_of(wiring)
    stages = split_stages(draw_wiring("er", 6, 0.8, 2, seed=0), "1:2:1")
    assert [len(s) for s in stages] == [2, 3, 1]
    with pytest.raises(ConfigError, match="random-graph model"):
        draw_wiring("smallworld", 4, 0.5, 2, seed=0)


def test_family_students_build_export_and_count_like_thop(space, tmp_path, thop_conv_macs):
    rng = random.Random(2)
    for i in range(3):
        spec = space.decode(space.sample(rng))
        analytic = sum(o.macs for o in operators(spec) if o.type != "add")  # thop counts no additions
        assert analytic == thop_conv_macs(spec)
        torch.manual_seed(0)
        model = build(spec).eval()
        x = np.random.default_rng(i).standard_normal((3, 1, 16, 16), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert np.abs(open_onnx(export_onnx(model, spec.input_shape, tmp_path / f"{i}.onnx"))(x) - ref).max() < 1e-4
        assert space_of(space.describe()).decode(space.encode(spec)) == spec


def test_bohb_searches_families_and_the_best_familys_samples_are_distilled_and_reported(tmp_path, fast_devices_yaml):
    fast_devices_yaml()
    args = ["run", "--name", "fam", "--runs-dir", str(tmp_path / "runs"), "--data", "synthetic", "--resolution", "16",
            "--teacher-epochs", "1", "--space", "family", "--space-width", "0.25", "--strategy", "bohb",
            "--search-kd", "--trials", "3", "--proxy-epochs", "2", "--distill-epochs", "1", "--family-samples", "3",
            "--target-mmacs", "5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "fam"
    best = json.loads((run / "search" / "best.json").read_text())
    report = json.loads((run / "student" / "family.json").read_text())
    assert report["family"] == dict(best["arch"]["graph"]["family"]) and [r["seed"] for r in report["samples"]] == [
        0, 1, 2]
    accs = [r["val_acc"] for r in report["samples"]]
    assert report["val_acc_mean"] == pytest.approx(np.mean(accs))
    assert report["val_acc_std"] == pytest.approx(np.std(accs, ddof=1))
    assert len({r["arch_id"] for r in report["samples"]}) == 3
    assert (run / "bundle" / "fam-0.1.0.tar.gz").is_file()
