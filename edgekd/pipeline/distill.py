"""Final distillation of the chosen student from the teacher, on the full train split."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.core.arch import ArchSpec, build
from edgekd.core.config import KDConfig, read_json, write_json
from edgekd.core.errors import ConfigError, RunStateError
from edgekd.core.ui import progress
from edgekd.latency_models.flops import count_macs_params
from edgekd.pipeline.context import RunContext
from edgekd.pipeline.teacher import save_checkpoint
from edgekd.train import EpochStats, evaluate, saved_epochs, train
from edgekd.train.devices import to_cpu
from edgekd.train.state import read_run_file


@dataclass
class Student:
    model: nn.Module
    arch: ArchSpec
    metrics: dict[str, Any]


def distill(ctx: RunContext, arch: ArchSpec, kd: KDConfig, out: Path | None = None) -> Student:
    """Train ``arch`` with the KD settings ``kd`` for ``cfg.distill.epochs`` (resumable per epoch, and inside long
    epochs); write ``out`` (default student/). Under torchrun every rank trains its share and rank 0 writes."""
    cfg, rt = ctx.cfg, ctx.runtime
    out = out or ctx.stage_dir("student")
    state = out / "train_state.pt"
    if (out / "arch.json").is_file() and ArchSpec.from_json((out / "arch.json").read_text()) != arch:
        raise RunStateError(f"{out} holds a different student; use another --name to distill another architecture")
    if rt.dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "arch.json").write_text(arch.to_json())
    torch.manual_seed(cfg.seed)
    model = build(arch)
    with progress(f"distill ({rt.device.device}, {rt.device.precision})", cfg.distill.epochs,
                  completed=saved_epochs(state)) as bar:
        history = train(
            model, ctx.data, cfg.distill, kd, ctx.teacher_signal, split="train", seed=cfg.seed, checkpoint=state,
            evaluate=lambda m: evaluate(m, ctx.data, "val", rt.dist, rt.workers), runtime=rt,
            on_epoch=lambda s: bar(info=f"loss {s.loss:.3f} held-out acc {s.eval_acc:.3f} "
                                        f"{s.images_per_s:.0f} img/s"),
        )
    to_cpu(model).eval()
    mmacs, mparams = count_macs_params(model, arch.input_shape)
    metrics = {
        "val_acc": history[-1].eval_acc, "teacher_val_acc": ctx.teacher.val_acc, "epochs": len(history),
        "kd": kd.model_dump(), "mmacs": mmacs, "mparams": mparams, "arch_id": arch.id,
        "train_device": str(rt.device.device), "precision": rt.device.precision, "processes": rt.dist.world,
        "augment": cfg.augment,
    }
    if rt.dist.main:
        save_checkpoint(out / "student.pt", model, arch)
        write_json(out / "metrics.json", metrics)
        write_json(out / "curves.json", [asdict(h) for h in history])
        _plot_curves(history, ctx.teacher.val_acc, out / "curves.png")
    return Student(model, arch, metrics)


def distill_family(ctx: RunContext, student: Student, kd: KDConfig, samples: int) -> dict[str, Any]:
    """AutoKD's protocol: ``samples`` students drawn from the family of ``student`` (seeds 0..samples-1, seed 0
    being ``student`` itself), each distilled (under student/family/); writes student/family.json with every
    sample's held-out accuracy, their mean and standard deviation."""
    graph = student.arch.graph
    if graph is None or not graph.family:
        raise ConfigError("--family-samples applies to students of the family space (--space family)")
    space = ctx.space
    rows = [{"seed": graph.seed, "arch_id": student.arch.id, "val_acc": student.metrics["val_acc"],
             "mmacs": student.metrics["mmacs"]}]
    for seed in range(samples):
        if seed == graph.seed:
            continue
        arch = space.member(dict(graph.family), seed)
        m = distill(ctx, arch, kd, ctx.stage_dir("student") / "family" / f"seed-{seed}").metrics
        rows.append({"seed": seed, "arch_id": arch.id, "val_acc": m["val_acc"], "mmacs": m["mmacs"]})
    accs = np.array([r["val_acc"] for r in rows])
    report = {"family": dict(graph.family), "samples": rows, "val_acc_mean": float(accs.mean()),
              "val_acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0}
    if ctx.runtime.dist.main:
        write_json(ctx.stage_dir("student") / "family.json", report)
    return report


def load_student(student_dir: Path) -> Student:
    """The distilled student of a run directory."""
    path = student_dir / "student.pt"
    if not path.is_file():
        raise RunStateError(f"no distilled student at {path}; run `edgekd distill` first")
    state = read_run_file(path, "delete the student/ folder and run `edgekd distill` again")
    arch = ArchSpec.from_dict(state["arch"])
    model = build(arch)
    model.load_state_dict(state["state_dict"])
    return Student(model.eval(), arch, read_json(student_dir / "metrics.json"))


def read_curves(student_dir: Path) -> list[EpochStats]:
    """The distillation's per-epoch statistics (curves.json)."""
    return [EpochStats(**epoch) for epoch in read_json(student_dir / "curves.json")]


def _plot_curves(history: list[EpochStats], teacher_acc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h.loss for h in history])
    ax1.set(xlabel="epoch", ylabel="KD loss")
    ax2.plot(epochs, [h.train_acc for h in history], label="train")
    ax2.plot(epochs, [h.eval_acc for h in history], label="held-out")
    ax2.axhline(teacher_acc, ls="--", color="grey", label="teacher")
    ax2.set(xlabel="epoch", ylabel="top-1 accuracy")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
