"""Search strategies against each other on a tabular benchmark of real KD proxy evaluations.

The table (benchmarks/data/search_table.json, built once by benchmarks/search_table.py) holds every
architecture of a reduced `mnas` space with its latency measured on this host's CPU and its mini-val accuracy
after each of 9 epochs of KD proxy training on the embedded digits data. Each strategy searches it through the
real search code (edgekd's trial objective: reward = ACC x (LAT/T)^-0.07 with T the table's median latency,
per-epoch reports, Hyperband pruning for bohb, evaluated candidates reused) for --trials trials over --seeds
seeds; a candidate's "training" replays its row and counts the epochs replayed. Printed: mean best reward after
10, 25, 50, 75 and 100 trials per strategy, the trials each needs to reach random search's mean best reward
after 100 trials, and the proxy-training epochs spent to get there. That reference is exact: random search
draws uniformly (with replacement) from the table, so its expected best reward after n trials is
sum_k r_(k) ((k/N)^n - ((k-1)/N)^n) over the N sorted rewards r_(k). Random search is still run, as a check
of that figure, and its epochs are what bohb's are compared with.
The spread over search seeds is printed too: each search's own trials to reach that reward (median, quartiles).
Bar on `--table digits`: rl, evolution and bohb reach random search's 100-trial mean best reward in at most 50
trials, and bohb spends at most half the epochs of full-budget random search for that reward; on `--table
glyphs` (the harder task, benchmarks/search_table.py --table glyphs): at most 35 trials and 0.35 of the
epochs. Ends with one line of JSON: {"trials_to_random100": {"rl", "evolution", "bohb", "nsga2", "gp"},
"bohb_epoch_ratio", "seeds", "table", "what_if_seeds", "per_seed_trials_median_iqr"}.
--what-if-seeds K searches a what-if table instead of the measured one: each row's training noise rescaled as if
it were the mean of K training seeds (0: none), around the main effects of its choices; it asks whether
training the table with more seeds could change the outcome, and its figures are not measurements.

    python benchmarks/search_efficiency.py [--table digits|glyphs] [--trials 100] [--seeds 100] [--jobs 2]
        [--what-if-seeds K] [--strategies A,B]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import optuna
from arguments import names_of, non_negative_int, positive_int
from search_table import TABLE_OF, Table

STRATEGIES = ("random", "evolution", "rl", "bohb", "nsga2", "gp")
CHECKPOINTS = (10, 25, 50, 75, 100)


class TableEvaluator:
    """Replays a candidate's recorded per-epoch accuracy, counting the epochs it replays."""

    def __init__(self, rows: dict[str, dict]) -> None:
        self.rows, self.epochs = rows, 0
        self.budget = len(next(iter(rows.values()))["acc"])

    def evaluate(self, spec, report=None, kd=None) -> float:
        curve = self.rows[spec.id]["acc"]
        for epoch, acc in enumerate(curve, 1):
            self.epochs += 1
            if report:
                report(epoch, acc)  # may raise TrialPruned
        return curve[-1]


class TableLatency:
    def __init__(self, rows: dict[str, dict]) -> None:
        self.rows = rows

    def latency_ms(self, spec) -> float:
        return self.rows[spec.id]["latency_ms"]

    def latency_many(self, specs) -> list[float]:
        return [self.latency_ms(s) for s in specs]


def run(table: Table, strategy: str, seed: int, trials: int, rows: dict[str, dict], reward) -> dict[str, list]:
    """One search of the table: best complete reward and cumulative epochs after each trial."""
    from edgekd.core.config import RunConfig, SearchConfig, TrainConfig
    from edgekd.pipeline.search.objective import TrialObjective, run_trials
    from edgekd.strategies import TrialSeededSampler, make_strategy

    epochs = len(next(iter(rows.values()))["acc"])
    cfg = RunConfig(seed=seed, search=SearchConfig(strategy=strategy, trials=trials,
                                                   proxy=TrainConfig(epochs=epochs, batch_size=64)))
    s = make_strategy(strategy, seed, epochs)
    # a fixed name: Hyperband assigns trials to brackets by a hash of the study name and the trial number
    sampler = TrialSeededSampler(lambda sd: make_strategy(strategy, sd, epochs).sampler, seed)  # as `edgekd search`
    study = optuna.create_study(study_name=f"{strategy}-seed{seed}", directions=list(s.directions),
                                sampler=sampler, pruner=s.pruner)
    evaluator = TableEvaluator(rows)
    best, spent = [], []

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        score = trial.user_attrs["reward"] if trial.state == optuna.trial.TrialState.COMPLETE else -np.inf
        best.append(max(best[-1] if best else -np.inf, score))
        spent.append(evaluator.epochs)

    run_trials(study, TrialObjective(cfg, table.space(), evaluator, TableLatency(rows), reward), trials, after)
    return {"best": best[:trials], "epochs": spent[:trials]}


def as_if_seeds(rows: dict[str, dict], seeds: int) -> dict[str, dict]:
    """What-if: the table as if each row were the mean of ``seeds`` training seeds (0: no training noise at all).

    A row's final accuracy is split into the main effects of its choices (least squares) and a residual that
    holds the choices' interactions and the training noise. The noise variance of one training, estimated from
    the spread between each row's seeds, is rescaled from the table's seed count to ``seeds``, the residuals are
    scaled to that variance, and every curve is shifted by its row's change.
    """
    ids = list(rows)
    by_seed = np.array([[curve[-1] for curve in rows[i]["acc_by_seed"].values()] for i in ids])
    if by_seed.shape[1] < 2:
        raise SystemExit("--what-if-seeds needs a table with at least two training seeds per row")
    keys = sorted(rows[ids[0]]["choices"])
    levels = {k: sorted({str(rows[i]["choices"][k]) for i in ids}) for k in keys}
    design = np.array([[1.0] + [float(str(rows[i]["choices"][k]) == v) for k in keys for v in levels[k][1:]]
                       for i in ids])
    final = by_seed.mean(axis=1)
    residual = final - design @ np.linalg.lstsq(design, final, rcond=None)[0]
    # the table's noise (one training's variance over its seed count), at most the whole residual
    noise = min(by_seed.var(axis=1, ddof=1).mean() / by_seed.shape[1], residual.var())
    scaled_noise = noise * by_seed.shape[1] / seeds if seeds else 0.0
    scale = np.sqrt((residual.var() - noise + scaled_noise) / residual.var())
    shift = dict(zip(ids, residual * (scale - 1), strict=True))
    return {i: rows[i] | {"acc": [a + shift[i] for a in rows[i]["acc"]]} for i in ids}


def expected_random_best(rewards: list[float], trials: int) -> float:
    """Expected best of ``trials`` uniform draws with replacement from ``rewards``: no seed noise at all."""
    r, n = np.sort(rewards), len(rewards)
    k = np.arange(1, n + 1)
    return float((r * ((k / n) ** trials - ((k - 1) / n) ** trials)).sum())


def first_reaching(curve: np.ndarray, level: float) -> int | None:
    hits = np.nonzero(curve >= level - 1e-12)[0]
    return int(hits[0]) + 1 if len(hits) else None


def seed_spread(curves: list[np.ndarray], level: float, trials: int) -> tuple[float, float, float, float]:
    """Median, 25% and 75% of the searches' own trials to reach ``level`` (one that never does counts as
    ``trials`` + 1), and the share of searches that reach it."""
    reached = [first_reaching(c, level) for c in curves]
    n = np.array([r if r is not None else trials + 1 for r in reached], dtype=float)
    return (float(np.median(n)), float(np.percentile(n, 25)), float(np.percentile(n, 75)),
            sum(r is not None for r in reached) / len(reached))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=sorted(TABLE_OF), default="digits", help="the task's table")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=100,
                        help="search seeds 0..N-1; with 10, random's 100-trial reward moved by 0.0005 between "
                             "seed sets, as much as the gaps between strategies, and with 60 a strategy's trials "
                             "to reach it by 10")
    parser.add_argument("--constraint", choices=("soft", "hard"), default="soft", help="MnasNet's constraint")
    parser.add_argument("--target-quantile", type=float, default=0.5,
                        help="the latency target T as a quantile of the table's latencies")
    parser.add_argument("--jobs", type=positive_int, default=1, help="processes the searches are spread over")
    parser.add_argument("--strategies", type=names_of(STRATEGIES), default=STRATEGIES, metavar="A,B",
                        help=f"the strategies to run [default: {','.join(STRATEGIES)}]; bohb's epoch ratio needs "
                             "random and bohb")
    parser.add_argument("--what-if-seeds", type=non_negative_int, metavar="K",
                        help="search a what-if table instead: as if every row were the mean of K training seeds "
                             "(0: no training noise), its training noise rescaled around the choices' main effects")
    args = parser.parse_args()
    from edgekd.pipeline.reward import Reward
    from edgekd.train.devices import set_threads

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    chosen = TABLE_OF[args.table]
    table = json.loads(chosen.path.read_text())
    rows = {r["arch_id"]: r for r in table["rows"]}
    if args.what_if_seeds is not None:
        rows = as_if_seeds(rows, args.what_if_seeds)
        print(f"WHAT-IF table: as if every row were the mean of {args.what_if_seeds or 'infinitely many'} training "
              f"seeds (the table has {len(table['training_seeds'])})")
    target = float(np.quantile([r["latency_ms"] for r in rows.values()], args.target_quantile))
    reward = Reward(target, "latency_ms", args.constraint)
    rewards = sorted(reward(r["acc"][-1], r) for r in rows.values())
    print(f"table: {len(rows)} architectures x {len(table['rows'][0]['acc'])} epochs, {args.constraint} target "
          f"T = {reward.target:.4f} ms; best reward in the table {rewards[-1]:.4f}, "
          f"median {statistics.median(rewards):.4f}")

    curves, epochs, per_seed = {}, {}, {}
    for strategy in args.strategies:
        start = time.perf_counter()
        search = functools.partial(run, chosen, strategy, trials=args.trials, rows=rows, reward=reward)
        # each process's torch (rl's policy) gets its share of the cores, not all of them
        with ProcessPoolExecutor(args.jobs, initializer=set_threads, initargs=(None, args.jobs)) as pool:
            results = list(pool.map(search, range(args.seeds)))
        curves[strategy] = np.mean([r["best"] for r in results], axis=0)
        epochs[strategy] = np.mean([r["epochs"] for r in results], axis=0)
        per_seed[strategy] = [np.asarray(r["best"]) for r in results]
        print(f"  {strategy}: {args.seeds} searches in {time.perf_counter() - start:.1f} s")

    level = expected_random_best(rewards, 100)
    reach = {s: first_reaching(curves[s], level) for s in args.strategies}
    last = min(100, args.trials) - 1
    ran = f" (its {args.seeds} runs here: {curves['random'][last]:.5f})" if "random" in curves else ""
    print(f"\nmean best reward over {args.seeds} seeds after N trials; random search's expected best after 100 "
          f"trials: {level:.5f}{ran}")
    marks = [c for c in CHECKPOINTS if c <= args.trials]
    print(f"{'strategy':10}" + "".join(f"{f'N={c}':>10}" for c in marks) + f"{'to reach':>10}{'epochs':>10}")
    print(f"{'E[random]':10}" + "".join(f"{expected_random_best(rewards, c):10.5f}" for c in marks))
    for s in args.strategies:
        spent = epochs[s][reach[s] - 1] if reach[s] else float("nan")
        print(f"{s:10}" + "".join(f"{curves[s][c - 1]:10.5f}" for c in marks)
              + f"{reach[s] if reach[s] else '-':>10}{spent:10.1f}")
    spread = {s: seed_spread(per_seed[s], level, args.trials) for s in args.strategies}
    print(f"\nthe spread over the {args.seeds} search seeds: each search's own trials to reach that reward")
    for s, (median, low, high, reached) in spread.items():
        print(f"{s:10} median {median:5.0f}  25-75%: {low:.0f}-{high:.0f}  reached in {args.trials} trials: "
              f"{reached:.0%}")
    ratio = None
    if {"random", "bohb"} <= set(args.strategies):
        full_budget_random = epochs["random"][last]  # what random spends for that reward
        ratio = epochs["bohb"][reach["bohb"] - 1] / full_budget_random if reach["bohb"] else None
        print(f"\nbohb epochs / random (full-budget) epochs to reach random's 100-trial best: "
              f"{'not reached' if ratio is None else f'{ratio:.3f}'}")
    print(json.dumps({"trials_to_random100": {s: reach[s] for s in args.strategies if s != "random"},
                      "bohb_epoch_ratio": ratio, "seeds": args.seeds, "table": args.table,
                      "what_if_seeds": args.what_if_seeds,
                      "per_seed_trials_median_iqr": {s: [round(v, 1) for v in f[:3]] for s, f in spread.items()}}))


if __name__ == "__main__":
    main()
