"""One-shot KD search on the embedded digits data: EnNAS, DNA and plain single-path (SPOS) supernets, from one run.

Trains, on the quick-start teacher and the `mbv2` space (width 0.25, 16x16 digits):
- EnNAS (ensemble teacher, diversity sampling), EnNAS w/o DS (uniform sampling), a single-path teacher (the
  batch's best path teaches the others) and SPOS (one path per batch, no KD), --epochs each;
- DNA's block-wise student (--epochs) and its rating of every block path.
Then --archs architectures are KD-trained stand-alone (the KD proxy, --proxy-epochs): spread evenly over the
space's MACs range (the quantiles of 50x as many uniform samples), since uniform samples of this space differ
in stand-alone accuracy by little more than the mini-val noise.
Printed: per epoch, the teacher-vs-student training accuracy gap of the ensemble and the single-path teacher
(EnNAS Fig. 1 in kind) and the mean Euclidean distance between the logits of a batch's paths with and without
diversity sampling (Fig. 2 in kind); the Kendall tau between each method's rating (inherited-weight mini-val
accuracy; DNA's summed block loss, negated) and the stand-alone accuracy; the wall time of the EnNAS and DNA
searches against random KD-proxy search (the stand-alone trainings in a random order) reaching the stand-alone
reward of their pick. Ends with one line of JSON:
{"kendall": {"ennas", "dna", "spos"}, "teacher_gap": {"ennas", "single"}, "diversity": {"ds", "uniform"}, ...}.
`--fidelity-only` stops after the Kendall taus (no variants, no searches); its JSON has the taus, their
intervals and the stand-alone accuracy range.

`--data glyphs` runs it all on the harder `glyphs:2` task instead (47 characters at 16x16, held-out fonts; mbv2 at
width 0.5, stand-alone trainings at learning rate 0.01, supernets at 0.003, mini-val 30% of train), where
stand-alone accuracies spread over tens of points. Each Kendall tau comes with a 95% bootstrap interval
(architectures resampled). The supernets learn slowly there: give them --epochs 40 (after 10 epochs the EnNAS
supernet's training accuracy was still at chance, 5%; after 40 it was 71%, SPOS's 30%).

--root DIR keeps the run (teacher, supernet checkpoints, DNA's ratings, each stand-alone result, kept apart per
--proxy-epochs) so that a rerun resumes where it stopped; --jobs N spreads the stand-alone trainings over N
processes (one thread each on 2 cores).

    python benchmarks/oneshot.py [--data digits|glyphs] [--epochs 15] [--archs 20] [--proxy-epochs 9] [--trials 60]
                                  [--fidelity-only] [--root DIR] [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

TASKS = {
    "digits": {"data": "digits", "width": 0.25, "lr": 3e-3, "supernet_lr": 3e-3, "mini_val_fraction": 0.2},
    # on glyphs the supernets need about 40 epochs at 0.003 (at 0.01 EnNAS's training accuracy was 4% after 6
    # epochs; at 0.003, 5% after 10 and 71% after 40)
    "glyphs": {"data": "glyphs:2", "width": 0.5, "lr": 1e-2, "supernet_lr": 3e-3, "mini_val_fraction": 0.3},
}
"""Per task: data, mbv2 width, stand-alone (proxy) learning rate, supernet learning rate, mini-val fraction."""


def bootstrap_kendall(rating: list[float], truth: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of Kendall's tau, resampling the architectures."""
    import numpy as np
    from scipy.stats import kendalltau

    rng = np.random.default_rng(seed)
    r, t = np.asarray(rating), np.asarray(truth)
    taus = []
    for _ in range(n):
        pick = rng.integers(0, len(r), len(r))
        tau = kendalltau(r[pick], t[pick]).statistic
        if not np.isnan(tau):
            taus.append(tau)
    low, high = np.percentile(taus, [2.5, 97.5])
    return float(low), float(high)


def timed(fn):
    """``fn()`` and the seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def timed_evaluate(proxy, spec) -> tuple[float, float]:
    """``proxy``'s stand-alone accuracy of ``spec`` and the seconds it took."""
    return timed(lambda: proxy.evaluate(spec))


def standalone_results(proxy, specs: list, jobs: int, saved: Path) -> list[tuple[float, float]]:
    """(accuracy, seconds) of each of ``specs`` trained stand-alone, over ``jobs`` processes; each result is kept
    in ``saved`` (by architecture id) as it comes, and a result found there is not trained again."""
    from edgekd.core.config import read_json, write_json
    from edgekd.train.devices import set_threads

    done = read_json(saved) if saved.is_file() else {}
    todo = [s for s in specs if s.id not in done]
    print(f"stand-alone KD training of {len(todo)} architectures ({len(specs) - len(todo)} done before)")
    pool = ProcessPoolExecutor(jobs, initializer=set_threads, initargs=(None, jobs)) if jobs > 1 else None
    try:
        results = (pool.map if pool else map)(partial(timed_evaluate, proxy), todo)
        for spec, result in zip(todo, results, strict=True):
            done[spec.id] = result
            write_json(saved, done)
            print(f"  stand-alone {len(done)}/{len(specs)}: acc {result[0]:.4f} ({result[1]:.1f} s)")
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return [tuple(done[s.id]) for s in specs]


def variant_figures(histories: dict, ennas, data, subnets: int) -> dict:
    """Print EnNAS Fig. 1-2 in kind from the four supernets' training histories (the teacher-vs-student gap of the
    ensemble and the single-path teacher; the logit distance of a batch's paths with and without diversity
    sampling) and the exact operator diversity (eq. 4); return the JSON's "teacher_gap" and "diversity"."""
    import numpy as np
    import torch

    from edgekd.evaluators.ennas import DiversitySampler, operator_diversity, uniform_expected_diversity

    def gap(stats) -> float | None:
        """Teacher minus student training-batch accuracy of an epoch (None before KD starts)."""
        m = stats.metrics
        return m["teacher_acc"] - m["student_acc"] if "teacher_acc" in m else None

    print("\nepoch  gap ensemble  gap single  logit dist DS  logit dist uniform")
    for e, h in enumerate(zip(histories["ennas"], histories["single"], histories["ennas_uniform"], strict=True)):
        gaps = [gap(x) for x in h[:2]]
        print(f"{e + 1:5d}  " + "  ".join("      -   " if g is None else f"{g:+10.4f}" for g in gaps)
              + f"  {h[0].metrics['logit_distance']:13.3f}  {h[2].metrics['logit_distance']:18.3f}")

    def mean_gap(name: str) -> float | None:
        """Mean gap over the KD epochs (None when KD never started: --epochs at or below its start epoch)."""
        gaps = [g for g in map(gap, histories[name]) if g is not None]
        return round(statistics.fmean(gaps), 4) if gaps else None

    def mean_distance(name: str) -> float:
        return statistics.fmean(h.metrics["logit_distance"] for h in histories[name])

    zeta = operator_diversity(ennas, data.tensors("mini_train")[0][:64], torch.Generator().manual_seed(0))
    exact = [(DiversitySampler(z, subnets).expected_diversity(), uniform_expected_diversity(z)) for z in zeta.values()]
    print(f"operator diversity (eq. 4) of the m drawn, mean over slots: DS {np.mean([e[0] for e in exact]):.4f}, "
          f"uniform {np.mean([e[1] for e in exact]):.4f}")
    return {"teacher_gap": {"ennas": mean_gap("ennas"), "single": mean_gap("single")},
            "diversity": {"ds": round(mean_distance("ennas"), 3), "uniform": round(mean_distance("ennas_uniform"), 3)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(TASKS), default="digits", help="the task")
    parser.add_argument("--epochs", type=int, default=15, help="supernet training epochs (every method)")
    parser.add_argument("--archs", type=int, default=20, help="sampled architectures trained stand-alone")
    parser.add_argument("--proxy-epochs", type=int, default=9, help="KD epochs of a stand-alone training")
    parser.add_argument("--trials", type=int, default=60, help="trials of the one-shot evolutionary search")
    parser.add_argument("--root", type=Path, help="runs folder (default: a new temporary one); reruns resume")
    parser.add_argument("--jobs", type=int, default=1, help="processes the stand-alone trainings are spread over")
    parser.add_argument("--fidelity-only", action="store_true",
                        help="measure the rank fidelity only: train the rated supernets (EnNAS, SPOS) and DNA, "
                             "skip the Fig. 1-2 variants (EnNAS w/o DS, single-path teacher) and the searches")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs takes a positive number of processes, got {args.jobs}")
    if args.archs < 3:
        parser.error(f"--archs takes at least 3 architectures (a Kendall tau and its interval), got {args.archs}")

    import torch
    from scipy.stats import kendalltau

    from edgekd.core.arch import build
    from edgekd.core.config import OneShotConfig, RunConfig, SearchConfig, TrainConfig
    from edgekd.evaluators.dna import path_loss
    from edgekd.evaluators.ennas import train_supernet
    from edgekd.evaluators.proxy import KDProxyEvaluator
    from edgekd.evaluators.supernet import Supernet, SupernetEvaluator
    from edgekd.latency_models.flops import count_macs_params
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.reward import Reward
    from edgekd.pipeline.search.objective import search
    from edgekd.pipeline.search.oneshot import blockwise_evaluator, dna_search, space_macs

    task = TASKS[args.data]
    root = args.root or Path(tempfile.mkdtemp(prefix="edgekd-oneshot-"))
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=32, lr=task["supernet_lr"])
    oneshot = OneShotConfig(train=train_cfg)
    cfg = RunConfig(name="oneshot", data=task["data"], resolution=16, mini_val_fraction=task["mini_val_fraction"],
                    search=SearchConfig(space="mbv2", space_width=task["width"], strategy="evolution",
                                        trials=args.trials, evaluator="ennas", oneshot=oneshot))
    ctx = open_run(cfg, root)
    data, space, teacher = ctx.data, ctx.space, ctx.teacher
    print(f"teacher held-out acc {teacher.val_acc:.4f}; space mbv2 ({space.size:.3g} paths)")

    variants = {"ennas": dict(m=oneshot.subnets, teacher="ensemble", diversity=True),
                "ennas_uniform": dict(m=oneshot.subnets, teacher="ensemble", diversity=False),
                "single": dict(m=oneshot.subnets, teacher="best", diversity=True),
                "spos": dict(m=1, teacher="none", diversity=False)}
    if args.fidelity_only:
        variants = {name: variants[name] for name in ("ennas", "spos")}
    supernets, histories, walls = {}, {}, {}
    for name, kw in variants.items():
        torch.manual_seed(cfg.seed)
        supernets[name] = Supernet(space)
        histories[name] = train_supernet(supernets[name], data, train_cfg, kd_from_epoch=oneshot.kd_from_epoch,
                                         tau=cfg.kd.tau, seed=cfg.seed,
                                         checkpoint=ctx.stage_dir("search") / f"supernet-{name}.pt", **kw)
        walls[name] = sum(h.seconds for h in histories[name])  # epochs of earlier invocations included
        print(f"supernet {name}: {walls[name]:.0f} s, last epoch {histories[name][-1]}")

    # DNA: block-wise distillation and the rating of every block path (the search stage's own code and files)
    dna, walls["dna_train_rate"] = timed(lambda: blockwise_evaluator(ctx))
    student, ratings = dna.student, dna.ratings
    print(f"DNA: {len(student.cuts)} blocks at resolutions {[c.resolution for c in student.cuts]}, "
          f"{sum(map(len, ratings))} block paths rated; {walls['dna_train_rate']:.0f} s")

    # stand-alone KD training of sampled architectures
    proxy = KDProxyEvaluator(data, teacher.logits, TrainConfig(epochs=args.proxy_epochs, batch_size=64, lr=task["lr"]),
                             cfg.kd, cfg.seed)
    rng = random.Random(cfg.seed)
    macs_of = space_macs(space).of
    pool = sorted((space.sample(rng) for _ in range(50 * args.archs)), key=macs_of)
    sampled = [pool[round(i * (len(pool) - 1) / (args.archs - 1))] for i in range(args.archs)]
    results = standalone_results(proxy, [space.decode(p) for p in sampled], args.jobs,
                                 ctx.stage_dir("search") / f"standalone-{args.proxy_epochs}ep.json")
    standalone, train_s = [acc for acc, _ in results], [seconds for _, seconds in results]
    evaluators = {name: SupernetEvaluator(supernets[name], data) for name in ("ennas", "spos")}
    ratings_of = {name: [ev.evaluate(space.decode(p)) for p in sampled] for name, ev in evaluators.items()}
    ratings_of["dna"] = [-path_loss(student, ratings, p) for p in sampled]
    kendall = {name: float(kendalltau(r, standalone).statistic) for name, r in ratings_of.items()}
    intervals = {name: bootstrap_kendall(r, standalone) for name, r in ratings_of.items()}
    print(f"stand-alone KD accuracy of the {args.archs} architectures: {min(standalone):.4f} to {max(standalone):.4f}")
    print("Kendall tau vs stand-alone KD accuracy [95% bootstrap interval]: " + ", ".join(
        f"{k} {v:.3f} [{intervals[k][0]:.3f}, {intervals[k][1]:.3f}]" for k, v in kendall.items()))

    headline = {"kendall": {k: round(v, 3) for k, v in kendall.items()},
                "kendall_interval": {k: [round(x, 3) for x in v] for k, v in intervals.items()}, "data": args.data,
                "archs": args.archs, "epochs": args.epochs, "proxy_epochs": args.proxy_epochs,
                "standalone_range": [round(min(standalone), 4), round(max(standalone), 4)]}
    if args.fidelity_only:
        print(json.dumps(headline))
        return
    figures = variant_figures(histories, supernets["ennas"], data, oneshot.subnets)

    # one-shot searches vs random KD-proxy search, on a MACs target (the sampled architectures' median)
    macs = [macs_of(p) for p in sampled]
    reward = Reward(statistics.median(macs), "mmacs", "soft")
    ennas_result, search_s = timed(lambda: search(cfg, space, evaluators["ennas"], ctx.latency, reward,
                                                  ctx.stage_dir("search")))
    walls["ennas_search"] = walls["ennas"] + search_s
    dna_result, select_s = timed(lambda: dna_search(ctx, reward, dna))  # the trained blocks' ratings
    walls["dna_search"] = walls["dna_train_rate"] + select_s

    def standalone_reward(spec) -> float:
        mmacs = count_macs_params(build(spec), spec.input_shape)[0]
        return reward(proxy.evaluate(spec), {"mmacs": mmacs})

    order = random.Random(cfg.seed + 1).sample(range(args.archs), args.archs)  # random search's trial order
    random_rewards = [reward(standalone[i], {"mmacs": macs[i]}) for i in order]
    train_s = [train_s[i] for i in order]
    comparison = {}
    for name, result in (("ennas", ennas_result), ("dna", dna_result)):
        target = standalone_reward(result.best_arch)
        reached = next((i for i in range(args.archs) if max(random_rewards[: i + 1]) >= target), None)
        kd_proxy_s = sum(train_s[: reached + 1]) if reached is not None else None
        comparison[name] = {"pick_standalone_reward": round(target, 5),
                            "oneshot_wall_s": round(walls[f"{name}_search"]),
                            "kd_proxy_wall_s": None if kd_proxy_s is None else round(kd_proxy_s),
                            "kd_proxy_trials": None if reached is None else reached + 1}
        text = (f"random KD-proxy search reaches it after {reached + 1} trials, {kd_proxy_s:.0f} s"
                if reached is not None else f"random KD-proxy search does not reach it in {args.archs} trials "
                f"({sum(train_s):.0f} s)")
        print(f"{name} search: {walls[f'{name}_search']:.0f} s, its pick's stand-alone reward {target:.4f}; {text}")
    print(json.dumps({**headline, **figures, "search": comparison}))


if __name__ == "__main__":
    main()
