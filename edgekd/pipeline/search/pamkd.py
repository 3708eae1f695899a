"""The PAMKD search stage (``--evaluator pamkd``): train the group of learners once (resumable), then take every
learner's arg-max architecture as a candidate and the best one under the target."""

from __future__ import annotations

from dataclasses import asdict

from edgekd.core.arch import ArchSpec
from edgekd.core.config import read_json, write_json
from edgekd.core.ui import console, progress
from edgekd.evaluators.pamkd import CostTable, Group, PAMKDEvaluator, slot_probabilities, train_pamkd
from edgekd.evaluators.supernet import layerwise
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search.evaluation import EVALUATORS, EvaluatorKind
from edgekd.pipeline.search.oneshot import picked_record, space_macs, write_picked
from edgekd.pipeline.search.records import SearchResult
from edgekd.spaces.mbv2 import MBV2Space, SlotCosts
from edgekd.train import saved_epochs


def slot_costs(ctx: RunContext, space: MBV2Space, reward: Reward) -> SlotCosts:
    """The reward's cost (MMACs, or latency on the run's device) per slot operator, FBNet's additive table,
    costed once by rank 0 into search/slot_costs.json."""
    path = ctx.stage_dir("search") / f"slot_costs-{reward.metric}.json"
    if ctx.runtime.dist.main and not path.is_file():
        if reward.metric == "mmacs":
            costs = space_macs(space)
        else:
            with progress(f"latency table on {ctx.device.name}", SlotCosts.networks(space)) as bar:
                def timed(spec: ArchSpec) -> float:
                    bar()
                    return ctx.latency.latency_ms(spec)

                costs = SlotCosts.of_space(space, timed)
        write_json(path, asdict(costs))
    ctx.runtime.dist.barrier()
    return SlotCosts(**read_json(path))


def pamkd_evaluator(ctx: RunContext) -> PAMKDEvaluator:
    """The run's group of learners, trained by PAMKD (or plain mutual KD with ``scrutiny`` off) on every rank."""
    cfg, out = ctx.cfg, ctx.stage_dir("search")
    o, p = cfg.search.oneshot, cfg.search.oneshot.pamkd
    space, reward = layerwise(ctx.space), ctx.reward()
    costs = CostTable.of(slot_costs(ctx, space, reward), space, reward.target)
    group = Group(space, p.learners, costs, p.relaxation, cfg.seed)
    checkpoint = out / "pamkd.pt"
    title = f"PAMKD, {p.learners} learners" + ("" if p.scrutiny else " (no scrutiny: plain mutual KD)")
    with progress(title, o.train.epochs, completed=saved_epochs(checkpoint)) as bar:
        history, final = train_pamkd(
            group, ctx.data, o.train, p, tau=cfg.kd.tau, seed=cfg.seed, checkpoint=checkpoint, runtime=ctx.runtime,
            on_epoch=lambda s: bar(info=f"V acc {s.metrics['v_train_acc']:.3f} W acc {s.metrics['w_train_acc']:.3f} "
                                        f"E[{reward.metric}] {s.metrics['expected_cost']:.3g}"))
    if ctx.runtime.dist.main:
        write_json(out / "pamkd.json", {"epochs": [asdict(h) for h in history], "final": final})
    return PAMKDEvaluator(group, ctx.data, ctx.runtime.workers)


def pamkd_search(ctx: RunContext, reward: Reward, evaluator: PAMKDEvaluator) -> SearchResult:
    """Every learner's arg-max architecture, rated with its W weights; the most accurate one under the target is
    the pick (the best reward when none is under it)."""
    space, records = ctx.space, []
    for k, learner in enumerate(evaluator.group.learners):
        path = learner.path()
        records.append(picked_record(ctx, space.decode(path), path, reward, evaluator.rate(k, path), trial=k,
                                     learner=k, op_weights=slot_probabilities(learner)))
    under = [r for r in records if r[reward.metric] <= reward.target]
    if under:
        best = max(under, key=lambda r: r["acc"])
    else:
        best = max(records, key=lambda r: r["reward"])
        console.print(f"[yellow]no learner's architecture is under the target {reward.target:.4g} "
                      f"({reward.metric}); taking the best reward. Raise the cost weight or the target.[/]")
    return write_picked(ctx.stage_dir("search"), reward, records, best)


EVALUATORS.add("pamkd", EvaluatorKind(pamkd_evaluator, one_shot=True, pick=pamkd_search))
