"""What a student learns from: a teacher's cached logits, a frozen teacher run on every batch, or a teacher that
is trained alongside the student.

Cached logits are only right where a batch's images are fixed; with augmentation the teacher must see the same
augmented batch as the student, so it runs online.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from edgekd.train.devices import TrainDevice


class TeacherSignal(Protocol):
    learns: bool
    """Whether the teacher is trained with the student (its parameters are optimised too)."""

    def prepare(self, device: TrainDevice) -> None: ...

    def logits(self, x: Tensor, idx: Tensor) -> Tensor:
        """The teacher's logits for a batch: normalized images ``x`` (on the device), dataset indices ``idx``."""


class CachedLogits:
    """Logits computed once for every image of the data set, looked up by dataset index."""

    learns = False

    def __init__(self, table: Tensor) -> None:
        self.table, self.device = table, torch.device("cpu")

    def prepare(self, device: TrainDevice) -> None:
        self.device = device.device

    def logits(self, x: Tensor, idx: Tensor) -> Tensor:
        return self.table[idx].to(self.device, non_blocking=True)


class FrozenTeacher:
    """A fixed teacher model run on each batch, in eval mode and without gradients."""

    learns = False

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def prepare(self, device: TrainDevice) -> None:
        device.prepare(self.model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def logits(self, x: Tensor, idx: Tensor) -> Tensor:
        return self.model(x)


class LearningTeacher:
    """A teacher trained together with the student (PAMKD's learners): the task optimises both, the teacher on
    the labels and the student from the teacher's detached logits."""

    learns = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def prepare(self, device: TrainDevice) -> None:
        device.prepare(self.model)

    def logits(self, x: Tensor, idx: Tensor) -> Tensor:
        return self.model(x)
