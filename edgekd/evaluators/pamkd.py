"""PAMKD (seed 000): performance-aware mutual knowledge distillation among a group of differentiable supernets.

A group of K learners searches a layer-wise space (``mbv2``). Learner k has operator logits A_k and two sets of
supernet weights run with them, V_k (measured, and the source of knowledge) and W_k (taught). Every step of the
one trainer takes a mini-train batch and a mini-val batch:

1. V_k learns from cross-entropy on the training batch.
2. W_k learns from cross-entropy plus the knowledge of every learner j that may teach it:
   τ²·KL(softmax(z_Vj/τ) ‖ softmax(z_Wk/τ)) + λ_GRS·GRS(z_Vj → z_Wk), averaged over its teachers, V_j fixed.
   The scrutiny: V_j teaches W_k only if V_j is better than V_k on mini-val (higher accuracy, ties broken by
   lower loss), re-measured at the start of every epoch; without scrutiny every learner teaches every other
   (plain mutual KD). Knowledge flows from epoch ``kd_from_epoch`` on, once the V's mean something.
3. A_k learns from W_k's cross-entropy on the mini-val batch, W_k held fixed: DARTS's first-order approximation
   (how W_k's training depends on A_k is ignored), plus the cost term λ_cost·max(0, log(E[cost]/T)), where
   E[cost] = base + Σ_slots Σ_o softmax(A_k)_o·Δcost(slot, o) is the latency (or MACs) expected under the
   operator weights (FBNet) and T the search's target.

The three losses are summed into one optimiser step; each is computed with the other stages' parameters detached,
so V, W and A each get exactly their own stage's gradient, all at the parameters of the step's start (the three
stages are updated together rather than in turn).

The relaxation of the operator choice (``relaxation``):

- ``gdas`` (default): Gumbel-softmax with hard straight-through samples (GDAS, FBNet's Gumbel relaxation made
  hard): per step each learner samples one operator per slot from softmax((A + Gumbel noise)/t), t annealed, and
  runs only it, weighted by 1 - p.detach() + p so that the gradient reaches every logit of the slot. A step costs
  what one path costs, and the weights are trained as the stand-alone networks that are finally extracted.
- ``darts``: every slot outputs Σ_o softmax(A)_o · o(x) (DARTS). Every operator runs in every step (about 10x
  the work on ``mbv2``), and the arg-max networks extracted from the mixture can be far worse than the mixture
  (measured here: chance-level mini-val accuracy after 3 epochs on digits, where the mixtures reached 95%).

V and W are measured for the scrutiny on their deterministic network (the arg-max path; the mixture with
``darts``) with batch statistics; a picked architecture is extracted from W_k with its BatchNorm recalibrated,
as the other one-shot evaluators do.

GRS, the group-wise relative similarity loss (the seed names it without a formula; this is edgekd's): a batch is
cut into groups of g ≥ 4 examples. In a group, each example a's logits are L2-normalised, s_ab is the cosine
similarity of a and b, and a's relative similarities to the others are the distribution
P(b | a) = exp(s_ab/γ) / Σ_{c≠a} exp(s_ac/γ) over the other g-1 members. GRS(t → s) is the mean over the groups'
anchors of KL(P_t(· | a) ‖ P_s(· | a)): zero exactly when the student orders and spaces every anchor's
similarities to the rest of its group as the teacher does, whatever the logits' scale, and each term ties an
anchor to all g-1 others at once (a relation of order g, not a pair or a triplet).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from edgekd.core.arch import ArchSpec
from edgekd.core.config import KDConfig, PAMKDConfig, TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.data import Data
from edgekd.evaluators import EpochReport
from edgekd.evaluators.supernet import Supernet, extract_calibrated
from edgekd.spaces import Choices
from edgekd.spaces.mbv2 import MBV2Space, SlotCosts
from edgekd.train import (
    LOCAL,
    Batch,
    EpochStats,
    Runtime,
    TrainDevice,
    calibration_batches,
    evaluate,
    fit,
    step_rng,
)

Relaxation = Literal["gdas", "darts"]
ARCH_INIT_SD = 1e-3
"""Spread of the initial operator logits (DARTS's)."""


def grs_loss(teacher: Tensor, student: Tensor, group_size: int = 4, gamma: float = 0.1) -> Tensor:
    """GRS(teacher → student) over consecutive groups of ``group_size`` rows of two (batch, d) tensors (rows past
    the last whole group are left out; a batch smaller than one group gives 0)."""
    if group_size < 4:
        raise ConfigError(f"GRS relates groups of at least 4 examples, got group_size={group_size}")
    groups = len(teacher) // group_size
    if groups == 0:
        return student.sum() * 0.0
    n = groups * group_size
    t = F.normalize(teacher[:n].float(), dim=1).reshape(groups, group_size, -1)
    s = F.normalize(student[:n].float(), dim=1).reshape(groups, group_size, -1)
    others = ~torch.eye(group_size, dtype=torch.bool, device=student.device)

    def log_relative(u: Tensor) -> Tensor:  # (groups, g, g-1): log P(b | a) over the g-1 others of each anchor
        sim = (u @ u.transpose(1, 2))[:, others].reshape(groups, group_size, group_size - 1)
        return F.log_softmax(sim / gamma, dim=2)

    log_t, log_s = log_relative(t), log_relative(s)
    return (log_t.exp() * (log_t - log_s)).sum(2).mean()


def teachers_of(acc: list[float], loss: list[float], scrutiny: bool) -> list[list[int]]:
    """For each learner k, the learners whose V may teach its W: those better on mini-val (higher accuracy, ties
    broken by lower loss) with scrutiny, every other learner without."""
    group = range(len(acc))
    if not scrutiny:
        return [[j for j in group if j != k] for k in group]
    return [[j for j in group if (acc[j], -loss[j]) > (acc[k], -loss[k])] for k in group]


OpWeights = dict[str, dict[str, Tensor]]
"""Per slot, the operators a forward runs and the weight of each one's output."""


class Learner(nn.Module):
    """One member of the group: operator logits A and the two supernets V and W that run with them."""

    def __init__(self, space: MBV2Space, generator: torch.Generator) -> None:
        super().__init__()
        self.alphas = nn.ParameterDict({
            s.name: nn.Parameter(torch.randn(len(s.ops), generator=generator) * ARCH_INIT_SD) for s in space.slots})
        self.v, self.w = Supernet(space), Supernet(space)

    def op_weights(self, detach: bool = False) -> dict[str, Tensor]:
        """softmax(A) per slot."""
        return {name: (a.detach() if detach else a).softmax(0) for name, a in self.alphas.items()}

    def choose(self, relaxation: Relaxation, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> OpWeights:
        """What a forward runs: with ``darts`` every operator weighted by softmax(A); with ``gdas`` one operator per
        slot drawn by hard Gumbel-softmax with ``generator`` (its straight-through weight), or without a generator
        the arg-max operator."""
        space, out = self.v.space, {}
        for name, a in self.alphas.items():
            ops = space.choices[name]
            if relaxation == "darts":
                out[name] = dict(zip(ops, a.softmax(0), strict=True))
            elif generator is None:
                out[name] = {ops[int(a.argmax())]: a.new_ones(())}
            else:
                gumbel = -torch.empty(len(ops)).exponential_(generator=generator).log().to(a.device)
                p = ((a + gumbel) / temperature).softmax(0)
                i = int(p.argmax())
                out[name] = {ops[i]: 1 - p[i].detach() + p[i]}
        return out

    def forward(self, x: Tensor, weights: str, choice: OpWeights) -> Tensor:
        return getattr(self, weights).mixed(x, choice)

    def path(self) -> Choices:
        """The arg-max architecture: each slot's operator with the highest logit."""
        return {name: self.v.space.choices[name][int(a.argmax())] for name, a in self.alphas.items()}


def _detached(choice: OpWeights) -> OpWeights:
    return {name: {op: w.detach() for op, w in ops.items()} for name, ops in choice.items()}


@dataclass
class CostTable:
    """A slot-additive cost model (``SlotCosts``) as tensors, for the cost expected under operator weights."""

    base: float
    deltas: dict[str, Tensor]
    target: float

    @classmethod
    def of(cls, costs: SlotCosts, space: MBV2Space, target: float) -> CostTable:
        if target <= 0:
            raise ConfigError(f"the cost target must be positive, got {target}")
        deltas = {s.name: torch.tensor([costs.table[s.name][op] for op in s.ops]) for s in space.slots}
        return cls(costs.base, deltas, target)

    def to(self, device: torch.device) -> CostTable:
        return CostTable(self.base, {k: v.to(device) for k, v in self.deltas.items()}, self.target)

    def expected(self, weights: dict[str, Tensor]) -> Tensor:
        """E[cost] under per-slot operator probabilities ``weights``."""
        return self.base + sum((weights[name] * d).sum() for name, d in self.deltas.items())


class Group(nn.Module):
    """The K learners (one: a single learner searching alone, the paper's baseline); one forward gives every
    tensor a PAMKD step needs (one pass, as data-parallel needs)."""

    def __init__(self, space: MBV2Space, learners: int, costs: CostTable, relaxation: Relaxation = "gdas",
                 seed: int = 0) -> None:
        super().__init__()
        if learners < 1:
            raise ConfigError(f"a group needs at least 1 learner, got {learners}")
        generator = torch.Generator().manual_seed(seed)
        self.learners = nn.ModuleList(Learner(space, generator) for _ in range(learners))
        self.costs, self.relaxation = costs, relaxation

    def forward(self, x: Tensor, x_val: Tensor, draw: int = 0,
                temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(V logits, W logits) on ``x``, W's logits on ``x_val`` with W fixed, and each learner's E[cost]; with
        ``gdas`` each learner runs the operators it draws with the seed ``draw``."""
        generator = torch.Generator().manual_seed(draw)
        z_v, z_w, z_val = [], [], []
        for learner in self.learners:
            choice = learner.choose(self.relaxation, generator, temperature)
            z_v.append(learner(x, "v", _detached(choice)))
            z_w.append(learner(x, "w", _detached(choice)))
            fixed_w = {f"w.{n}": p.detach() for n, p in learner.w.named_parameters()}
            z_val.append(functional_call(learner, fixed_w, (x_val, "w", choice)))
        cost = torch.stack([self.costs.expected(learner.op_weights()) for learner in self.learners])
        return torch.stack(z_v), torch.stack(z_w), torch.stack(z_val), cost

    def logits(self, learner: int, weights: str, x: Tensor) -> Tensor:
        """Learner ``learner``'s deterministic network (arg-max path, or the mixture with ``darts``) on ``x``."""
        member = self.learners[learner]
        return member(x, weights, _detached(member.choose(self.relaxation)))


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """``module`` in training mode with its BatchNorm running statistics left untouched (momentum 0)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved, was_training = [m.momentum for m in norms], module.training
    module.train()
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        module.train(was_training)


@torch.no_grad()
def scrutinize(group: Group, images: Tensor, labels: Tensor, scrutiny: bool,
               batch_size: int = 256) -> dict[str, float]:
    """Every learner's V and W on mini-val (``v_acc_k``, ``v_loss_k``, ``w_acc_k``, ``w_loss_k``) and who
    teaches whom from it (``kd_j_to_k`` = 1 for each teaching pair)."""
    out: dict[str, float] = {}
    with batch_statistics(group):
        for k in range(len(group.learners)):
            for weights in ("v", "w"):
                logits = torch.cat([group.logits(k, weights, x) for x in images.split(batch_size)]).float()
                out[f"{weights}_acc_{k}"] = float((logits.argmax(1) == labels).float().mean())
                out[f"{weights}_loss_{k}"] = float(F.cross_entropy(logits, labels))
    n = len(group.learners)
    teachers = teachers_of([out[f"v_acc_{k}"] for k in range(n)], [out[f"v_loss_{k}"] for k in range(n)], scrutiny)
    return out | {f"kd_{j}_to_{k}": 1.0 for k in range(n) for j in teachers[k]}


def teaching_pairs(metrics: dict[str, float]) -> list[tuple[int, int]]:
    """The (teacher, student) pairs a scrutiny record holds."""
    return [(int(j), int(k)) for key in metrics if key.startswith("kd_") for j, _, k in [key[3:].split("_")]]


class PAMKDTask:
    """The one trainer's task for PAMKD's three stages (module docstring); each epoch's metrics carry the
    scrutiny it started with (``scrutinize``), so the training history records who taught whom and why."""

    find_unused_parameters = True

    def __init__(self, group: Group, val: tuple[Tensor, Tensor], cfg: PAMKDConfig, epochs: int, tau: float,
                 seed: int) -> None:
        self.group, self.module, self.scored = group, group, group
        self.val, self.cfg, self.epochs, self.tau, self.seed = val, cfg, epochs, tau, seed
        self.epoch, self.scrutiny = 0, {}

    def prepare(self, device: TrainDevice) -> None:
        self.val = (self.val[0].to(device.device), self.val[1].to(device.device))
        self.group.costs = self.group.costs.to(device.device)

    def begin_epoch(self, epoch: int, saved: dict[str, Any] | None) -> dict[str, Any]:
        self.epoch = epoch
        if saved:
            self.scrutiny = {k: float(v) for k, v in saved.items()}
        else:
            self.scrutiny = scrutinize(self.group, *self.val, self.cfg.scrutiny)
        return {k: torch.tensor(v) for k, v in self.scrutiny.items()}

    def _draw(self, step: int) -> int:
        """The seed of a step's random draws (operators, mini-val batch): resumed runs draw the same."""
        return step_rng(self.seed, self.epoch, step).getrandbits(62)

    def _val_batch(self, step: int, size: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self._draw(step))
        idx = torch.randperm(len(self.val[1]), generator=generator)[:size].to(self.val[1].device)
        return self.val[0][idx], self.val[1][idx]

    def _temperature(self) -> float:
        """Gumbel-softmax temperature, annealed geometrically from the first to the last epoch."""
        first, last = self.cfg.temperature
        return first * (last / first) ** (self.epoch / max(1, self.epochs - 1))

    def loss(self, net: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]]:
        x_val, y_val = self._val_batch(step, len(batch.y))
        z_v, z_w, z_val, cost = net(batch.x, x_val, self._draw(step), self._temperature())
        z_v, z_w, z_val, y = z_v.float(), z_w.float(), z_val.float(), batch.y
        loss_v = sum(F.cross_entropy(z, y) for z in z_v)
        loss_w = sum(F.cross_entropy(z, y) for z in z_w)
        if self.epoch >= self.cfg.kd_from_epoch:
            loss_w = loss_w + sum(self._knowledge(z_v, z_w[k], teachers)
                                  for k, teachers in enumerate(self._teachers()) if teachers)
        val_loss = sum(F.cross_entropy(z, y_val) for z in z_val)
        over = torch.log(cost / self.group.costs.target).clamp(min=0)
        metrics = {"v_train_acc": float((z_v.argmax(2) == y).float().mean()),
                   "w_train_acc": float((z_w.argmax(2) == y).float().mean()),
                   "arch_val_loss": float(val_loss.detach()) / len(z_val),
                   "expected_cost": float(cost.detach().mean())}
        return loss_v + loss_w + val_loss + self.cfg.cost_weight * over.sum(), metrics | self.scrutiny

    def _teachers(self) -> list[list[int]]:
        pairs = teaching_pairs(self.scrutiny)
        return [[j for j, s in pairs if s == k] for k in range(len(self.group.learners))]

    def _knowledge(self, z_v: Tensor, z_student: Tensor, teachers: list[int]) -> Tensor:
        tau, terms = self.tau, []
        for j in teachers:
            z_t = z_v[j].detach()
            kl = F.kl_div(F.log_softmax(z_student / tau, 1), F.log_softmax(z_t / tau, 1), log_target=True,
                          reduction="batchmean")
            terms.append(tau**2 * kl + self.cfg.grs_weight * grs_loss(z_t, z_student, self.cfg.group_size,
                                                                       self.cfg.grs_gamma))
        return sum(terms) / len(terms)


def train_pamkd(group: Group, data: Data, train_cfg: TrainConfig, cfg: PAMKDConfig, tau: float = 1.0, seed: int = 0,
                checkpoint: Path | None = None,
                on_epoch: Callable[[EpochStats], None] | None = None,
                runtime: Runtime = LOCAL) -> tuple[list[EpochStats], dict[str, float]]:
    """Train ``group`` on mini-train (and its operator logits on mini-val) for ``train_cfg.epochs``, resuming from
    ``checkpoint``; returns the history (each epoch's metrics hold the scrutiny it started with) and the scrutiny
    of the trained group."""
    val = data.tensors("mini_val")
    task = PAMKDTask(group, val, cfg, train_cfg.epochs, tau, seed)
    history = fit(task, data, "mini_train", train_cfg, runtime, seed, checkpoint, on_epoch=on_epoch)
    return history, scrutinize(group, *task.val, cfg.scrutiny)


class PAMKDEvaluator:
    """A trained group: each learner's arg-max architecture is a candidate, rated by the mini-val accuracy of
    its path extracted from the learner's W (BatchNorm recalibrated on mini-train)."""

    budget = 1

    def __init__(self, group: Group, data: Data, workers: int = 0) -> None:
        self.group, self.data, self.workers = group, data, workers
        self.calibration = calibration_batches(data)

    def rate(self, learner: int, path: Choices) -> float:
        """Mini-val accuracy of ``path`` with learner ``learner``'s W weights."""
        net = extract_calibrated(self.group.learners[learner].w, path, self.calibration)
        return evaluate(net, self.data, "mini_val", workers=self.workers)

    def evaluate(self, spec: ArchSpec, report: EpochReport | None = None, kd: KDConfig | None = None) -> float:
        """The best accuracy any learner's W weights give ``spec``'s path (``kd`` is not used)."""
        path = self.group.learners[0].w.space.encode(spec)
        acc = max(self.rate(k, path) for k in range(len(self.group.learners)))
        if report:
            report(1, acc)
        return acc


def slot_probabilities(learner: Learner) -> dict[str, dict[str, float]]:
    """softmax(A) per slot and operator, for the record of a candidate."""
    space = learner.v.space
    return {name: {op: round(float(p), 4) for op, p in zip(space.choices[name], w, strict=True)}
            for name, w in learner.op_weights(detach=True).items()}

