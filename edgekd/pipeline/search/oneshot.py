"""The one-shot search stage: train (or resume) the run's supernet once, then rate candidates with it.

``ennas`` and ``spos`` give a SupernetEvaluator that any strategy searches with (EnNAS: an evolutionary search
on inherited-weight accuracy); ``dna`` trains the student's blocks against the teacher's, rates every block path
and picks the best combination under the target exactly (``dna_search``). All three are registered evaluator
kinds. Checkpoints and ratings live in the
run's search/ directory, so an interrupted stage resumes.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from edgekd.core.arch import ArchSpec
from edgekd.core.config import read_json, write_json
from edgekd.core.ui import console, progress
from edgekd.evaluators.dna import (
    BlockwiseStudent,
    DNAEvaluator,
    TeacherBlocks,
    block_mse,
    path_of,
    rate_paths,
    select_additive,
    select_under_constraint,
    stage_cuts,
    train_blockwise,
)
from edgekd.evaluators.ennas import train_supernet
from edgekd.evaluators.supernet import Supernet, SupernetEvaluator
from edgekd.latency_models.flops import spec_macs_params
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search.evaluation import EVALUATORS, EvaluatorKind
from edgekd.pipeline.search.records import SearchResult, pareto_front
from edgekd.spaces import Choices
from edgekd.spaces.mbv2 import MBV2Space, SlotCosts
from edgekd.train import EpochStats, saved_epochs
from edgekd.train.evaluation import model_device

NEAR_CHANCE = 0.1
"""A supernet whose paths' training accuracy has come less than this share of the way from chance to 100% has not
learned yet (on glyphs after 10 epochs: 5%, chance being 2%), and ratings by it rank noise."""


def warn_if_unlearned(history: list[EpochStats], classes: int) -> None:
    """Say so when the supernet's paths ended its training near chance accuracy."""
    acc, chance = history[-1].metrics["student_acc"], 1 / classes
    if acc < chance + NEAR_CHANCE * (1 - chance):
        epochs = f"{len(history)} epoch{'s' * (len(history) > 1)}"
        console.print(f"[yellow]note[/]: the supernet's paths reach {acc:.1%} training accuracy after {epochs}, near "
                      f"chance ({chance:.1%}): its ratings rank noise. Train it longer (search.oneshot.train.epochs; "
                      "on glyphs 40 epochs reach 30-70%).")


def supernet_evaluator(ctx: RunContext) -> SupernetEvaluator:
    """The run's supernet trained with EnNAS (``ennas``) or single-path training (``spos``), as an evaluator."""
    cfg, out = ctx.cfg, ctx.stage_dir("search")
    o, ennas = cfg.search.oneshot, cfg.search.evaluator == "ennas"
    torch.manual_seed(cfg.seed)
    supernet = Supernet(ctx.space)
    checkpoint = out / "supernet.pt"
    with progress(f"supernet ({cfg.search.evaluator})", o.train.epochs, completed=saved_epochs(checkpoint)) as bar:
        history = train_supernet(
            supernet, ctx.data, o.train, m=o.subnets if ennas else 1, teacher="ensemble" if ennas else "none",
            diversity=o.diversity and ennas, kd_from_epoch=o.kd_from_epoch, tau=cfg.kd.tau, seed=cfg.seed,
            checkpoint=checkpoint, runtime=ctx.runtime,
            on_epoch=lambda s: bar(info=f"loss {s.loss:.3f} path acc {s.metrics['student_acc']:.3f}"),
        )
    if ctx.runtime.dist.main:
        write_json(out / "supernet.json", [asdict(h) for h in history])
        warn_if_unlearned(history, ctx.data.num_classes)
    return SupernetEvaluator(supernet, ctx.data, ctx.runtime.workers)


def blockwise_evaluator(ctx: RunContext) -> DNAEvaluator:
    """The run's student supernet trained block-wise against the teacher, with every block path's rating (under
    torchrun every rank trains its share; rank 0 alone rates, the others get no ratings)."""
    cfg, out, data = ctx.cfg, ctx.stage_dir("search"), ctx.data
    o = cfg.search.oneshot
    example = next(data.batches("val", 2))[0]
    gm, cuts = stage_cuts(copy.deepcopy(ctx.teacher.model), example)  # trained on the device; the run's stays
    teacher = TeacherBlocks(gm, cuts)
    torch.manual_seed(cfg.seed)
    student = BlockwiseStudent(Supernet(ctx.space), cuts)
    checkpoint, ratings_path = out / "dna_student.pt", out / "dna_ratings.json"
    with progress("DNA block-wise distillation", o.train.epochs, completed=saved_epochs(checkpoint)) as bar:
        train_blockwise(student, teacher, data, o.train, cfg.seed, checkpoint, runtime=ctx.runtime,
                        on_epoch=lambda s: bar(info="block MSE " + " ".join(f"{v:.3f}" for v in block_mse(s))))
    if not ctx.runtime.dist.main:
        return DNAEvaluator(student, [])
    if ratings_path.is_file():
        ratings = [{tuple(k.split()): v for k, v in block.items()} for block in read_json(ratings_path)]
    else:
        n_paths = sum(math.prod(len(s.ops) for s in student.block_slots(i)) for i in range(len(student.cuts)))
        console.print(f"rating all {n_paths} block paths on {o.rating_images} mini-val images")
        images = data.tensors("mini_val", limit=o.rating_images)[0].to(model_device(student))
        ratings = rate_paths(student, teacher, images)
        write_json(ratings_path, [{" ".join(k): v for k, v in block.items()} for block in ratings])
    return DNAEvaluator(student, ratings)


def dna_search(ctx: RunContext, reward: Reward, evaluator: DNAEvaluator) -> SearchResult:
    """DNA's pick from ``blockwise_evaluator``'s ratings: the combination of block paths with the lowest summed
    rating whose latency (or MACs) meets the reward's target. Writes best.json, trials.json and pareto.json like
    a sampled search."""
    out = ctx.stage_dir("search")
    student, ratings = evaluator.student, evaluator.ratings
    space = ctx.space
    if reward.metric == "mmacs":
        macs = space_macs(space)

        def part_cost(block: int, part: tuple[str, ...]) -> float:
            return sum(macs.table[s.name][op] for s, op in zip(student.block_slots(block), part, strict=True))

        selection = select_additive(ratings, part_cost, macs.base, reward.target)
    else:
        selection = select_under_constraint(
            ratings, lambda parts: ctx.latency.latency_ms(space.decode(path_of(student, parts))), reward.target)
    path = path_of(student, selection.parts)
    record = picked_record(ctx, space.decode(path), path, reward, math.exp(-selection.loss), dna_loss=selection.loss,
                           combinations_checked=selection.checked)
    return write_picked(out, reward, [record], record)


def space_macs(space: MBV2Space) -> SlotCosts:
    """Every slot operator's MMACs relative to the space's reference path (exact: checked against thop)."""
    return SlotCosts.of_space(space, lambda spec: spec_macs_params(spec)[0])


def picked_record(ctx: RunContext, spec: ArchSpec, path: Choices, reward: Reward, acc: float,
                  **extra: Any) -> dict[str, Any]:
    """The trial record of an architecture a one-shot evaluator picked directly (DNA, PAMKD), rated ``acc``."""
    mmacs, mparams = spec_macs_params(spec)
    metrics = {"latency_ms": ctx.latency.latency_ms(spec), "mmacs": mmacs, "mparams": mparams}
    return {"trial": 0, "state": "complete", "arch_id": spec.id, "arch": spec.to_dict(), "choices": path,
            "acc": acc, "reward": reward(acc, metrics), "kd": ctx.cfg.kd.model_dump(),
            "evaluator": ctx.cfg.search.evaluator, **metrics, **extra}


def write_picked(out: Path, reward: Reward, records: list[dict[str, Any]], best: dict[str, Any]) -> SearchResult:
    """Write reward.json, trials.json, pareto.json and best.json for candidates picked directly."""
    result = SearchResult(best=best, pareto=pareto_front(records), n_trials=len(records))
    write_json(out / "reward.json", reward.describe())
    write_json(out / "trials.json", records)
    write_json(out / "pareto.json", result.pareto)
    write_json(out / "best.json", best)
    return result


EVALUATORS.add("ennas", EvaluatorKind(supernet_evaluator, one_shot=True))
EVALUATORS.add("spos", EvaluatorKind(supernet_evaluator, one_shot=True))
EVALUATORS.add("dna", EvaluatorKind(blockwise_evaluator, one_shot=True, pick=dna_search))
