"""AKD's Table 5 in kind on the `glyphs` task: does a KD-guided search find students that distill better?

Two searches of --space (default: benchmarks/data/glyphs_space.yaml, eight layers of four or five operators) on
`glyphs:2` at 16x16 (47 characters, two renderings per font and character; the held-out split is fonts never seen
in training), with the same teacher, strategy, seed and latency target on this host's CPU: one rates candidates by
KD proxy training (AKD's KD-guided search), the other by hard-label proxy training (a conventional search), each
for --proxy-epochs. The defaults are sized so that candidates learn within the proxy: `mnas` at width 0.5 samples
networks of 10-40 MMACs that stay near chance for 8-12 epochs on glyphs, and a search that rates every candidate at
the floor ranks noise. Then `edgekd ablate`: the --top students of each search are each trained with hard labels
and with distillation, --seeds training seeds each, and scored on the held-out fonts. Printed: the "searched by x
trained by" table with 95% intervals, and the difference between the two searches' students under each training
with Welch's interval. Ends with one line of JSON: {"table", "intervals", "differences", "top", "seeds", "trials",
"proxy_epochs", "space", "space_width", "data"}.

    python benchmarks/kd_search.py [--data glyphs:2] [--space FILE|mnas] [--space-width 1] [--trials 12]
        [--proxy-epochs 20] [--jobs 2] [--top 1] [--seeds 2] [--epochs 20] [--teacher-from DIR] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from arguments import positive_float, positive_int, teacher_folder

SPACE = Path(__file__).parent / "data" / "glyphs_space.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="glyphs:2", help="the task (glyphs:N: N renderings per font and character)")
    parser.add_argument("--space", default=str(SPACE), help="a space preset or a layer-wise space file")
    parser.add_argument("--space-width", type=positive_float, default=1.0, help="channel width of the space")
    parser.add_argument("--trials", type=positive_int, default=12, help="trials of each search")
    parser.add_argument("--proxy-epochs", type=positive_int, default=20, help="proxy-training epochs of each candidate")
    parser.add_argument("--jobs", type=positive_int, default=1, help="processes of each search")
    parser.add_argument("--strategy", default="rl", help="search strategy of both searches (AKD's is RL)")
    parser.add_argument("--top", type=positive_int, default=1, help="students taken from each search")
    parser.add_argument("--seeds", type=positive_int, default=2, help="training seeds of each student and training")
    parser.add_argument("--epochs", type=positive_int, default=20, help="training epochs of each ablation student")
    parser.add_argument("--teacher-from", type=teacher_folder, help="a teacher/ folder of a run on the same --data "
                        "at 16 px with the same seed (benchmarks/glyphs.py's): used instead of training it again")
    parser.add_argument("--root", type=Path, help="runs folder (default: a new temporary one); reruns resume")
    args = parser.parse_args()

    from edgekd.core.config import RunConfig, TrainConfig
    from edgekd.pipeline.ablate import ablate
    from edgekd.pipeline.opening import open_run
    from edgekd.pipeline.run import run_search

    root = args.root or Path(tempfile.mkdtemp(prefix="edgekd-kd-search-"))
    proxy = TrainConfig(epochs=args.proxy_epochs, batch_size=64, lr=1e-2).model_dump()
    runs = {}
    if args.teacher_from and not (root / "search-kd" / "teacher").exists():
        shutil.copytree(args.teacher_from, root / "search-kd" / "teacher")
    for training in ("kd", "ce"):
        cfg = RunConfig.model_validate({
            "name": f"search-{training}", "data": args.data, "resolution": 16, "mini_val_fraction": 0.3,
            "distill": TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-2).model_dump(),
            "search": {"space": args.space, "space_width": args.space_width, "strategy": args.strategy,
                       "trials": args.trials, "jobs": args.jobs, "proxy": proxy, "reward_training": training}})
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
        "top": args.top, "seeds": args.seeds, "trials": args.trials, "proxy_epochs": args.proxy_epochs,
        "space": Path(args.space).name, "space_width": args.space_width, "data": args.data,
    }))


if __name__ == "__main__":
    main()
