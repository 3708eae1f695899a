"""FBNet's space as FBNet defines it, and layer-wise spaces read from a YAML file."""

import random

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.arch import ArchSpec, BlockSpec, ChannelShuffle, build
from edgekd.core.errors import ConfigError
from edgekd.exporters.onnx import export_onnx
from edgekd.latency_models.features import FEATURE_NAMES, features, operators, total_mmacs
from edgekd.latency_models.predictors import Predictor, fit_predictor
from edgekd.runtime.ort import open_onnx
from edgekd.spaces import make_space, space_of, space_preset
from edgekd.spaces.layerwise import FBNET

FBNET_OPS = FBNET.stages[0].ops


def _one_layer(op: str, cin: int, cout: int, stride: int) -> ArchSpec:
    from edgekd.spaces.layerwise import block_of

    return ArchSpec(resolution=16, in_channels=3, num_classes=10, stem_channels=cin, head_channels=32,
                    blocks=(block_of(op, cin, cout, stride, 0),))


def test_the_fbnet_macro_architecture_is_fbnets():
    space = make_space("fbnet", 224, 3, 1000, width=1.0)
    assert len(space.choices) == 22 and all(ops == FBNET_OPS for ops in space.choices.values())
    assert set(FBNET_OPS) == {"k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"}
    spec = space.decode({name: "k3_e6" for name in space.choices})
    assert [sum(b.stage == s for b in spec.blocks) for s in range(7)] == [1, 4, 4, 4, 4, 4, 1]
    assert sorted({b.out_channels for b in spec.blocks}) == [16, 24, 32, 64, 112, 184, 352]
    assert spec.stem_channels == 16 and spec.stem_stride == 2 and spec.head_channels == 1504
    size = 224 // spec.stem_stride
    for b in spec.blocks:
        size //= b.stride
    assert size == 7  # strides 2 at the stem and stages 1, 2, 3 and 5, as in FBNet's Table 1
    small = make_space("fbnet", 32, 3, 10, width=0.25).decode({n: "k3_e1" for n in space.choices})
    assert 32 // small.stem_stride // np.prod([b.stride for b in small.blocks]) == 4  # small inputs: fewer strides


@pytest.mark.parametrize("op", FBNET_OPS)
@pytest.mark.parametrize("cin, cout, stride", [(16, 16, 1), (16, 24, 2)])
def test_every_fbnet_operator_counts_like_thop_and_exports_exactly(op, cin, cout, stride, tmp_path, thop_conv_macs):
    spec = _one_layer(op, cin, cout, stride)
    analytic = sum(o.macs for o in operators(spec) if o.type not in ("add", "shuffle"))  # thop counts no adds
    assert analytic == thop_conv_macs(spec)
    assert len(features(spec)) == len(FEATURE_NAMES) and total_mmacs(spec) > 0
    torch.manual_seed(0)
    model = build(spec).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = open_onnx(export_onnx(model, spec.input_shape, tmp_path / "m.onnx"))(x)
    assert np.abs(got - ref).max() < 1e-4
    space = make_space("fbnet", 16, 3, 10, width=0.25)
    member = space.decode({name: op for name in space.choices})
    assert space.encode(member) == {name: op for name in space.choices}
    assert ArchSpec.from_json(member.to_json()) == member


def test_fbnet_blocks_are_fbnets_own():
    e1 = build(_one_layer("k3_e1", 16, 16, 1)).blocks[0].body
    assert sum(isinstance(m, nn.Conv2d) for m in e1.modules()) == 3  # e1 keeps its 1x1 expansion conv
    g2 = build(_one_layer("k5_e1_g2", 16, 16, 1)).blocks[0].body
    convs = [m for m in g2.modules() if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [2, 16, 2] and convs[1].kernel_size == (5, 5)
    assert isinstance(g2[1], ChannelShuffle)
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    projection = build(_one_layer("skip", 16, 24, 2)).blocks[0].body  # a stage's first layer: FBNet's 1x1 conv
    assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert projection[0].stride == (2, 2)
    assert isinstance(build(_one_layer("skip", 16, 16, 1)).blocks[0].body, nn.Identity)


def test_a_1x1_conv_block_has_latency_features():
    spec = ArchSpec(resolution=8, in_channels=3, num_classes=10, stem_channels=8, head_channels=16,
                    blocks=(BlockSpec(op="conv", kernel=1, out_channels=12),))
    x = dict(zip(FEATURE_NAMES, features(spec), strict=True))
    assert x["n_pw"] == 2 and x["mmacs_pw"] * 1e6 == 8 * 12 * 64 + 12 * 16 * 64


def test_ids_of_architectures_without_the_new_fields_are_unchanged():
    block = BlockSpec(op="mbconv", kernel=3, out_channels=16, expand=3)
    assert "groups" not in block.to_dict() and "shuffle" not in block.to_dict()
    spec = ArchSpec(resolution=8, in_channels=3, num_classes=10, stem_channels=8, head_channels=16, blocks=(block,))
    assert spec.id == "57aa118a88ab3530"  # as before groups and shuffle existed
    with pytest.raises(ConfigError, match="belong to fbnet blocks"):
        BlockSpec(op="mbconv", kernel=3, out_channels=16, groups=2)


def test_a_predictor_file_from_before_the_new_operator_types_still_predicts():
    space = make_space("fbnet", 16, 3, 10, width=0.25)
    rng = random.Random(0)
    specs = [space.decode(space.sample(rng)) for _ in range(14)]
    pairs = [(s, 0.1 + total_mmacs(s) / 10) for s in specs]
    current = fit_predictor("lut", pairs)
    old_names = [n for n in FEATURE_NAMES if not n.endswith(("_gpw", "_shuffle"))]
    old = Predictor("lut", {"coef": [0.01] * (len(old_names) - 1) + [0.05]}, {"features": old_names})
    assert np.isfinite(old.predict_many(specs)).all() and np.isfinite(current.predict_many(specs)).all()
    assert set(current.lut_table()) >= {"gpw", "shuffle", "network"} and "gpw" not in old.lut_table()


SPACE_FILE = """
stem: {channels: 16, stride: 2}
stages:
  - {layers: 1, channels: 16, ops: [k3_e1, skip]}
  - {layers: 2, channels: 24, stride: 2, ops: [k3_e1, k3_e1_g2, k5_e3, skip]}
  - {layers: 2, channels: 32, stride: 2, ops: [k3_e3, k5_e6]}
head_channels: 256
"""


def test_a_space_file_is_a_layerwise_space_that_round_trips(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(SPACE_FILE)
    space = space_preset(str(path))(resolution=16, in_channels=3, num_classes=10, width=1.0)
    assert list(space.choices) == ["s0_l0", "s1_l0", "s1_l1", "s2_l0", "s2_l1"] and space.size == 2 * 16 * 4
    rng = random.Random(1)
    for _ in range(10):
        choices = space.sample(rng)
        spec = space.decode(choices)
        assert space.encode(spec) == choices and build(spec)(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    again = space_of(space.describe())  # as a predictor file reads it back
    assert again.decode(choices) == space.decode(choices) and again.describe() == space.describe()


@pytest.mark.parametrize("body, says", [
    (SPACE_FILE.replace("k5_e3", "k9_e3"), "unknown operator(s) ['k9_e3']"),
    (SPACE_FILE.replace("layers: 1,", "layers: 0,"), "field stages.0.layers"),
    (SPACE_FILE.replace("head_channels: 256", "head_channels: 256\ncolour: red"), "field colour"),
    (SPACE_FILE.replace("stride: 2}\nstages", "stride: 3}\nstages"), "field stem.stride"),
    (SPACE_FILE.replace("[k3_e3, k5_e6]", "[k3_e3, k3_e3]"), "listed twice"),
    ("stages: [", "not valid YAML"),
])
def test_a_bad_space_file_is_a_clear_error_naming_the_file_and_field(tmp_path, body, says):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=r"bad\.yaml") as exc:
        space_preset(str(path))
    assert says in str(exc.value)
    with pytest.raises(ConfigError, match="space file not found"):
        space_preset(str(tmp_path / "missing.yaml"))


def test_a_search_over_a_space_file_and_over_fbnet_from_the_command_line(tmp_path, fast_devices_yaml):
    fast_devices_yaml()
    (tmp_path / "mine.yaml").write_text(SPACE_FILE)
    tiny = ["--data", "synthetic", "--resolution", "16", "--teacher-epochs", "1", "--proxy-epochs", "1",
            "--trials", "2", "--runs-dir", str(tmp_path / "runs"), "--space-width", "0.25"]
    for name, space in (("file", "mine.yaml"), ("fb", "fbnet")):
        result = CliRunner().invoke(app, ["search", "--name", name, "--space", space, *tiny])
        assert result.exit_code == 0, result.output
    (tmp_path / "mine.yaml").write_text(SPACE_FILE.replace("head_channels: 256", "head_channels: 128"))
    result = CliRunner().invoke(app, ["search", "--name", "file", "--space", "mine.yaml", *tiny])
    assert result.exit_code == 2 and "space_sha256" in result.output  # an edited file is another space
