"""PAMKD vs plain mutual KD vs single learners, in kind, on the embedded digits task (16x16, `mbv2` at width 0.25).

Per seed, three searches under one MACs target (the median of 200 random `mbv2` architectures), --epochs each:
PAMKD (--learners learners, performance scrutiny), plain mutual KD (the same group, every learner teaches every
other: `--no-scrutiny`) and --learners single learners searching alone (a group of one, W trained by CE only).
Every learner's arg-max architecture is then trained stand-alone from scratch with KD from the quick-start
teacher (--train-epochs) and scored on the held-out split; its MACs and its latency on this host are printed,
so picks are compared at matched cost. The collective-failure curve in kind: the learners' mini-val accuracy
(W, the taught weights; V beside it) at the start of every epoch and at the end.

Ends with one line of JSON of the headline figures.

    python benchmarks/pamkd.py [--seeds 2] [--epochs 20] [--learners 3] [--train-epochs 10]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

METHODS = ("pamkd", "mutual", "single")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learners", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=10)
    args = parser.parse_args()

    import torch

    from edgekd.core.arch import build
    from edgekd.core.config import PAMKDConfig, RunConfig, TrainConfig
    from edgekd.core.devices import LocalDevice, NamedDevice
    from edgekd.evaluators.pamkd import CostTable, Group, train_pamkd
    from edgekd.latency_models.flops import spec_macs_params
    from edgekd.latency_models.measured import MeasuredLatency
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.search.oneshot import space_macs
    from edgekd.train import evaluate, train

    root = Path(tempfile.mkdtemp(prefix="edgekd-pamkd-"))
    cfg = RunConfig(name="pamkd", resolution=16, search={"space": "mbv2", "space_width": 0.25})
    ctx = open_run(cfg, root)
    space, data = ctx.space, ctx.data
    rng = random.Random(0)
    target = statistics.median(spec_macs_params(space.decode(space.sample(rng)))[0] for _ in range(200))
    costs = CostTable.of(space_macs(space), space, target)
    latency = MeasuredLatency(NamedDevice(name="bench-cpu", spec=LocalDevice(warmup=5, repeats=20, processes=1)),
                              root / "latency.sqlite")
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=32)
    print(f"target {target:.3f} MMACs; {args.learners} learners, {args.epochs} epochs, seeds {args.seeds}")

    picks: dict[str, list[dict]] = {m: [] for m in METHODS}
    curves: dict[str, list[list[float]]] = {m: [] for m in METHODS}  # per run: mean W mini-val acc per epoch
    worst: dict[str, list[list[float]]] = {m: [] for m in METHODS}  # per run: lowest W mini-val acc per epoch
    seconds: dict[str, float] = dict.fromkeys(METHODS, 0.0)
    for seed in range(args.seeds):
        for method in METHODS:
            groups = ([(args.learners, method == "pamkd")] if method != "single" else [(1, True)] * args.learners)
            for g, (learners, scrutiny) in enumerate(groups):
                torch.manual_seed(seed * 100 + g)
                group = Group(space, learners, costs, "gdas", seed=seed * 100 + g)
                started = time.perf_counter()
                history, final = train_pamkd(group, data, train_cfg, PAMKDConfig(learners=learners, scrutiny=scrutiny),
                                             tau=cfg.kd.tau, seed=seed * 100 + g)
                seconds[method] += time.perf_counter() - started
                records = [h.metrics for h in history] + [final]
                w = [[r[f"w_acc_{k}"] for k in range(learners)] for r in records]
                curves[method].append([statistics.mean(e) for e in w])
                worst[method].append([min(e) for e in w])
                for k, learner in enumerate(group.learners):
                    spec = space.decode(learner.path())
                    model = build(spec)
                    torch.manual_seed(seed)
                    train(model, data, TrainConfig(epochs=args.train_epochs), cfg.kd, ctx.teacher_signal, seed=seed)
                    acc = evaluate(model, data, "val")
                    pick = {"seed": seed, "learner": k, "acc": acc, "mmacs": spec_macs_params(spec)[0],
                            "latency_ms": latency.latency_ms(spec), "arch_id": spec.id}
                    picks[method].append(pick)
                    print(f"seed {seed} {method:6s} learner {g + k}: stand-alone val acc {acc:.4f}, "
                          f"{pick['mmacs']:.3f} MMACs, {pick['latency_ms']:.4f} ms "
                          f"(final W mini-val acc {final[f'w_acc_{k}']:.3f})", flush=True)

    print("\nW mini-val accuracy at the start of each epoch (mean over learners / lowest learner), then at the end:")
    n_points = args.epochs + 1
    print("epoch  " + "  ".join(f"{m:>15s}" for m in METHODS))
    for e in range(n_points):
        row = [f"{statistics.mean(c[e] for c in curves[m]):.3f} / {statistics.mean(c[e] for c in worst[m]):.3f}"
               for m in METHODS]
        print(f"{e:5d}  " + "  ".join(f"{v:>15s}" for v in row))
    summary = {}
    for m in METHODS:
        accs = [p["acc"] for p in picks[m]]
        summary[m] = {"acc_mean": round(statistics.mean(accs), 4),
                      "acc_sd": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                      "mmacs_mean": round(statistics.mean(p["mmacs"] for p in picks[m]), 3),
                      "latency_ms_mean": round(statistics.mean(p["latency_ms"] for p in picks[m]), 4),
                      "under_target": sum(p["mmacs"] <= target for p in picks[m]) / len(picks[m]),
                      "final_w_acc_mean": round(statistics.mean(c[-1] for c in curves[m]), 4),
                      "final_w_acc_lowest": round(statistics.mean(c[-1] for c in worst[m]), 4),
                      "search_seconds": round(seconds[m], 1)}
        s = summary[m]
        print(f"{m:6s}: picks' stand-alone val acc {s['acc_mean']:.4f} ± {s['acc_sd']:.4f} (n={len(accs)}), "
              f"{s['mmacs_mean']:.3f} MMACs, {s['latency_ms_mean']:.4f} ms, {s['under_target']:.0%} under the "
              f"target; final W mini-val acc mean {s['final_w_acc_mean']:.3f}, lowest {s['final_w_acc_lowest']:.3f}; "
              f"search {s['search_seconds']:.0f} s")
    print(json.dumps({"target_mmacs": round(target, 3), "seeds": args.seeds, "epochs": args.epochs,
                      "learners": args.learners, **summary}))


if __name__ == "__main__":
    main()
