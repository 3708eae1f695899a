"""Teachers: trained on the spot (the embedded default), torchvision models with local weights, or checkpoints.

A teacher spec is ``KIND[:ARG]`` for a registered teacher kind: ``train``, ``torchvision:NAME`` (weights from a
local file, never downloaded), ``file:PATH``; any other spec is a path to an edgekd checkpoint (``{"arch":
ArchSpec dict, "state_dict": ...}``, as ``edgekd distill`` writes) or a TorchScript file. Without data
augmentation the teacher's logits for every image are fixed: they are computed once and stored with it, and KD
training looks them up instead of running the teacher each step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.config import RunConfig, read_json, write_json
from edgekd.core.errors import DataError
from edgekd.core.registry import Registry
from edgekd.core.ui import console, progress
from edgekd.data import Data
from edgekd.train import LOCAL, Runtime, evaluate, predict_logits, train
from edgekd.train.devices import to_cpu
from edgekd.train.state import read_run_file


@dataclass
class Teacher:
    model: nn.Module
    source: str
    val_acc: float
    logits: Tensor | None
    """Logits for every image of the data set, indexed by dataset index (None with augmentation: the teacher
    then runs on every batch)."""
    arch: ArchSpec | None = None


def default_teacher_arch(data: Data) -> ArchSpec:
    """A plain, wide conv net (stem 32, 64-128-256 channels, two downsamplings): strong and slow on purpose."""
    c, res, _ = data.input_shape
    widths = [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]
    blocks = tuple(
        BlockSpec(op="conv", kernel=3, out_channels=w, stride=s, residual=s == 1 and i % 2 == 1, stage=i // 2)
        for i, (w, s) in enumerate(widths)
    )
    return ArchSpec(resolution=res, in_channels=c, num_classes=data.num_classes, stem_channels=32, blocks=blocks,
                    head_channels=512, stem_stride=2 if res >= 64 else 1, name="teacher")


TeacherLoader = Callable[[str, RunConfig, Data, Path, Runtime], tuple[nn.Module, "ArchSpec | None"]]
"""(the spec's ARG, the run's config, data, the teacher folder, the runtime) -> (model, its ArchSpec if it has
one). The model may come back on the runtime's device; it is moved to the CPU after."""
TEACHERS: Registry[TeacherLoader] = Registry("teachers", "teacher kind", error=DataError)


def teacher_loader(source: str) -> tuple[TeacherLoader, str]:
    """The loader of a teacher spec and its argument (a spec of no registered kind is a file path)."""
    kind, _, arg = source.partition(":")
    return (TEACHERS.get(kind), arg) if kind in TEACHERS else (TEACHERS.get("file"), source)


@TEACHERS.register("train")
def _trained_teacher(arg: str, cfg: RunConfig, data: Data, out_dir: Path, runtime: Runtime
                     ) -> tuple[nn.Module, ArchSpec]:
    """edgekd's default teacher architecture, trained here on the run's data (once; then loaded)."""
    arch = default_teacher_arch(data)
    torch.manual_seed(cfg.seed)  # the initial weights: the same seed trains the same teacher
    model = build(arch)
    weights = out_dir / "teacher.pt"
    if weights.is_file():
        load_weights(model, _load_file(weights)["state_dict"], str(weights))
    else:
        _train_teacher(model, cfg, data, out_dir, runtime)
        if runtime.dist.main:
            save_checkpoint(weights, to_cpu(model), arch)
    return model, arch


@TEACHERS.register("torchvision")
def _torchvision_teacher(name: str, cfg: RunConfig, data: Data, out_dir: Path, runtime: Runtime
                         ) -> tuple[nn.Module, None]:
    """A torchvision classifier by name, its weights from ``--teacher-weights``."""
    import torchvision

    weights = cfg.teacher_weights
    if weights is None:
        raise DataError(f"torchvision:{name} needs --teacher-weights PATH (a local state_dict; nothing is downloaded)")
    if data.input_shape[0] != 3:
        raise DataError(f"torchvision:{name} takes RGB input, but {data.name} has {data.input_shape[0]} channel(s)")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=data.num_classes)
    except ValueError as exc:
        raise DataError(f"unknown torchvision model {name!r}: {exc}") from exc
    load_weights(model, _load_file(Path(weights)), weights)
    return model, None


def _load_file(path: Path):
    if not path.is_file():
        raise DataError(f"teacher file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read teacher file {path} ({type(exc).__name__}: {exc}); expected TorchScript, "
                        "an edgekd checkpoint or a state_dict") from exc


def load_weights(model: nn.Module, state: dict, where: str) -> None:
    """Load ``state`` strictly; a mismatch is a DataError quoting torch's first concrete complaint."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise DataError(f"the weights in {where} do not match the architecture: {detail[:300]}") from exc


@TEACHERS.register("file")
def _file_teacher(arg: str, cfg: RunConfig, data: Data, out_dir: Path, runtime: Runtime
                  ) -> tuple[nn.Module, ArchSpec | None]:
    """A TorchScript file or an edgekd checkpoint."""
    path = Path(arg).expanduser()
    if not path.is_file():
        raise DataError(f"teacher checkpoint not found: {path} (expected train, torchvision:NAME or a file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, yet what many teachers are
            return torch.jit.load(str(path), map_location="cpu"), None
    except RuntimeError:
        pass
    state = _load_file(path)
    if not isinstance(state, dict) or "arch" not in state or "state_dict" not in state:
        raise DataError(f"{path} is neither TorchScript nor an edgekd checkpoint with 'arch' and 'state_dict'")
    arch = ArchSpec.from_dict(state["arch"])
    model = build(arch)
    load_weights(model, state["state_dict"], str(path))
    return model, arch


def save_checkpoint(path: Path, model: nn.Module, arch: ArchSpec) -> None:
    """An edgekd checkpoint: the ArchSpec plus the weights (loadable with weights_only=True)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"arch": arch.to_dict(), "state_dict": model.state_dict()}, tmp)
    tmp.replace(path)


def prepare_teacher(cfg: RunConfig, data: Data, out_dir: Path, runtime: Runtime = LOCAL) -> Teacher:
    """Load or build the teacher of ``cfg``, report its held-out accuracy, and store it under ``out_dir``.

    Its logits for every image are cached only without augmentation (with it, the teacher runs on each batch).
    The model is returned on the CPU; training and scoring it run on the runtime's device."""
    metrics_path, logits_path = out_dir / "metrics.json", out_dir / "logits.pt"
    source, cached = cfg.teacher, cfg.augment == "none"
    load, arg = teacher_loader(source)
    model, arch = load(arg, cfg, data, out_dir, runtime)
    to_cpu(model).eval()
    if metrics_path.is_file() and read_json(metrics_path).get("source") == source and (
            logits_path.is_file() or not cached):
        logits = read_run_file(logits_path, "delete it to compute the logits again") if cached else None
        return Teacher(model, source, read_json(metrics_path)["val_acc"], logits, arch)
    _check_output(model, data, source)
    runtime.device.prepare(model)
    logits = predict_logits(model, data, "all", workers=runtime.workers) if cached else None
    val_acc = evaluate(model, data, "val", runtime.dist, runtime.workers)
    to_cpu(model)
    if runtime.dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if logits is not None:
            torch.save(logits, logits_path)
        write_json(metrics_path, {"source": source, "val_acc": val_acc, "arch_id": arch.id if arch else None})
    return Teacher(model, source, val_acc, logits, arch)


def _check_output(model: nn.Module, data: Data, source: str) -> None:
    x, _, _ = next(data.batches("val", 2))
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]  # TorchScript puts its code traceback before the error
        raise DataError(f"teacher {source} cannot take input of shape {tuple(x.shape)}: {reason}") from exc
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise DataError(f"teacher {source} outputs shape {tuple(out.shape)}; {data.num_classes} classes needed")


def _train_teacher(model: nn.Module, cfg: RunConfig, data: Data, out_dir: Path, runtime: Runtime) -> None:
    console.print(f"training the teacher on {data.name} ({cfg.teacher_train.epochs} epochs, "
                  f"{runtime.device.device}, {runtime.device.precision})")
    with progress("teacher", cfg.teacher_train.epochs) as update:
        train(
            model, data, cfg.teacher_train, seed=cfg.seed, checkpoint=out_dir / "train_state.pt", runtime=runtime,
            on_epoch=lambda s: update(info=f"loss {s.loss:.3f} acc {s.train_acc:.3f}"),
        )
