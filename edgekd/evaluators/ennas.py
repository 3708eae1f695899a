"""EnNAS (seed 002): a supernet trained with an online ensemble teacher and diversity-based path sampling.

Per batch, ``m`` paths are sampled; their logits z_i form the teacher t = Σ w_i z_i with w on the simplex
minimising CE(wᵀZ, y) (eq. 2, convex, solved exactly); from ``kd_from_epoch`` on every path is trained with
CE + tau²·KL(softmax(t/tau) ‖ softmax(z_i/tau)) (eq. 3). Operators are drawn per slot by ``DiversitySampler``
(eq. 4-5), whose operator diversities are re-measured every epoch. ``teacher="best"`` replaces the ensemble by
the batch's most accurate path (a single-path teacher, Cream-like) and ``teacher="none"`` with ``m = 1`` is
plain single-path one-shot training (SPOS), the baselines the benchmark compares against.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import log_softmax
from torch import Tensor, nn

from edgekd.core.config import TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.data import Data
from edgekd.evaluators.supernet import Supernet
from edgekd.spaces import Choices
from edgekd.train import LOCAL, Batch, EpochStats, Runtime, TrainDevice, fit, step_rng

TeacherMode = Literal["ensemble", "best", "none"]
FLOOR = 1e-6
"""Added to every operator's diversity so that eq. 5 never divides by zero (two identical operators)."""


def ensemble_weights(logits: Tensor, labels: Tensor) -> Tensor:
    """w on the simplex minimising CE(Σ_i w_i z_i, y) (EnNAS eq. 2) for ``logits`` of shape (m, batch, classes).

    The problem is convex and smooth; SciPy's SLSQP solves it to tolerance 1e-12 with the exact gradient.
    """
    z = logits.detach().double().numpy()
    y = labels.numpy()
    m, n = z.shape[0], z.shape[1]
    z_true = z[:, np.arange(n), y]  # (m, n)

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        t = np.tensordot(w, z, 1)
        logp = log_softmax(t, axis=1)
        grad = (np.einsum("bc,ibc->i", np.exp(logp), z) - z_true.sum(1)) / n
        return float(-logp[np.arange(n), y].mean()), grad

    result = minimize(objective, np.full(m, 1 / m), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                      constraints={"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones(m)},
                      options={"ftol": 1e-12, "maxiter": 500})
    if not result.success:
        raise ArithmeticError(f"ensemble weights did not converge: {result.message}")
    w = np.clip(result.x, 0, None)
    return torch.from_numpy(w / w.sum()).float()


@torch.no_grad()
def operator_diversity(supernet: Supernet, images: Tensor, generator: torch.Generator) -> dict[str, np.ndarray]:
    """ζ(o_m, o_n) (EnNAS eq. 4) for every slot: 1 - mean cosine similarity of the two operators' outputs on the
    same inputs. A slot's inputs are ``images`` passed through the layers before it, each image through an
    operator assigned uniformly at random (the paper's merged feature maps)."""
    supernet.train()  # batch statistics: the shared running statistics describe no single path
    x = supernet.first(supernet.stem(images))
    out: dict[str, np.ndarray] = {}
    for slot in supernet.space.slots:
        outputs = [supernet.run_slot(slot.name, op, x) for op in slot.ops]
        flat = F.normalize(torch.stack([o.flatten(1) for o in outputs]), dim=2)  # (T, n, d)
        cos = torch.einsum("ind,jnd->ijn", flat, flat).mean(2)
        out[slot.name] = (1 - cos).clamp(min=0).double().numpy()
        assign = torch.randint(len(outputs), (len(x),), generator=generator)
        x = torch.stack(outputs)[assign, torch.arange(len(x))]
    return out


class DiversitySampler:
    """Draws ``m`` operators of one slot in sequence with EnNAS eq. 5's probabilities, made exact.

    After the uniform first draw, operator o_i is drawn next with probability ∝ c_h[i]·g(o_i, A), where
    g(o_i, A) is its mean diversity ζ from the operators A already drawn. Eq. 5 divides by a per-operator sum so
    that every operator keeps probability 1/T (all are trained equally); here the per-operator factors c_h are
    solved for that property exactly (Sinkhorn scaling over every possible A, to 1e-12), so each draw's
    marginal is 1/T while operators far from those drawn are favoured.
    """

    def __init__(self, zeta: np.ndarray, m: int, tol: float = 1e-12, max_iter: int = 100_000) -> None:
        self.zeta, self.m = np.asarray(zeta, dtype=float) + FLOOR, m
        t = len(self.zeta)
        self.scales: list[np.ndarray] = []
        prefixes, probs = np.arange(t)[:, None], np.full(t, 1 / t)
        self.marginals = [np.full(t, 1 / t)]
        for _ in range(1, m):
            g = self.zeta[prefixes].mean(1)  # (prefixes, T): g(o_i, A) for every prefix A
            c = np.ones(t)
            for _ in range(max_iter):
                cond = c * g
                cond /= cond.sum(1, keepdims=True)
                marginal = probs @ cond
                if np.abs(marginal - 1 / t).max() < tol:
                    break
                c *= (1 / t) / marginal
            else:
                raise ArithmeticError("diversity sampling probabilities did not converge")
            self.scales.append(c)
            self.marginals.append(marginal)
            probs = (probs[:, None] * cond).ravel()
            prefixes = np.concatenate([np.repeat(prefixes, t, 0), np.tile(np.arange(t), len(prefixes))[:, None]], 1)
        self.sequences, self.probabilities = prefixes, probs
        """Every sequence of ``m`` draws and its probability."""

    def draw(self, rng: random.Random) -> list[int]:
        t = len(self.zeta)
        drawn = [rng.randrange(t)]
        for c in self.scales:
            weights = c * self.zeta[drawn].mean(0)
            drawn.append(rng.choices(range(t), weights=weights)[0])
        return drawn

    def expected_diversity(self) -> float:
        """E[mean pairwise ζ of the m operators drawn] (exact, over every sequence)."""
        return float(self.probabilities @ _mean_pairwise(self.zeta - FLOOR, self.sequences))


def _mean_pairwise(zeta: np.ndarray, sequences: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(sequences.shape[1], 1)
    return zeta[sequences[:, i], sequences[:, j]].mean(1)


def uniform_expected_diversity(zeta: np.ndarray) -> float:
    """E[mean pairwise ζ] of operators drawn uniformly and independently (EnNAS w/o DS): every pair of
    independent uniform draws has the mean of ζ over all operator pairs."""
    return float(np.asarray(zeta).mean())


class PathSampler:
    """``m`` paths per batch: per slot, operators drawn by each slot's DiversitySampler, or uniformly."""

    def __init__(self, supernet: Supernet, m: int, diversity: dict[str, np.ndarray] | None) -> None:
        self.slots, self.m = supernet.space.slots, m
        self.samplers = {name: DiversitySampler(z, m) for name, z in diversity.items()} if diversity else None

    def sample(self, rng: random.Random) -> list[Choices]:
        paths: list[Choices] = [{} for _ in range(self.m)]
        for slot in self.slots:
            drawn = (self.samplers[slot.name].draw(rng) if self.samplers
                     else [rng.randrange(len(slot.ops)) for _ in range(self.m)])
            for path, op in zip(paths, drawn, strict=True):
                path[slot.name] = slot.ops[op]
        return paths


def _teacher(z: Tensor, y: Tensor, mode: TeacherMode) -> Tensor:
    if mode == "ensemble":
        return torch.tensordot(ensemble_weights(z.cpu(), y.cpu()).to(z.device), z.detach(), 1)
    losses = torch.stack([F.cross_entropy(zi, y) for zi in z.detach()])
    return z[int(losses.argmin())].detach()


class Paths(nn.Module):
    """The supernet run along several paths in one forward pass (one pass, as data-parallel training needs)."""

    def __init__(self, supernet: Supernet) -> None:
        super().__init__()
        self.supernet = supernet

    def forward(self, x: Tensor, paths: list[Choices]) -> Tensor:
        return torch.stack([self.supernet(x, path) for path in paths])


class SupernetTask:
    """EnNAS's step: ``m`` paths learn from CE, plus KD (eq. 3) from ``teacher`` once ``kd_from_epoch`` epochs are
    done; the operator diversities (eq. 4) are measured at the start of every epoch on ``probe`` images."""

    find_unused_parameters = True  # a path skips layers, and m paths need not use every operator

    def __init__(self, supernet: Supernet, m: int, teacher: TeacherMode, diversity: bool, kd_from_epoch: int,
                 tau: float, seed: int, probe: Tensor) -> None:
        if teacher != "none" and m < 2:
            raise ConfigError(f"a {teacher} teacher needs at least 2 paths per batch, got m={m}")
        self.supernet, self.module, self.scored = supernet, Paths(supernet), supernet
        self.m, self.teacher, self.diversity, self.kd_from_epoch, self.tau, self.seed = (
            m, teacher, diversity, kd_from_epoch, tau, seed)
        self.probe, self.epoch, self.sampler = probe, 0, PathSampler(supernet, m, None)

    def prepare(self, device: TrainDevice) -> None:
        self.probe = self.probe.to(device.device)

    def begin_epoch(self, epoch: int, saved: dict[str, Any] | None) -> dict[str, Any]:
        self.epoch = epoch
        if not self.diversity:
            return {}
        if saved:
            zeta = {name: z.numpy() for name, z in saved.items()}
        else:
            zeta = operator_diversity(self.supernet, self.probe, torch.Generator().manual_seed(self.seed + epoch))
        self.sampler = PathSampler(self.supernet, self.m, zeta)
        return {name: torch.from_numpy(z) for name, z in zeta.items()}

    def loss(self, net: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]]:
        m, tau, y = self.m, self.tau, batch.y
        z = net(batch.x, self.sampler.sample(step_rng(self.seed, self.epoch, step))).float()
        loss = sum(F.cross_entropy(zi, y) for zi in z)
        metrics = {"student_acc": float((z.argmax(2) == y).float().mean())}
        if self.teacher != "none" and self.epoch >= self.kd_from_epoch:
            t = _teacher(z, y, self.teacher)
            log_t = F.log_softmax(t / tau, 1)
            loss = loss + sum(tau**2 * F.kl_div(F.log_softmax(zi / tau, 1), log_t, log_target=True,
                                                reduction="batchmean") for zi in z)
            metrics["teacher_acc"] = float((t.argmax(1) == y).float().mean())
        if m > 1:
            zt = z.detach().transpose(0, 1)
            metrics["logit_distance"] = float(torch.cdist(zt, zt).sum((1, 2)).mean() / (m * (m - 1)))
        return loss, metrics


def train_supernet(
    supernet: Supernet, data: Data, cfg: TrainConfig, m: int = 4, teacher: TeacherMode = "ensemble",
    diversity: bool = True, kd_from_epoch: int = 1, tau: float = 1.0, seed: int = 0,
    checkpoint: Path | None = None, on_epoch: Callable[[EpochStats], None] | None = None,
    runtime: Runtime = LOCAL,
) -> list[EpochStats]:
    """Train ``supernet`` on mini-train for ``cfg.epochs`` (resuming from ``checkpoint``) with the one trainer.

    Each epoch's metrics carry ``student_acc`` (mean training-batch accuracy of the sampled paths), once KD has
    started ``teacher_acc`` (of the teacher they learned from), and ``logit_distance`` (the mean Euclidean
    distance between the logits of two paths of a batch, EnNAS Fig. 2's subnet diversity)."""
    probe = data.tensors("mini_train", limit=64)[0]
    task = SupernetTask(supernet, m, teacher, diversity, kd_from_epoch, tau, seed, probe)
    return fit(task, data, "mini_train", cfg, runtime, seed, checkpoint, on_epoch=on_epoch)
