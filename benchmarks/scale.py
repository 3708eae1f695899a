"""Training at scale on generated ImageFolder trees: memory, loader speed, and two processes against one.

    python benchmarks/scale.py [--sizes 5000 40000] [--resolution 96] [--workers 2] [--out DIR]

1. Draws trees of 10 classes of procedurally drawn JPEGs (a shape per class: circle, square, triangle, ...,
   random colour, size, place and background noise), once per size, under --out.
2. Peak memory: `edgekd distill` (a fixed student, a fixed edgekd-checkpoint teacher, 1 epoch, --workers) on each
   tree, in its own process: the peak resident set (VmHWM) of the process, and the peak proportional set size
   (PSS) of the process with its loader workers, sampled every 0.2 s (PSS counts a page shared by a forked worker
   once). Memory must not grow with the number of images: the ratio of the largest tree's peak to the smallest's.
3. Loader speed: images/s the DataLoader delivers with --workers processes (decode, resize, augment) against
   the images/s the trainer consumed in step 2.
4. Data parallel on the CPU: the same distillation (teacher trained on the spot, 32 px) in one process and in two
   under torchrun (gloo, one thread each, same global batch); held-out accuracy of each.

Ends with one line of JSON: {"rss_ratio", "rss_gib", "ddp_acc_diff", "loader_over_train"}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "hbar", "vbar", "x", "dots")


def _draw(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image, ImageDraw

    root, cls, index, res = args
    rng = np.random.default_rng(cls * 1_000_003 + index)
    bg = rng.integers(0, 120, 3)
    img = Image.fromarray(np.clip(bg + rng.normal(0, 25, (res, res, 3)), 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    size = rng.uniform(0.3, 0.6) * res
    cx, cy = rng.uniform(size / 2, res - size / 2, 2)
    x0, y0, x1, y1 = cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2
    color = tuple(int(c) for c in rng.integers(130, 256, 3))
    w = max(2, int(size / 6))
    shape = SHAPES[cls]
    if shape == "circle":
        d.ellipse((x0, y0, x1, y1), fill=color)
    elif shape == "square":
        d.rectangle((x0, y0, x1, y1), fill=color)
    elif shape == "triangle":
        d.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "cross":
        d.rectangle((cx - w, y0, cx + w, y1), fill=color)
        d.rectangle((x0, cy - w, x1, cy + w), fill=color)
    elif shape == "ring":
        d.ellipse((x0, y0, x1, y1), outline=color, width=w)
    elif shape == "diamond":
        d.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif shape == "hbar":
        d.rectangle((x0, cy - w, x1, cy + w), fill=color)
    elif shape == "vbar":
        d.rectangle((cx - w, y0, cx + w, y1), fill=color)
    elif shape == "x":
        d.line((x0, y0, x1, y1), fill=color, width=w)
        d.line((x0, y1, x1, y0), fill=color, width=w)
    else:
        r = size / 5
        for px in (x0 + r, x1 - r):
            d.ellipse((px - r, cy - r, px + r, cy + r), fill=color)
    img.save(root / SHAPES[cls] / f"{index:06d}.jpg", quality=90)


def make_tree(root: Path, images: int, res: int) -> Path:
    """``images`` JPEGs in 10 class folders under ``root`` (kept: a second call finds them drawn)."""
    done = root / ".complete"
    if done.is_file():
        return root
    for shape in SHAPES:
        (root / shape).mkdir(parents=True, exist_ok=True)
    jobs = [(root, i % len(SHAPES), i, res) for i in range(images)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        pool.map(_draw, jobs, chunksize=256)
    done.write_text(str(images))
    return root


def _field_kib(path: str, name: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmHWM of ``pid``, the proportional set size of ``pid`` and its child processes), in KiB. PSS shares each
    page among the processes that map it, so loader workers forked from the trainer are not counted twice."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    pss = sum(_field_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in (pid, *kids))
    return _field_kib(f"/proc/{pid}/status", "VmHWM"), pss


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``cmd``; returns (wall s, peak RSS of the main process GiB, peak PSS of main + workers GiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    main_peak = total_peak = 0
    while proc.poll() is None:
        main, total = _memory_kib(proc.pid)
        main_peak, total_peak = max(main_peak, main), max(total_peak, total)
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}")
    return time.perf_counter() - start, main_peak / 2**20, total_peak / 2**20


def student_arch(res: int, channels: int = 3, classes: int = 10):
    from edgekd.core.arch import ArchSpec, BlockSpec

    blocks = (BlockSpec(op="conv", kernel=3, out_channels=16, stride=2),
              BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=24, stride=2),
              BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=32, stride=2),
              BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=48, stride=2))
    return ArchSpec(resolution=res, in_channels=channels, num_classes=classes, stem_channels=16, blocks=blocks,
                    head_channels=64, stem_stride=2 if res >= 64 else 1, name="scale-student")


def prepare_run(runs: Path, name: str, overrides: dict) -> Path:
    """A run directory whose search picked ``student_arch``: `edgekd distill` trains it."""
    from edgekd.core.config import resolve_config, write_json

    cfg = resolve_config(runs / name, {"name": name, **overrides})
    arch = student_arch(cfg.resolution or 32)
    write_json(runs / name / "search" / "best.json", {"arch": arch.to_dict(), "kd": cfg.kd.model_dump()})
    return runs / name


def fixed_teacher(path: Path, res: int) -> Path:
    """An edgekd-checkpoint teacher (a wider network of the student's kind, seeded initial weights): the memory
    measurement needs its cost per image, not its accuracy."""
    import torch

    from edgekd.core.arch import build
    from edgekd.pipeline.teacher import save_checkpoint

    arch = student_arch(res)
    arch = type(arch)(**{**arch.__dict__, "stem_channels": 32, "head_channels": 128, "name": "scale-teacher"})
    torch.manual_seed(0)
    save_checkpoint(path, build(arch), arch)
    return path


def loader_images_per_s(tree: Path, res: int, workers: int, batch: int, augment: str, seconds: float = 20) -> float:
    from edgekd.data import load_data

    data = load_data(f"imagefolder:{tree}", resolution=res)
    seen, start = 0, time.perf_counter()
    for epoch in range(100):
        for x, _, _ in data.loader("train", batch, shuffle=True, epoch=epoch, augment=augment, workers=workers):
            seen += len(x)
            if time.perf_counter() - start > seconds:
                return seen / (time.perf_counter() - start)
    return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=(5000, 40000))
    ap.add_argument("--resolution", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ddp-epochs", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "edgekd-scale")
    args = ap.parse_args()
    res, out = args.resolution, args.out
    runs = out / f"runs-{time.strftime('%Y%m%d-%H%M%S')}"
    env = {**os.environ, "EDGEKD_CACHE": str(runs / "cache"), "EDGEKD_QUIET": "1"}
    teacher = fixed_teacher(out / f"teacher-{res}.pt", res)
    rss, throughput = {}, {}
    for n in args.sizes:
        t = time.perf_counter()
        tree = make_tree(out / f"tree-{n}-{res}", n, res)
        print(f"tree of {n} images at {res} px: {time.perf_counter() - t:.0f} s", flush=True)
        name = f"rss-{n}"
        prepare_run(runs, name, {"data": f"imagefolder:{tree}", "resolution": res, "teacher": str(teacher),
                                 "distill.epochs": 1, "distill.batch_size": args.batch_size,
                                 "runtime.workers": args.workers, "runtime.train_device": "cpu"})
        wall, main_gib, total_gib = run_measured(
            [sys.executable, "-m", "edgekd", "distill", "--name", name, "--runs-dir", str(runs)], env)
        curve = json.loads((runs / name / "student" / "curves.json").read_text())[0]
        rss[n], throughput[n] = (main_gib, total_gib), curve["images"] / curve["seconds"]
        print(f"edgekd distill, {n} images: {wall:.0f} s, peak RSS of the process {main_gib:.3f} GiB, peak PSS "
              f"with its loader workers {total_gib:.3f} GiB; the trainer consumed {throughput[n]:.0f} images/s",
              flush=True)
    small, large = args.sizes
    big_tree = out / f"tree-{large}-{res}"
    loader = loader_images_per_s(big_tree, res, args.workers, args.batch_size, "none")
    loader_aug = loader_images_per_s(big_tree, res, args.workers, args.batch_size, "standard")
    print(f"loader, {args.workers} workers: {loader:.0f} images/s (with standard augmentation {loader_aug:.0f}); "
          f"the trainer consumed {throughput[large]:.0f} images/s", flush=True)

    ddp_tree = make_tree(out / f"tree-{small}-{res}", small, res)
    accs = {}
    for procs in (1, 2):
        name = f"ddp-{procs}"
        prepare_run(runs, name, {"data": f"imagefolder:{ddp_tree}", "resolution": 32, "teacher_train.epochs": 4,
                                 "distill.epochs": args.ddp_epochs, "distill.batch_size": args.batch_size,
                                 "runtime.workers": 0, "runtime.train_device": "cpu", "runtime.threads": 1})
        if procs == 2:  # the same teacher: trained once, by the one-process run
            (runs / name / "teacher").symlink_to(runs / "ddp-1" / "teacher", target_is_directory=True)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                   "edgekd", "distill", "--name", name, "--runs-dir", str(runs)]
        else:
            cmd = [sys.executable, "-m", "edgekd", "distill", "--name", name, "--runs-dir", str(runs), "--threads", "2"]
        wall, _, _ = run_measured(cmd, {**env, "OMP_NUM_THREADS": "1"})
        accs[procs] = json.loads((runs / name / "student" / "metrics.json").read_text())["val_acc"]
        print(f"distill at 32 px on {small} images, {procs} process(es): held-out top-1 {accs[procs]:.4f}, "
              f"{wall:.0f} s", flush=True)
    peak = {n: max(r) for n, r in rss.items()}  # the larger of the process's RSS and the tree's PSS
    result = {"rss_ratio": round(peak[large] / peak[small], 3), "rss_gib": round(peak[large], 3),
              "ddp_acc_diff": round(accs[2] - accs[1], 4), "loader_over_train": round(loader / throughput[large], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
