"""Distillation losses shared by the tasks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kd_loss(student: Tensor, teacher: Tensor | None, labels: Tensor, alpha: float = 0.9, tau: float = 1.0) -> Tensor:
    """(1-alpha)·CE(student, labels) + alpha·tau²·KL(softmax(teacher/tau) ‖ softmax(student/tau))."""
    student = student.float()  # the loss in fp32 under mixed precision
    ce = F.cross_entropy(student, labels)
    if teacher is None or alpha == 0:
        return ce
    return (1 - alpha) * ce + alpha * tau**2 * soft_kl(student, teacher.float(), tau)


def soft_kl(student: Tensor, teacher: Tensor, tau: float) -> Tensor:
    """KL(softmax(teacher/tau) ‖ softmax(student/tau)), the batch mean."""
    log_s, log_t = F.log_softmax(student / tau, 1), F.log_softmax(teacher / tau, 1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
