"""Evaluators estimate a candidate's accuracy: the KD proxy trains it with distillation (AKD, AutoKD); the
one-shot evaluators read it off a trained supernet (EnNAS, SPOS) or DNA's block ratings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edgekd.core.arch import ArchSpec
    from edgekd.core.config import KDConfig

EpochReport = Callable[[int, float], None]
"""Called with (epoch, mini-val accuracy) after every epoch; may raise to stop the candidate (pruning)."""


class Evaluator(Protocol):
    budget: int
    """Epochs a full evaluation reports (the pruner's maximum budget)."""

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        """Estimated accuracy of ``spec`` (higher is better), trained with ``kd`` (None: the evaluator's own)."""
        ...
