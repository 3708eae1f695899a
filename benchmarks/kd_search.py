"""AKD's Table 5 in kind on the `glyphs` task: does a KD-guided search find students that distill better?

Two searches of the `mnas` space (width 0.5) on `glyphs:1` at 16x16 (47 characters, one rendering per font and
character; the held-out split is fonts never seen in training), with the same teacher, strategy, seed and
latency target on this host's CPU: one rates candidates by KD proxy training (AKD's KD-guided search), the
other by hard-label proxy training (a conventional search). Then `edgekd ablate`: the --top students of each
search are each trained with hard labels and with distillation, --seeds training seeds each, and scored on the
held-out fonts. Printed: the "searched by x trained by" table with 95% intervals, and the difference between
the two searches' students under each training with Welch's interval. Ends with one line of JSON: {"table",
"intervals", "differences", "top", "seeds", "trials"}.

    python benchmarks/kd_search.py [--data glyphs:1] [--trials 8] [--top 1] [--seeds 2] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="glyphs:1", help="the task (glyphs:N: N renderings per font and character)")
    parser.add_argument("--trials", type=int, default=8, help="trials of each search")
    parser.add_argument("--strategy", default="rl", help="search strategy of both searches (AKD's is RL)")
    parser.add_argument("--top", type=int, default=1, help="students taken from each search")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds of each student and training")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each ablation student")
    parser.add_argument("--root", type=Path, help="runs folder (default: a new temporary one); reruns resume")
    args = parser.parse_args()

    from edgekd.core.config import RunConfig, TrainConfig
    from edgekd.pipeline.ablate import ablate
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.run import run_search

    root = args.root or Path(tempfile.mkdtemp(prefix="edgekd-kd-search-"))
    proxy = TrainConfig(epochs=8, batch_size=64, lr=1e-2).model_dump()
    runs = {}
    for training in ("kd", "ce"):
        cfg = RunConfig.model_validate({
            "name": f"search-{training}", "data": args.data, "resolution": 16, "mini_val_fraction": 0.3,
            "distill": TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-2).model_dump(),
            "search": {"space": "mnas", "space_width": 0.5, "strategy": args.strategy, "trials": args.trials,
                       "proxy": proxy, "reward_training": training}})
        if runs and not (root / cfg.name / "teacher").exists():  # the same teacher, trained once
            shutil.copytree(next(iter(runs.values())) / "teacher", root / cfg.name / "teacher")
        ctx = open_run(cfg, root)
        print(f"{cfg.name}: teacher held-out acc {ctx.teacher.val_acc:.4f}; searching ({args.trials} trials)")
        result = run_search(ctx)
        print(f"  best reward {result.best['reward']:.4f}, mini-val acc {result.best['acc']:.4f}, "
              f"{result.best['latency_ms']:.4f} ms")
        runs[training] = ctx.run_dir
    out = root / "ablate-search-kd-search-ce"
    out.mkdir(exist_ok=True)
    ablate([runs["kd"], runs["ce"]], out, args.top, args.epochs, args.seeds)
    print((out / "ablation.md").read_text())
    saved = json.loads((out / "ablation.json").read_text())

    def pct(x):
        return None if x is None else round(100 * x, 2) if isinstance(x, float) else [pct(v) for v in x]

    print(json.dumps({
        "table": {row: {t: pct(v) for t, v in cells.items()} for row, cells in saved["table"].items()},
        "intervals": {row: {t: pct(v) for t, v in cells.items()} for row, cells in saved["intervals"].items()},
        "differences": {t: {"points": pct(d["difference"]), "interval": pct(d["interval"]), "p": d.get("p_value")}
                        for t, d in saved["differences"].items()},
        "top": args.top, "seeds": args.seeds, "trials": args.trials,
    }))


if __name__ == "__main__":
    main()
