import pytest

from edgekd.core.errors import ConfigError
from edgekd.pipeline.reward import Reward, mnas_reward


@pytest.mark.parametrize(
    "acc, lat, target, constraint, expected",
    [
        # MnasNet soft constraint, w = -0.07 on both sides: 0.75 * 2^-0.07 and 0.75 * 0.5^-0.07
        (0.75, 160.0, 80.0, "soft", 0.7144785),
        (0.75, 40.0, 80.0, "soft", 0.7872875),
        (0.75, 80.0, 80.0, "soft", 0.75),
        # hard constraint: no reward for being faster, 1/x penalty above target
        (0.75, 40.0, 80.0, "hard", 0.75),
        (0.75, 160.0, 80.0, "hard", 0.375),
    ],
)
def test_reward_matches_hand_computed_mnasnet_values(acc, lat, target, constraint, expected):
    assert Reward(target, "latency_ms", constraint)(acc, {"latency_ms": lat}) == pytest.approx(expected, rel=1e-6)


def test_flops_target_uses_the_macs_metric():
    r = Reward(300.0, "mmacs", "hard")
    assert r(0.8, {"mmacs": 600.0, "latency_ms": 1.0}) == pytest.approx(0.4)


def test_bad_reward_inputs_are_errors():
    with pytest.raises(ConfigError):
        Reward(1.0, "energy")
    with pytest.raises(ConfigError):
        mnas_reward(0.5, 0.0, 1.0, -0.07, -0.07)
