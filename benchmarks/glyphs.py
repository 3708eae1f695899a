"""How hard the `glyphs` task is: the teacher against small and large random students, on fonts never seen.

On `glyphs:2` at 16x16 (the setting of the glyphs benchmarks: 47 characters, 2 renderings per font and
character, the held-out split a quarter of the installed fonts) the default teacher is trained, and --students
small and --students large random students of the `mnas` space (width 0.5) are distilled from it (--epochs,
AdamW at 0.01) with --seeds training seeds each and scored on the held-out fonts. "Small" and "large" are the
lowest and highest MACs of 50 uniform samples. The same students are also trained on `digits` (16x16), which is
what the harder task is for: there they all land within a few points of each other. Ends with one line of
JSON: {"fonts", "teacher", "small", "large", "digits_small", "digits_large"} (held-out top-1, mean over students
and seeds, with the spread, and `train_mean`: the accuracy on the training images over the last epoch, which
tells a student that overfits the training fonts from one that fails to train). --root DIR keeps the teachers
and each student's result (`students-{epochs}ep.json`), so that a rerun resumes where it stopped; a large
student takes about half an hour on one core.

    python benchmarks/glyphs.py [--students 3] [--seeds 2] [--epochs 12] [--teacher-from DIR] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
from pathlib import Path

from arguments import positive_int, teacher_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=positive_int, default=3, help="small and as many large students")
    parser.add_argument("--seeds", type=positive_int, default=2)
    parser.add_argument("--epochs", type=positive_int, default=12)
    parser.add_argument("--teacher-from", type=teacher_folder, help="a teacher/ folder of a run on glyphs:2 at 16 px "
                        "with the same seed (benchmarks/kd_search.py's): used instead of training it again")
    parser.add_argument("--root", type=Path, help="runs folder (default: a new temporary one); reruns resume")
    args = parser.parse_args()

    import torch

    from edgekd.core.arch import build
    from edgekd.core.config import RunConfig, TrainConfig, read_json, write_json
    from edgekd.data.glyphs import fonts_fingerprint, text_fonts
    from edgekd.latency_models.flops import spec_macs_params
    from edgekd.pipeline.opening import open_run
    from edgekd.train import evaluate, train

    root = args.root or Path(tempfile.mkdtemp(prefix="edgekd-glyphs-"))
    saved = root / f"students-{args.epochs}ep.json"
    done = read_json(saved) if saved.is_file() else {}
    fonts = text_fonts()
    print(f"{len(fonts)} text fonts (list {fonts_fingerprint(fonts)}): {', '.join(f.name for f in fonts)}")
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-2)
    figures: dict[str, object] = {"fonts": fonts_fingerprint(fonts), "n_fonts": len(fonts)}
    for task, data in (("glyphs", "glyphs:2"), ("digits", "digits")):
        cfg = RunConfig(name=task, data=data, resolution=16, mini_val_fraction=0.3,
                        search={"space": "mnas", "space_width": 0.5})
        if task == "glyphs" and args.teacher_from and not (root / task / "teacher").exists():
            shutil.copytree(args.teacher_from, root / task / "teacher")
        ctx = open_run(cfg, root)
        print(f"{task}: {len(ctx.data.labels)} images, {len(ctx.data.index('val'))} held out; teacher held-out "
              f"top-1 {ctx.teacher.val_acc:.4f}")
        pool = sorted((ctx.space.decode(ctx.space.sample(random.Random(i))) for i in range(50)),
                      key=lambda s: spec_macs_params(s)[0])
        for size, students in (("small", pool[: args.students]), ("large", pool[-args.students:])):
            accs, train_accs = [], []
            for spec in students:
                for seed in range(args.seeds):
                    trained = f"{task}/{spec.id}/{seed}"
                    # absent, or kept by an older run without the training accuracy: trained (again)
                    if not isinstance(done.get(trained), dict):
                        torch.manual_seed(seed)
                        model = build(spec)
                        history = train(model, ctx.data, train_cfg, cfg.kd, ctx.teacher_signal, seed=seed,
                                        evaluate=lambda m, d=ctx.data: evaluate(m, d, "val"))
                        done[trained] = {"held_out": history[-1].eval_acc, "train": history[-1].train_acc}
                        write_json(saved, done)
                    accs.append(done[trained]["held_out"])
                    train_accs.append(done[trained]["train"])
                    print(f"  {size} {spec.id} ({spec_macs_params(spec)[0]:.2f} MMACs) seed {seed}: held-out top-1 "
                          f"{accs[-1]:.4f} (training images, last epoch: {train_accs[-1]:.4f})")
            key = size if task == "glyphs" else f"digits_{size}"
            figures[key] = {"mean": round(statistics.mean(accs), 4), "min": round(min(accs), 4),
                            "max": round(max(accs), 4), "train_mean": round(statistics.mean(train_accs), 4),
                            "mmacs": [round(spec_macs_params(s)[0], 2) for s in students]}
        if task == "glyphs":
            figures["teacher"] = round(ctx.teacher.val_acc, 4)
        else:
            figures["digits_teacher"] = round(ctx.teacher.val_acc, 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
