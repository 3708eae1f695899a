"""AutoKD's student families, in kind, on the embedded digits task (16x16, the quick-start teacher, small budgets).

1. "Good families are tight": --families random families of the `family` space, --samples students drawn from
   each, every student KD-proxy-trained (--epochs) and scored on mini-val. The family with the best mean is the
   "best family"; its spread (sd) is compared with the median spread of the others.
2. Searching families vs architectures: BOHB (`--strategy bohb`) over `family` and over `mnas`, --trials trials
   each, --search-seeds times, under one MACs target (the median of the sampled students'); the best reward after
   each trial, and the trials each needs to reach the lower of the two mean final rewards.

Ends with one line of JSON of the headline figures.

    python benchmarks/families.py [--families 8] [--samples 4] [--epochs 3] [--trials 12] [--search-seeds 2]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--search-seeds", type=int, default=2)
    args = parser.parse_args()

    from edgekd.core.config import RunConfig, TrainConfig
    from edgekd.core.devices import LocalDevice, NamedDevice
    from edgekd.evaluators.proxy import KDProxyEvaluator
    from edgekd.latency_models.flops import spec_macs_params
    from edgekd.latency_models.measured import MeasuredLatency
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.reward import Reward
    from edgekd.pipeline.search.objective import search
    from edgekd.spaces import make_space

    root = Path(tempfile.mkdtemp(prefix="edgekd-families-"))
    cfg = RunConfig(name="families", search={"space": "family", "space_width": 0.25, "strategy": "bohb",
                                             "proxy": TrainConfig(epochs=args.epochs).model_dump()})
    ctx = open_run(cfg, root)
    proxy = KDProxyEvaluator(ctx.data, ctx.teacher_signal, cfg.search.proxy, cfg.kd, cfg.seed)
    space = ctx.space

    # 1. spread within families
    rng = random.Random(0)
    families = []
    for f in range(args.families):
        family = space.sample(rng)
        students = [space.member(family, seed) for seed in range(args.samples)]
        accs = [proxy.evaluate(s) for s in students]
        mmacs = [spec_macs_params(s)[0] for s in students]
        families.append({"family": family, "accs": accs, "mmacs": mmacs, "mean": statistics.mean(accs),
                         "sd": statistics.stdev(accs)})
        print(f"family {f}: mini-val acc {statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f} "
              f"({', '.join(f'{a:.3f}' for a in accs)}), MMACs {min(mmacs):.2f}-{max(mmacs):.2f}")
    ranked = sorted(families, key=lambda r: -r["mean"])
    best, rest = ranked[0], ranked[1:]
    rest_sd = statistics.median(r["sd"] for r in rest)
    print(f"best family: mean {best['mean']:.4f}, sd {best['sd']:.4f}; the others' median sd {rest_sd:.4f}")

    # 2. BOHB over families vs over mnas, one MACs target
    target = statistics.median(m for r in families for m in r["mmacs"])
    reward = Reward(target, "mmacs")
    device = NamedDevice(name="bench-cpu", spec=LocalDevice(warmup=5, repeats=20, processes=1))
    latency = MeasuredLatency(device, root / "latency.sqlite")
    curves: dict[str, list[list[float]]] = {"family": [], "mnas": []}
    for name in curves:
        for seed in range(args.search_seeds):
            run_cfg = cfg.model_copy(update={"name": f"{name}-{seed}", "seed": seed, "search": cfg.search.model_copy(
                update={"space": name, "trials": args.trials})})
            c, res, _ = ctx.data.input_shape
            result = search(run_cfg, make_space(name, res, c, ctx.data.num_classes, 0.25), proxy, latency, reward,
                            root / f"{name}-{seed}")
            records = json.loads((root / f"{name}-{seed}" / "trials.json").read_text())
            ordered = sorted(records, key=lambda r: r["trial"])
            rewards = [r["reward"] if r["state"] == "complete" else 0.0 for r in ordered]
            curves[name].append([max(rewards[: i + 1]) for i in range(len(rewards))])
            print(f"bohb over {name}, seed {seed}: best reward {result.best['reward']:.4f} after {len(rewards)} trials")
    finals = {name: statistics.mean(c[-1] for c in runs) for name, runs in curves.items()}
    level = min(finals.values())
    reach = {name: statistics.mean(next((i + 1 for i, v in enumerate(c) if v >= level), len(c) + 1) for c in runs)
             for name, runs in curves.items()}
    print(f"target {target:.2f} MMACs; mean final best reward: family {finals['family']:.4f}, mnas "
          f"{finals['mnas']:.4f}; trials to reach {level:.4f}: family {reach['family']:.1f}, mnas {reach['mnas']:.1f}")
    print(json.dumps({
        "families": args.families, "samples": args.samples, "best_family_mean": round(best["mean"], 4),
        "best_family_sd": round(best["sd"], 4), "other_families_median_sd": round(rest_sd, 4),
        "sd_ratio": round(best["sd"] / rest_sd, 3) if rest_sd else None,
        "bohb_final_reward": {k: round(v, 4) for k, v in finals.items()},
        "bohb_trials_to_reach": {k: round(v, 1) for k, v in reach.items()}, "reward_level": round(level, 4),
    }))


if __name__ == "__main__":
    main()
