"""Scoring a model on a split: logits, top-1 accuracy, and BatchNorm recalibration."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from edgekd.data import Data
from edgekd.train.distributed import SINGLE, DistEnv


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a model with neither)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(model: nn.Module, data: Data, split: str, batch_size: int = 256, workers: int = 0) -> Tensor:
    """Logits of ``model`` (eval mode, on its own device) for every image of ``split``, in split order, on the
    CPU."""
    model.eval()
    device = model_device(model)
    return torch.cat([model(x).float().cpu()
                      for x, _, _ in data.batches(split, batch_size, workers=workers, device=device)])


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, split: str, dist: DistEnv = SINGLE, workers: int = 0,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``split``; under torchrun each rank scores its share and the counts are
    summed (every rank must call it)."""
    model.eval()
    device = model_device(model)
    correct, seen = 0, 0
    for x, y, _ in data.batches(split, batch_size, rank=dist.rank, world=dist.world, workers=workers, device=device):
        correct += int((model(x).argmax(1).cpu() == y).sum())
        seen += len(y)
    totals = dist.all_sum({"correct": correct, "seen": seen})
    return totals["correct"] / totals["seen"]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) on ``batches``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    device = model_device(model)
    for x in batches:
        model(x.to(device))
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
