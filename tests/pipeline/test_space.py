import math
import random

import pytest

from edgekd.core.errors import ConfigError
from edgekd.spaces import make_space


@pytest.mark.parametrize("resolution, downsamplings", [(8, 1), (16, 2), (32, 3), (224, 5)])
def test_strides_adapt_to_the_input_resolution(resolution, downsamplings):
    space = make_space("mnas", resolution, 3, 10)
    spec = space.decode(space.sample(random.Random(0)))
    strides = [spec.stem_stride] + [b.stride for b in spec.blocks]
    assert strides.count(2) == downsamplings
    assert resolution / 2**downsamplings >= 4


@pytest.mark.parametrize("name", ["mnas", "mbv2"])
def test_decode_encode_round_trip_on_many_samples(name):
    space = make_space(name, 16, 1, 10, width=0.5)
    rng = random.Random(0)
    for _ in range(200):
        spec = space.decode(space.sample(rng))
        assert space.decode(space.encode(spec)) == spec


def test_search_decisions_shape_the_network():
    space = make_space("mnas", 16, 1, 10)
    choices = space.sample(random.Random(0)) | {"s3_layers": 1, "s3_op": "mbconv_e6", "s3_kernel": 7, "s3_se": 0.25}
    stage = [b for b in space.decode(choices).blocks if b.stage == 3]
    assert len(stage) == 5  # MnasNet-A1 has 4 layers in stage 3, +1
    assert {(b.op, b.expand, b.kernel, b.se_ratio) for b in stage} == {("mbconv", 6, 7, 0.25)}
    ds = space.decode(choices | {"s3_op": "dsconv", "s3_skip": "identity"})
    ds_stage = [b for b in ds.blocks if b.stage == 3]
    assert {b.op for b in ds_stage} == {"dsconv"}
    assert [b.residual for b in ds_stage] == [False, True, True, True, True]


def test_mutate_changes_exactly_one_decision_and_crossover_mixes_parents():
    space = make_space("mnas", 16, 1, 10)
    rng = random.Random(1)
    a, b = space.sample(rng), space.sample(rng)
    child = space.mutate(a, rng)
    assert sum(child[k] != a[k] for k in a) == 1
    mixed = space.crossover(a, b, rng)
    assert all(mixed[k] in (a[k], b[k]) for k in a)
    assert space.size == math.prod(len(v) for v in space.choices.values())


def test_invalid_choices_and_unknown_space_are_errors():
    space = make_space("mnas", 16, 1, 10)
    with pytest.raises(ConfigError, match="s0_kernel=4"):
        space.decode(space.sample(random.Random(0)) | {"s0_kernel": 4})
    with pytest.raises(ConfigError, match="unknown search space"):
        make_space("darts", 16, 1, 10)
