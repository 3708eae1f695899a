"""MnasNet's multi-objective reward, used by AKD with a KD-trained accuracy: ACC x (COST/T)^w."""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.core.errors import ConfigError

CONSTRAINTS = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}
"""(alpha, beta): w = alpha when the cost meets the target, beta when it exceeds it (MnasNet, section 3)."""


def mnas_reward(acc: float, cost: float, target: float, alpha: float, beta: float) -> float:
    """ACC x (COST / TARGET)^w with w = alpha if COST <= TARGET else beta."""
    if target <= 0 or cost <= 0:
        raise ConfigError(f"cost and target must be positive, got cost={cost}, target={target}")
    w = alpha if cost <= target else beta
    return acc * (cost / target) ** w


@dataclass(frozen=True)
class Reward:
    """The reward of one search: a constraint kind and a target on latency (ms) or MACs (millions)."""

    target: float
    metric: str = "latency_ms"
    constraint: str = "soft"

    def __post_init__(self) -> None:
        if self.constraint not in CONSTRAINTS:
            raise ConfigError(f"unknown constraint {self.constraint!r}; expected one of {sorted(CONSTRAINTS)}")
        if self.metric not in ("latency_ms", "mmacs"):
            raise ConfigError(f"unknown reward metric {self.metric!r}; expected latency_ms or mmacs")

    def describe(self) -> dict[str, float | str]:
        return {"target": self.target, "metric": self.metric, "constraint": self.constraint}

    def __call__(self, acc: float, metrics: dict[str, float]) -> float:
        alpha, beta = CONSTRAINTS[self.constraint]
        return mnas_reward(acc, metrics[self.metric], self.target, alpha, beta)
