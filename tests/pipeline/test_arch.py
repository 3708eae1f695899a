import random

import pytest
import torch

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.errors import ConfigError
from edgekd.spaces import make_space


@pytest.fixture
def space():
    return make_space("mnas", resolution=16, in_channels=3, num_classes=10, width=0.25)


def test_json_round_trip_preserves_spec_and_id(space):
    spec = space.decode(space.sample(random.Random(3)))
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec
    assert again.id == spec.id


def test_id_is_stable_and_ignores_display_name(space):
    spec = space.decode(space.sample(random.Random(3)))
    renamed = ArchSpec.from_dict({**spec.to_dict(), "name": "my-student"})
    assert renamed.id == spec.id
    # Same content built independently gives the same id (a pinned hash would break on purpose-made changes).
    assert space.decode(space.sample(random.Random(3))).id == spec.id
    assert space.decode(space.sample(random.Random(4))).id != spec.id


def test_id_changes_with_any_block_field(space):
    spec = space.decode(space.sample(random.Random(0)))
    first = spec.blocks[0]
    changed = ArchSpec.from_dict({**spec.to_dict(), "blocks": [{**first.__dict__, "kernel": first.kernel + 2}]
                                  + [b.__dict__ for b in spec.blocks[1:]]})
    assert changed.id != spec.id


def test_build_gives_logits_of_the_right_shape(space):
    spec = space.decode(space.sample(random.Random(1)))
    out = build(spec).eval()(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)


def test_bad_block_values_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown block op"):
        BlockSpec(op="transformer", kernel=3, out_channels=8)
    with pytest.raises(ConfigError, match="kernel must be odd"):
        BlockSpec(op="conv", kernel=4, out_channels=8)
    with pytest.raises(ConfigError, match="not a valid ArchSpec"):
        ArchSpec.from_dict({"resolution": 8})
