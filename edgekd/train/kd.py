"""Training a network on labels and, optionally, a teacher (Hinton's KD): the task behind the teacher's own
training, proxy evaluation of candidates, final distillation and the ablation's trainings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.core.config import KDConfig, TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.data import Data
from edgekd.train.devices import TrainDevice
from edgekd.train.loop import LOCAL, Batch, EpochStats, Runtime, fit
from edgekd.train.losses import kd_loss
from edgekd.train.teachers import CachedLogits, TeacherSignal


class StudentAndTeacher(nn.Module):
    """Both networks of a learning teacher in one module, so that one optimiser (and one data-parallel wrapper)
    trains them together."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.student(x), self.teacher(x)


class DistillTask:
    """(1-alpha)·CE + alpha·tau²·KL against the teacher's logits (CE only without a teacher or with alpha 0); a
    learning teacher adds its own CE on the labels and teaches through its detached logits."""

    find_unused_parameters = False

    def __init__(self, model: nn.Module, kd: KDConfig, teacher: TeacherSignal | None = None) -> None:
        self.kd, self.teacher = kd, teacher
        self.learning = teacher is not None and teacher.learns
        self.scored = model
        self.module = StudentAndTeacher(model, teacher.model) if self.learning else model  # type: ignore[union-attr]

    def prepare(self, device: TrainDevice) -> None:
        if self.teacher is not None:
            self.teacher.prepare(device)

    def begin_epoch(self, epoch: int, saved: dict[str, Any] | None) -> dict[str, Any]:
        return {}

    def loss(self, net: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]]:
        metrics: dict[str, float] = {}
        if self.learning:
            s, t = net(batch.x)
            own = F.cross_entropy(t.float(), batch.y)
            metrics["teacher_acc"] = float((t.argmax(1) == batch.y).float().mean())
            loss = kd_loss(s, t.detach(), batch.y, self.kd.alpha, self.kd.tau) + own
        else:
            s = net(batch.x)
            t = self.teacher.logits(batch.x, batch.idx) if self.teacher is not None and self.kd.alpha else None
            loss = kd_loss(s, t, batch.y, self.kd.alpha, self.kd.tau)
        metrics["acc"] = float((s.argmax(1) == batch.y).float().mean())
        return loss, metrics


def train(model: nn.Module, data: Data, cfg: TrainConfig, kd: KDConfig | None = None,
          teacher: TeacherSignal | Tensor | None = None, split: str = "train", seed: int = 0,
          checkpoint: Path | None = None, evaluate: Callable[[nn.Module], float] | None = None,
          on_epoch: Callable[[EpochStats], None] | None = None, runtime: Runtime = LOCAL) -> list[EpochStats]:
    """Train ``model`` on ``split`` with KD from ``teacher`` (a signal, or a tensor of cached logits indexed by
    dataset index); hard labels only without one. See :func:`edgekd.train.loop.fit` for the rest."""
    if isinstance(teacher, Tensor):
        teacher = CachedLogits(teacher)
    if isinstance(teacher, CachedLogits) and runtime.augment != "none":
        raise ConfigError("cached teacher logits describe un-augmented images; with augmentation the teacher must "
                          "run on each batch (FrozenTeacher)")
    task = DistillTask(model, kd or KDConfig(alpha=0.0), teacher)
    return fit(task, data, split, cfg, runtime, seed, checkpoint, evaluate, on_epoch)
