"""The teacher a run trains on the spot depends on the run's seed only."""

import torch

from edgekd.pipeline.data import load_data
from edgekd.pipeline.teacher import prepare_teacher


def test_the_same_seed_trains_the_same_teacher(tiny_config, tmp_path):
    data = load_data(tiny_config.data, tiny_config.seed, tiny_config.resolution)
    first = prepare_teacher(tiny_config, data, tmp_path / "a")
    torch.rand(100)  # whatever the process drew before must not matter
    second = prepare_teacher(tiny_config, data, tmp_path / "b")
    other = prepare_teacher(tiny_config.model_copy(update={"seed": 1}), data, tmp_path / "c")
    assert torch.equal(first.logits, second.logits)
    assert not torch.equal(first.logits, other.logits)
