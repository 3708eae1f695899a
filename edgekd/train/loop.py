"""The one training loop: every model edgekd trains (teacher, proxy candidates, final students, one-shot
supernets, DNA's block-wise student) goes through :func:`fit`.

What is trained and how its loss is computed is a :class:`Task`; where and how it runs (device, precision,
processes, loader workers, augmentation, mid-epoch checkpoints) is a :class:`Runtime`. The loop adds what every
training needs: AdamW with warm-up and cosine decay, data-parallel gradients under torchrun, mixed precision,
the state saved after every epoch (and every N steps or minutes inside one), and resumption that follows the
same path as an uninterrupted run: the order of the batches and every augmentation are functions of (seed,
epoch, step), not of when the run stopped.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from edgekd.core.config import TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.core.ui import progress
from edgekd.data import Augment, Data
from edgekd.train.devices import CPU, TrainDevice, memory_format_of
from edgekd.train.distributed import SINGLE, DistEnv
from edgekd.train.state import load_state, save_state

STEP_BAR_MIN_STEPS = 100
"""Epochs with at least this many steps show a bar of their own steps."""


@dataclass(frozen=True)
class Runtime:
    """Where and how training runs; none of it changes what a seeded run computes on one device."""

    device: TrainDevice = CPU
    dist: DistEnv = SINGLE
    workers: int = 0
    augment: Augment = "none"
    checkpoint_steps: int | None = None
    checkpoint_minutes: float | None = None


LOCAL = Runtime()
"""This process, on the CPU, data in the loop's own process, no augmentation."""


@dataclass
class Batch:
    x: Tensor
    """Normalized images on the training device."""
    y: Tensor
    idx: Tensor
    """Dataset indices (on the CPU), for per-image caches such as a teacher's logits."""


class Task(Protocol):
    """What is trained and its loss."""

    module: nn.Module
    """Everything the optimiser trains (wrapped for data-parallel training under torchrun)."""
    scored: nn.Module
    """The part of ``module`` an evaluation scores (a student trained with its teacher: the student)."""
    find_unused_parameters: bool
    """Whether a step may leave some of ``module``'s parameters unused (a supernet's unsampled operators)."""

    def prepare(self, device: TrainDevice) -> None:
        """Move what the task uses besides ``module`` (a frozen teacher) to ``device``."""

    def begin_epoch(self, epoch: int, saved: dict[str, Any] | None) -> dict[str, Any]:
        """Set up epoch ``epoch`` (0-based), from ``saved`` when resuming inside it; returns what a mid-epoch
        checkpoint must keep of it (tensors, numbers and strings only)."""

    def loss(self, net: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]]:
        """The step's loss, computed through ``net`` (``module``, possibly wrapped), and per-image metrics."""


@dataclass
class EpochStats:
    epoch: int
    lr: float
    metrics: dict[str, float]
    """Means over the epoch's training images (``loss``, and e.g. ``acc``)."""
    eval_acc: float | None = None
    seconds: float = 0.0
    """Wall time of the epoch's training steps (evaluation excluded)."""
    images: int = 0
    """Training images processed, over all processes."""

    @property
    def loss(self) -> float:
        return self.metrics["loss"]

    @property
    def train_acc(self) -> float | None:
        return self.metrics.get("acc")

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def step_rng(seed: int, epoch: int, step: int) -> random.Random:
    """The random draws of one training step (a supernet's sampled paths), a function of (seed, epoch, step)
    alone, so that a run resumed inside an epoch draws what an uninterrupted one does."""
    return random.Random((seed * 100_003 + epoch) * 1_000_003 + step)


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress_))


class StepSchedule:
    """AdamW with warm-up then cosine decay of the learning rate over ``cfg.epochs`` epochs of ``steps_per_epoch``;
    with a loss scaler (fp16) the step is scaled."""

    def __init__(self, params: Iterable[nn.Parameter], cfg: TrainConfig, steps_per_epoch: int,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(s, warmup, total))
        self.scaler = scaler

    def step(self, loss: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        self.sched.step()

    @property
    def lr(self) -> float:
        return self.sched.get_last_lr()[0]

    def state_dict(self) -> dict:
        state = {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}
        return state | ({"scaler": self.scaler.state_dict()} if self.scaler else {})

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


@dataclass
class _Progress:
    """Where an epoch stands: steps done and the metric sums so far."""

    epoch: int
    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


def local_batch_size(cfg: TrainConfig, dist: DistEnv) -> int:
    """Each process's share of the global batch ``cfg.batch_size``."""
    if cfg.batch_size % dist.world:
        raise ConfigError(f"the batch size {cfg.batch_size} does not divide among {dist.world} processes; give a "
                          f"multiple of {dist.world}")
    return cfg.batch_size // dist.world


def fit(task: Task, data: Data, split: str, cfg: TrainConfig, runtime: Runtime = LOCAL, seed: int = 0,
        checkpoint: Path | None = None, evaluate: Callable[[nn.Module], float] | None = None,
        on_epoch: Callable[[EpochStats], None] | None = None) -> list[EpochStats]:
    """Train ``task`` on ``split`` for ``cfg.epochs`` epochs; returns every epoch's stats.

    With ``checkpoint``, the state after every epoch (and inside one, at the runtime's step or minute interval) is
    saved atomically by rank 0 and a later call resumes from it. ``evaluate(task.scored)`` scores the model after
    each epoch (under torchrun every rank calls it). ``on_epoch`` may raise (Optuna's pruning) to stop early.
    The model trains in the device's memory format and is handed back in the one it came in.
    """
    dev, dist = runtime.device, runtime.dist
    given, layout = memory_format_of(task.module), dev.memory_format(task.module)
    module = dev.prepare(task.module)
    task.prepare(dev)
    net: nn.Module = module
    if dist.active:
        net = DistributedDataParallel(module, device_ids=[dev.device.index] if dev.kind == "cuda" else None,
                                      find_unused_parameters=task.find_unused_parameters)
    batch_size = local_batch_size(cfg, dist)
    steps = math.ceil(math.ceil(len(data.index(split)) / dist.world) / batch_size)
    schedule = StepSchedule(module.parameters(), cfg, steps, dev.scaler())
    history, resume = _restore(checkpoint, module, schedule, dist)
    try:
        for epoch in range(len(history), cfg.epochs):
            at = resume if resume is not None and resume.epoch == epoch else _Progress(epoch)
            at.task = task.begin_epoch(epoch, at.task or None)
            module.train()
            loader = data.loader(split, batch_size, shuffle=True, seed=seed * 100_003, epoch=epoch,
                                 augment=runtime.augment, rank=dist.rank, world=dist.world, start_batch=at.step,
                                 workers=runtime.workers, pin_memory=dev.kind == "cuda")
            started = time.perf_counter()
            with _step_bar(steps, at.step, dist) as advance:
                for step, (x, y, idx) in enumerate(loader, at.step):
                    x = data.normalize(x.to(dev.device, non_blocking=True)).contiguous(memory_format=layout)
                    with dev.autocast():
                        loss, metrics = task.loss(net, Batch(x, y.to(dev.device, non_blocking=True), idx), step)
                    schedule.step(loss)
                    for k, v in {"loss": loss.item(), **metrics, "_images": 1.0}.items():
                        at.sums[k] = at.sums.get(k, 0.0) + v * len(y)
                    at.step = step + 1
                    advance()
                    if checkpoint is not None and at.step < steps and _due(runtime, at, dist):
                        _save(checkpoint, module, schedule, history, dist, at)
            seconds = time.perf_counter() - started
            totals = dist.all_sum(at.sums)
            n = totals.pop("_images", 0.0)
            stats = EpochStats(epoch + 1, schedule.lr, {k: v / n for k, v in totals.items()},
                               evaluate(task.scored) if evaluate else None, seconds, int(n))
            history.append(stats)
            resume = None
            if checkpoint is not None:
                _save(checkpoint, module, schedule, history, dist, None)
            if on_epoch is not None:
                on_epoch(stats)
        return history
    finally:  # handed back in the layout it came in (export takes the default one), even when stopped early
        module.to(memory_format=given)


def _due(runtime: Runtime, at: _Progress, dist: DistEnv) -> bool:
    every_steps, minutes = runtime.checkpoint_steps, runtime.checkpoint_minutes
    due = bool(every_steps and at.step % every_steps == 0)
    if minutes:  # clocks differ between processes: all save when any one's interval is up
        due = dist.any(due or time.monotonic() - at.started >= minutes * 60)
    if due:
        at.started = time.monotonic()
    return due


def _save(path: Path, module: nn.Module, schedule: StepSchedule, history: list[EpochStats], dist: DistEnv,
          at: _Progress | None) -> None:
    """Rank 0 writes the state (every rank holds the same weights); mid-epoch, the metric sums of all ranks."""
    progress_ = None
    if at is not None:
        progress_ = {"epoch": at.epoch, "step": at.step, "sums": dist.all_sum(at.sums), "task": at.task}
    if dist.main:
        save_state(path, {"model": module.state_dict(), "schedule": schedule.state_dict(),
                          "history": [asdict(h) for h in history], "progress": progress_})
    dist.barrier()


def _restore(path: Path | None, module: nn.Module, schedule: StepSchedule,
             dist: DistEnv) -> tuple[list[EpochStats], _Progress | None]:
    state = load_state(path)
    if state is None:
        return [], None
    module.load_state_dict(state["model"])
    schedule.load_state_dict(state["schedule"])
    history = [EpochStats(**h) for h in state["history"]]
    p = state.get("progress")
    if not p:
        return history, None
    sums = p["sums"] if dist.main else dict.fromkeys(p["sums"], 0.0)  # rank 0 carries everyone's sums so far
    return history, _Progress(p["epoch"], p["step"], sums, p["task"])


def _step_bar(steps: int, done: int, dist: DistEnv) -> contextlib.AbstractContextManager[Callable[[], None]]:
    """A bar over the steps of a long epoch (on rank 0); yields its ``advance``."""
    if steps < STEP_BAR_MIN_STEPS or not dist.main:
        return contextlib.nullcontext(lambda: None)
    return progress("steps", steps, completed=done)
