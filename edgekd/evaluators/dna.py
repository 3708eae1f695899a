"""DNA (seed 004): block-wise distillation of the teacher's stages into a student supernet, and an exact
constrained pick from the per-block ratings.

The teacher is cut into blocks at its stage boundaries, found from the traced model (torch.fx): a boundary is
the last point, at each spatial resolution, where a single activation carries everything the rest of the
network needs and a top-level module ends. The student supernet is cut at the resolutions it shares with the
teacher. Student block i learns to map the teacher's block i-1 output to its block i output (MSE, 1x1 adapters
where channels differ), all blocks in the same step from one teacher pass. Every path of every block is then
rated by its mini-val loss (normalised by the target's variance), and the architecture is the combination with
the lowest summed loss whose cost meets the target, found by enumerating combinations in increasing summed loss
(so the first that meets the target is the optimum).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.fx.passes.split_module import split_module

from edgekd.core.arch import ArchSpec
from edgekd.core.config import KDConfig, TrainConfig
from edgekd.core.errors import ConfigError
from edgekd.data import Data
from edgekd.evaluators import EpochReport
from edgekd.evaluators.supernet import Supernet
from edgekd.spaces import Choices
from edgekd.train import LOCAL, Batch, EpochStats, Runtime, TrainDevice, fit, step_rng

MAX_BLOCK_PATHS = 100_000
"""More paths than this in one block cannot all be rated in reasonable time on a CPU."""


@dataclass(frozen=True)
class Cut:
    node: str
    channels: int
    resolution: int


def stage_cuts(model: nn.Module, example: Tensor) -> tuple[fx.GraphModule, list[Cut]]:
    """The teacher traced, and its stage boundaries: per spatial resolution, the last node that is the only live
    activation and ends a module at most two levels deep (a ResNet layer or block, a MobileNet features entry)."""
    model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise ConfigError(f"DNA cuts the teacher into stages with torch.fx, which cannot trace it: {exc}") from exc
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    nodes = list(gm.graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((pos[u] for u in n.users), default=pos[n]) for n in nodes}
    stacks = [list(n.meta.get("nn_module_stack", {})) for n in nodes]
    by_resolution: dict[int, Cut] = {}
    live: set[fx.Node] = set()
    for k, n in enumerate(nodes):
        if n.op != "get_attr":
            live.add(n)
        live = {m for m in live if last_use[m] > k}
        shape = getattr(n.meta.get("tensor_meta"), "shape", None)
        if n.op == "placeholder" or live != {n} or shape is None or len(shape) != 4:
            continue
        following = stacks[k + 1] if k + 1 < len(nodes) else []
        if any(module not in following for module in stacks[k][:2]):
            by_resolution[int(shape[2])] = Cut(n.name, int(shape[1]), int(shape[2]))
    return gm, list(by_resolution.values())


class TeacherBlocks(nn.Module):
    """The teacher as a chain of blocks: block i ends at ``cuts[i]``; the last block maps the last cut to logits."""

    def __init__(self, gm: fx.GraphModule, cuts: Sequence[Cut]) -> None:
        super().__init__()
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        ends = sorted(i for n, i in order.items() if n.name in {c.node for c in cuts})
        split = split_module(gm, gm, lambda n: bisect.bisect_left(ends, order[n]))
        self.blocks = nn.ModuleList(module for _, module in sorted(
            split.named_children(), key=lambda kv: int(kv[0].removeprefix("submod_"))))
        self.cuts = list(cuts)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Every block's output: the cut activations, then the logits."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


def student_boundaries(supernet: Supernet) -> dict[int, int]:
    """Resolution -> number of slots run when the student's feature map last has that resolution."""
    space = supernet.space
    res = math.ceil(space.resolution / space.stem_stride)
    out = {res: 0}
    for i, slot in enumerate(space.slots):
        res = math.ceil(res / slot.stride)
        out[res] = i + 1
    return out


class BlockwiseStudent(nn.Module):
    """The student supernet cut into the teacher's blocks, with 1x1 adapters to and from the teacher's channels."""

    def __init__(self, supernet: Supernet, teacher_cuts: Sequence[Cut]) -> None:
        super().__init__()
        bounds = student_boundaries(supernet)
        shared = [c for c in teacher_cuts if c.resolution in bounds and bounds[c.resolution] > 0]
        last = supernet.space.slots[-1]
        if not shared or bounds[shared[-1].resolution] != len(supernet.space.slots):
            raise ConfigError(
                f"the teacher's stages end at resolutions {[c.resolution for c in teacher_cuts]}, the student's "
                f"last searchable layer at {min(bounds)} ({last.name}); DNA needs the student's to be one of the "
                "teacher's (choose another input resolution)")
        self.supernet, self.cuts = supernet, shared
        ends = [bounds[c.resolution] for c in shared]
        self.ranges = list(zip([0, *ends[:-1]], ends, strict=True))
        slots = supernet.space.slots
        for i, (start, end) in enumerate(self.ranges):
            n_paths = math.prod(len(s.ops) for s in slots[start:end])
            if n_paths > MAX_BLOCK_PATHS:
                raise ConfigError(
                    f"DNA block {i} (layers {slots[start].name}..{slots[end - 1].name}) has {n_paths} paths, more "
                    f"than the {MAX_BLOCK_PATHS} that can all be rated: the teacher's stages split the student too "
                    "coarsely at this resolution (use a larger input resolution, e.g. 16 or more)")
        self.in_adapters = nn.ModuleList(
            nn.Conv2d(prev.channels, slots[start].in_channels, 1)
            for prev, (start, _) in zip(shared[:-1], self.ranges[1:], strict=True))
        self.out_adapters = nn.ModuleList(
            nn.Conv2d(slots[end - 1].out_channels, cut.channels, 1)
            for cut, (_, end) in zip(shared, self.ranges, strict=True))
        self.to(memory_format=torch.channels_last)

    def block_slots(self, i: int) -> list:
        start, end = self.ranges[i]
        return self.supernet.space.slots[start:end]

    def block_input(self, i: int, x: Tensor) -> Tensor:
        """Block i's input from the image (i = 0) or the teacher's previous block output."""
        x = x.contiguous(memory_format=torch.channels_last)
        return self.supernet.first(self.supernet.stem(x)) if i == 0 else self.in_adapters[i - 1](x)

    def run_slot(self, slot, op: str, x: Tensor) -> Tensor:
        return self.supernet.run_slot(slot.name, op, x)

    def block(self, i: int, x: Tensor, path: Choices) -> Tensor:
        """Block i along ``path``, from its input (the image, or the teacher's previous block output)."""
        x = self.block_input(i, x)
        for slot in self.block_slots(i):
            x = self.run_slot(slot, path[slot.name], x)
        return self.out_adapters[i](x)

    def forward(self, inputs: Sequence[Tensor], path: Choices) -> list[Tensor]:
        """Every block along ``path``, each from its own input (one pass, as data-parallel training needs)."""
        return [self.block(i, x, path) for i, x in enumerate(inputs)]


def teacher_targets(teacher: TeacherBlocks, student: BlockwiseStudent, x: Tensor) -> list[Tensor]:
    """The teacher's activations at the student's block ends."""
    with torch.no_grad():
        outs = dict(zip([c.node for c in teacher.cuts], teacher(x), strict=False))
    return [outs[c.node] for c in student.cuts]


class BlockwiseTask:
    """DNA's step: one uniformly sampled path per step, every block learning (MSE) to map the teacher's previous
    block output to its next one, all blocks from one pass of the frozen teacher."""

    find_unused_parameters = True  # a sampled path skips layers

    def __init__(self, student: BlockwiseStudent, teacher: TeacherBlocks, seed: int) -> None:
        self.module, self.scored, self.teacher, self.seed, self.epoch = student, student, teacher, seed, 0

    def prepare(self, device: TrainDevice) -> None:
        self.teacher.to(device.device).eval()

    def begin_epoch(self, epoch: int, saved: dict[str, Any] | None) -> dict[str, Any]:
        self.epoch = epoch
        return {}

    def loss(self, net: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]]:
        targets = teacher_targets(self.teacher, self.module, batch.x)
        path = self.module.supernet.space.sample(step_rng(self.seed, self.epoch, step))
        outs = net([batch.x, *targets[:-1]], path)
        losses = [F.mse_loss(o.float(), t.float()) for o, t in zip(outs, targets, strict=True)]
        return sum(losses), {f"mse_{i}": v.item() for i, v in enumerate(losses)}


def train_blockwise(student: BlockwiseStudent, teacher: TeacherBlocks, data: Data, cfg: TrainConfig, seed: int = 0,
                    checkpoint: Path | None = None, on_epoch: Callable[[EpochStats], None] | None = None,
                    runtime: Runtime = LOCAL) -> list[list[float]]:
    """Train every block's paths to reproduce the teacher's block outputs from its block inputs with the one
    trainer; returns each epoch's mean MSE per block. Resumes from ``checkpoint``."""
    history = fit(BlockwiseTask(student, teacher, seed), data, "mini_train", cfg, runtime, seed, checkpoint,
                  on_epoch=on_epoch)
    return [block_mse(h) for h in history]


def block_mse(stats: EpochStats) -> list[float]:
    """An epoch's mean MSE of each block."""
    return [v for k, v in sorted(stats.metrics.items(), key=lambda kv: kv[0]) if k.startswith("mse_")]


BlockRatings = dict[tuple[str, ...], float]
"""A block's paths (its slots' operators, in order) -> mini-val MSE / variance of the teacher's block output."""


@torch.no_grad()
def rate_paths(student: BlockwiseStudent, teacher: TeacherBlocks, images: Tensor,
               blocks: Sequence[int] | None = None) -> list[BlockRatings]:
    """Every path of every block (or of ``blocks``) rated on ``images`` (depth-first: each prefix's activation is
    computed once)."""
    student.train()  # batch statistics of the whole rating set, alike for every path
    targets = teacher_targets(teacher, student, images)
    inputs = [images, *targets[:-1]]
    ratings: list[BlockRatings] = []
    for i, target in enumerate(targets):
        if blocks is not None and i not in blocks:
            continue
        slots, variance, rated = student.block_slots(i), float(target.var()), {}

        def visit(depth: int, x: Tensor, prefix: tuple[str, ...], i=i, slots=slots, target=target,
                  variance=variance, rated=rated) -> None:
            if depth == len(slots):
                rated[prefix] = float(F.mse_loss(student.out_adapters[i](x), target)) / variance
                return
            for op in slots[depth].ops:
                visit(depth + 1, student.run_slot(slots[depth], op, x), (*prefix, op))

        visit(0, student.block_input(i, inputs[i]), ())
        ratings.append(rated)
    return ratings


def path_loss(student: BlockwiseStudent, ratings: list[BlockRatings], path: Choices) -> float:
    """The summed normalised loss of ``path`` over the blocks."""
    return sum(r[tuple(path[s.name] for s in student.block_slots(i))] for i, r in enumerate(ratings))


@dataclass
class Selection:
    parts: tuple[tuple[str, ...], ...]
    """The chosen path of each block."""
    loss: float
    cost: float
    checked: int
    """Combinations whose cost was evaluated (best-first) or completed (branch and bound)."""


def select_under_constraint(ratings: Sequence[dict[tuple, float]], cost: Callable[[tuple[tuple, ...]], float],
                            limit: float, max_checks: int = 20_000) -> Selection:
    """The combination (one path per block) with the lowest summed rating whose ``cost`` is at most ``limit``.

    Combinations are visited in nondecreasing summed rating (best-first over each block's sorted paths, each
    combination once), so the first one within the limit is the exact optimum; ``cost`` is called only on the
    combinations visited before it.
    """
    ranked = [sorted(r.items(), key=lambda kv: kv[1]) for r in ratings]
    start = (0,) * len(ranked)
    heap = [(sum(r[0][1] for r in ranked), start)]
    seen = {start}
    for checked in itertools.count(1):
        if not heap or checked > max_checks:
            break
        total, idx = heapq.heappop(heap)
        parts = tuple(ranked[b][j][0] for b, j in enumerate(idx))
        c = cost(parts)
        if c <= limit:
            return Selection(parts, total, c, checked)
        for b in range(len(ranked)):
            if idx[b] + 1 < len(ranked[b]):
                nxt = (*idx[:b], idx[b] + 1, *idx[b + 1:])
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (total - ranked[b][idx[b]][1] + ranked[b][idx[b] + 1][1], nxt))
    raise ConfigError(f"no combination of block paths meets the target {limit:g} within the {max_checks} best "
                      "by rating; raise the target")


def select_additive(ratings: Sequence[dict[tuple, float]], part_cost: Callable[[int, tuple], float], base: float,
                    limit: float) -> Selection:
    """The exact optimum of ``select_under_constraint`` when the cost is additive: ``base`` plus
    ``part_cost(block, path)`` summed over the blocks (MACs are: the space fixes every layer's channels).

    Each block keeps only its Pareto paths (none other both cheaper and better rated), which loses no optimum;
    a depth-first branch and bound over them in rating order stops a branch once its rating bound reaches the
    best found or its cheapest completion exceeds ``limit``.
    """
    fronts = []
    for b, rated in enumerate(ratings):
        front, best_loss = [], math.inf
        for c, loss, part in sorted((part_cost(b, part), loss, part) for part, loss in rated.items()):
            if loss < best_loss:
                front.append((loss, c, part))
                best_loss = loss
        fronts.append(sorted(front))
    loss_rest = [*itertools.accumulate((f[0][0] for f in reversed(fronts)), initial=0.0)][::-1]
    cost_rest = [*itertools.accumulate((min(c for _, c, _ in f) for f in reversed(fronts)), initial=0.0)][::-1]
    if base + cost_rest[0] > limit:
        raise ConfigError(f"the cheapest combination of block paths costs {base + cost_rest[0]:g} > the target "
                          f"{limit:g}; raise the target")
    best = Selection((), math.inf, math.inf, 0)

    def descend(b: int, loss: float, cost: float, parts: tuple) -> None:
        if b == len(fronts):
            best.checked += 1
            if loss < best.loss:
                best.parts, best.loss, best.cost = parts, loss, base + cost
            return
        for part_loss, c, part in fronts[b]:
            if loss + part_loss + loss_rest[b + 1] >= best.loss:
                break
            if base + cost + c + cost_rest[b + 1] <= limit:
                descend(b + 1, loss + part_loss, cost + c, (*parts, part))

    descend(0, 0.0, 0.0, ())
    return best


def path_of(student: BlockwiseStudent, parts: Sequence[tuple[str, ...]]) -> Choices:
    """The supernet path made of one path per block."""
    return {slot.name: op for i, part in enumerate(parts)
            for slot, op in zip(student.block_slots(i), part, strict=True)}


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
