"""Evaluators estimate a candidate's accuracy; the KD proxy trains it with distillation (AKD, AutoKD)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from edgekd.config import KDConfig, TrainConfig
from edgekd.pipeline.arch import ArchSpec, build
from edgekd.pipeline.data import Data
from edgekd.pipeline.kd import train

EpochReport = Callable[[int, float], None]
"""Called with (epoch, mini-val accuracy) after every epoch; may raise to stop the candidate (pruning)."""


class Evaluator(Protocol):
    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        """Estimated accuracy of ``spec`` (higher is better), trained with ``kd`` (None: the evaluator's own)."""
        ...


class KDProxyEvaluator:
    """Train the candidate from scratch with KD on mini-train for ``proxy.epochs``; score it on mini-val.

    ``kd.alpha = 0`` gives conventional NAS (hard labels only), the baseline AKD compares against.
    """

    def __init__(self, data: Data, teacher_logits: Tensor | None, proxy: TrainConfig, kd: KDConfig, seed: int = 0):
        self.data, self.teacher_logits, self.proxy, self.kd, self.seed = data, teacher_logits, proxy, kd, seed

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        torch.manual_seed(self.seed)
        model = build(spec)
        history = train(
            model, self.data, self.proxy, kd or self.kd, self.teacher_logits, train_split="mini_train",
            eval_split="mini_val", seed=self.seed,
            on_epoch=(lambda s: report(s.epoch, s.eval_acc)) if report else None,
        )
        return float(history[-1].eval_acc)
