"""Knowledge distillation: Hinton's loss and the one trainer used by proxy evaluation and final distillation."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.config import KDConfig, TrainConfig
from edgekd.pipeline.data import Data


def kd_loss(student: Tensor, teacher: Tensor | None, labels: Tensor, alpha: float = 0.9, tau: float = 1.0) -> Tensor:
    """(1-alpha)·CE(student, labels) + alpha·tau²·KL(softmax(teacher/tau) ‖ softmax(student/tau))."""
    ce = F.cross_entropy(student, labels)
    if teacher is None or alpha == 0:
        return ce
    log_s, log_t = F.log_softmax(student / tau, 1), F.log_softmax(teacher / tau, 1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    return (1 - alpha) * ce + alpha * tau**2 * kl


@dataclass
class EpochStats:
    epoch: int
    loss: float
    train_acc: float
    eval_acc: float | None
    lr: float


@torch.no_grad()
def predict_logits(model: nn.Module, data: Data, split: str, batch_size: int = 256) -> Tensor:
    """Logits of ``model`` (eval mode) for every image of ``split``, in split order."""
    model.eval()
    return torch.cat([model(x) for x, _, _ in data.batches(split, batch_size)])


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def evaluate(model: nn.Module, data: Data, split: str) -> float:
    """Top-1 accuracy of ``model`` on ``split``."""
    return accuracy(predict_logits(model, data, split), data.labels[data.index(split)])


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on ``batches``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    for x in batches:
        model(x)
    for bn in norms:
        bn.momentum = 0.1
    model.eval()


def calibration_batches(data: Data, images: int = 256, batch_size: int = 64) -> list[Tensor]:
    """The first ``images`` mini-train images (a fixed set, so every path is calibrated alike)."""
    out, seen = [], 0
    for x, _, _ in data.batches("mini_train", batch_size):
        out.append(x)
        seen += len(x)
        if seen >= images:
            break
    return out


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def steps_per_epoch(data: Data, split: str, batch_size: int) -> int:
    return math.ceil(len(data.index(split)) / batch_size)


class StepSchedule:
    """AdamW with warm-up then cosine decay of the learning rate over ``cfg.epochs`` epochs of ``steps_per_epoch``."""

    def __init__(self, params: Iterable[nn.Parameter], cfg: TrainConfig, steps_per_epoch: int) -> None:
        total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, warmup, total))

    def step(self, loss: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])


def train(
    model: nn.Module,
    data: Data,
    cfg: TrainConfig,
    kd: KDConfig | None = None,
    teacher_logits: Tensor | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    seed: int = 0,
    checkpoint: Path | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``model`` on ``train_split``, with KD against ``teacher_logits`` (indexed by dataset index) if given.

    With ``checkpoint``, the state after every epoch is saved atomically and a later call resumes from it.
    Shuffling is seeded per epoch, so a resumed run follows the same path as an uninterrupted one.
    ``on_epoch`` may raise (Optuna's pruning, say) to stop early.
    """
    kd = kd or KDConfig(alpha=0.0)
    schedule = StepSchedule(model.parameters(), cfg, steps_per_epoch(data, train_split, cfg.batch_size))
    history = [EpochStats(**h) for h in load_training_state(checkpoint, model, schedule)]
    for epoch in range(len(history), cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y, idx in data.batches(train_split, cfg.batch_size, shuffle=True, generator=gen):
            logits = model(x)
            t = teacher_logits[idx] if teacher_logits is not None else None
            loss = kd_loss(logits, t, y, alpha=kd.alpha, tau=kd.tau)
            schedule.step(loss)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        stats = EpochStats(
            epoch=epoch + 1, loss=loss_sum / seen, train_acc=correct / seen,
            eval_acc=evaluate(model, data, eval_split) if eval_split else None, lr=schedule.sched.get_last_lr()[0],
        )
        history.append(stats)
        if checkpoint is not None:
            save_training_state(checkpoint, model, schedule, [asdict(h) for h in history])
        if on_epoch is not None:
            on_epoch(stats)
    return history


def save_training_state(path: Path, model: nn.Module, schedule: StepSchedule, history: list) -> None:
    """The model, its optimiser and schedule and the per-epoch history, written atomically (a crash never leaves
    half a checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "schedule": schedule.state_dict(), "history": history}, tmp)
    tmp.replace(path)


def load_training_state(path: Path | None, model: nn.Module, schedule: StepSchedule) -> list:
    """Restore what :func:`save_training_state` wrote into ``model`` and ``schedule``; returns the history (empty
    when there is no checkpoint yet)."""
    if path is None or not path.is_file():
        return []
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    schedule.load_state_dict(state["schedule"])
    return state["history"]


def saved_epochs(path: Path) -> int:
    """Epochs recorded in the checkpoint at ``path`` (0 when there is none yet)."""
    return len(torch.load(path, weights_only=False)["history"]) if path.is_file() else 0
