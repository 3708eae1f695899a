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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import log_softmax
from torch import Tensor

from edgekd.config import TrainConfig
from edgekd.errors import ConfigError
from edgekd.pipeline.data import Data
from edgekd.pipeline.kd import StepSchedule, load_training_state, save_training_state, steps_per_epoch
from edgekd.pipeline.space import Choices
from edgekd.pipeline.supernet import Supernet

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

    def __init__(self, supernet: Supernet, m: int, diversity: dict[str, np.ndarray] | None, seed: int) -> None:
        self.slots, self.m, self.rng = supernet.space.slots, m, random.Random(seed)
        self.samplers = {name: DiversitySampler(z, m) for name, z in diversity.items()} if diversity else None

    def sample(self) -> list[Choices]:
        paths: list[Choices] = [{} for _ in range(self.m)]
        for slot in self.slots:
            drawn = (self.samplers[slot.name].draw(self.rng) if self.samplers
                     else [self.rng.randrange(len(slot.ops)) for _ in range(self.m)])
            for path, op in zip(paths, drawn, strict=True):
                path[slot.name] = slot.ops[op]
        return paths


@dataclass
class SupernetEpoch:
    epoch: int
    loss: float
    student_acc: float
    """Mean training-batch accuracy of the sampled paths."""
    teacher_acc: float | None
    """Training-batch accuracy of the teacher the paths learned from (None before KD starts or without one)."""
    logit_distance: float | None
    """Mean Euclidean distance between the logits of two paths of a batch (EnNAS Fig. 2's subnet diversity)."""


def _teacher(z: Tensor, y: Tensor, mode: TeacherMode) -> Tensor:
    if mode == "ensemble":
        return torch.tensordot(ensemble_weights(z, y), z.detach(), 1)
    losses = torch.stack([F.cross_entropy(zi, y) for zi in z.detach()])
    return z[int(losses.argmin())].detach()


def train_supernet(
    supernet: Supernet, data: Data, cfg: TrainConfig, m: int = 4, teacher: TeacherMode = "ensemble",
    diversity: bool = True, kd_from_epoch: int = 1, tau: float = 1.0, seed: int = 0,
    checkpoint: Path | None = None, on_epoch: Callable[[SupernetEpoch], None] | None = None,
) -> list[SupernetEpoch]:
    """Train ``supernet`` on mini-train for ``cfg.epochs`` (resuming from ``checkpoint`` after every epoch).

    ``m`` paths per batch learn from CE, plus KD from ``teacher`` once ``kd_from_epoch`` epochs are done.
    """
    if teacher != "none" and m < 2:
        raise ConfigError(f"a {teacher} teacher needs at least 2 paths per batch, got m={m}")
    schedule = StepSchedule(supernet.parameters(), cfg, steps_per_epoch(data, "mini_train", cfg.batch_size))
    history = [SupernetEpoch(**h) for h in load_training_state(checkpoint, supernet, schedule)]
    probe = data.tensors("mini_train")[0][:64]
    for epoch in range(len(history), cfg.epochs):
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        zeta = operator_diversity(supernet, probe, gen) if diversity else None
        sampler = PathSampler(supernet, m, zeta, seed * 100_003 + epoch)
        supernet.train()
        kd = teacher != "none" and epoch >= kd_from_epoch
        sums = np.zeros(4)
        batches = 0
        for x, y, _ in data.batches("mini_train", cfg.batch_size, shuffle=True, generator=gen):
            z = torch.stack([supernet(x, path) for path in sampler.sample()])
            loss = sum(F.cross_entropy(zi, y) for zi in z)
            t = _teacher(z, y, teacher) if kd else None
            if t is not None:
                log_t = F.log_softmax(t / tau, 1)
                loss = loss + sum(tau**2 * F.kl_div(F.log_softmax(zi / tau, 1), log_t, log_target=True,
                                                    reduction="batchmean") for zi in z)
            schedule.step(loss)
            sums += [loss.item() / m, float((z.argmax(2) == y).float().mean()),
                     float((t.argmax(1) == y).float().mean()) if t is not None else np.nan,
                     float(torch.cdist(z.detach().transpose(0, 1), z.detach().transpose(0, 1)).sum((1, 2)).mean()
                           / (m * (m - 1))) if m > 1 else np.nan]
            batches += 1
        loss, student, teacher_acc, distance = sums / batches
        stats = SupernetEpoch(epoch + 1, loss, student, None if np.isnan(teacher_acc) else teacher_acc,
                              None if np.isnan(distance) else distance)
        history.append(stats)
        if checkpoint is not None:
            save_training_state(checkpoint, supernet, schedule, [asdict(h) for h in history])
        if on_epoch is not None:
            on_epoch(stats)
    return history
