"""Evaluators estimate a candidate's accuracy: the KD proxy trains it with distillation (AKD, AutoKD); the
one-shot evaluators read it off a trained supernet (EnNAS, SPOS) or DNA's block ratings."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from edgekd.config import KDConfig, TrainConfig
from edgekd.data import Data
from edgekd.pipeline.arch import ArchSpec, build
from edgekd.pipeline.dna import BlockRatings, BlockwiseStudent, path_loss
from edgekd.pipeline.supernet import Supernet, extract_calibrated
from edgekd.train import LOCAL, EpochStats, Runtime, TeacherSignal, calibration_batches, evaluate, recalibrate_bn, train

CALIBRATION_IMAGES = 2048
"""Mini-train images the proxy's BatchNorm statistics are estimated on (all of them on the embedded data): with
only 256, final mini-val accuracy came out up to 3 points below the running statistics' on the quick-start space."""

EpochReport = Callable[[int, float], None]
"""Called with (epoch, mini-val accuracy) after every epoch; may raise to stop the candidate (pruning)."""


class Evaluator(Protocol):
    budget: int
    """Epochs a full evaluation reports (the pruner's maximum budget)."""

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        """Estimated accuracy of ``spec`` (higher is better), trained with ``kd`` (None: the evaluator's own)."""
        ...


class KDProxyEvaluator:
    """Train the candidate from scratch with KD on mini-train for ``proxy.epochs``; score it on mini-val after
    every epoch, with its BatchNorm statistics recalibrated on mini-train first.

    The recalibration matters most in the early epochs, where a pruner decides: the running statistics lag
    weights that still move fast. Without it every candidate of the quick-start space scored chance (0.10) on
    mini-val after its first epoch, against 0.38-0.58 with it. ``kd.alpha = 0`` gives conventional NAS (hard
    labels only), the baseline AKD compares against.
    """

    def __init__(self, data: Data, teacher: TeacherSignal | Tensor | None, proxy: TrainConfig, kd: KDConfig,
                 seed: int = 0, runtime: Runtime = LOCAL) -> None:
        self.data, self.teacher, self.proxy, self.kd, self.seed, self.runtime = data, teacher, proxy, kd, seed, runtime
        self.budget = proxy.epochs
        self.calibration = calibration_batches(data, CALIBRATION_IMAGES)

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        torch.manual_seed(self.seed)
        model = build(spec)
        scores: list[float] = []

        def score(m: nn.Module) -> float:
            recalibrate_bn(m, self.calibration)
            return evaluate(m, self.data, "mini_val", workers=self.runtime.workers)

        def on_epoch(stats: EpochStats) -> None:
            scores.append(stats.eval_acc)
            if report:
                report(stats.epoch, scores[-1])

        train(model, self.data, self.proxy, kd or self.kd, self.teacher, split="mini_train", seed=self.seed,
              evaluate=score, on_epoch=on_epoch, runtime=self.runtime)
        return scores[-1]


class SupernetEvaluator:
    """Mini-val accuracy of the candidate's path with the supernet's weights (BatchNorm recalibrated on
    mini-train first), for a supernet trained by EnNAS or single-path (SPOS) training. ``kd`` is not used."""

    budget = 1

    def __init__(self, supernet: Supernet, data: Data, workers: int = 0) -> None:
        self.supernet, self.data, self.workers = supernet, data, workers
        self.calibration = calibration_batches(data)

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        net = extract_calibrated(self.supernet, self.supernet.space.encode(spec), self.calibration)
        acc = evaluate(net, self.data, "mini_val", workers=self.workers)
        if report:
            report(1, acc)
        return acc


class DNAEvaluator:
    """DNA's score exp(-L), L the candidate's summed normalised block loss: 1 when every block reproduces the
    teacher exactly, falling as the blocks miss it (monotone in DNA's rating, so strategies and the reward can use
    it like an accuracy). ``kd`` is not used."""

    budget = 1

    def __init__(self, student: BlockwiseStudent, ratings: list[BlockRatings]) -> None:
        self.student, self.ratings = student, ratings

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        score = math.exp(-path_loss(self.student, self.ratings, self.student.supernet.space.encode(spec)))
        if report:
            report(1, score)
        return score
