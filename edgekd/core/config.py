"""Run configuration (pydantic): defaults live here, the resolved config is saved with every run."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.core.errors import ConfigError, RunStateError

Fraction = Annotated[float, Field(gt=0, lt=1)]
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RUN_NAME_RULE = ("a run name is one folder name: 1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
                 "or digit")


MASK = "***"


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for run files and messages; secrets stay out of both)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def check_run_name(name: str) -> str:
    """``name`` if it is a valid run name (it cannot leave or nest in the runs directory), else ConfigError."""
    if not RUN_NAME.fullmatch(name):
        raise ConfigError(f"invalid run name {name!r}: {RUN_NAME_RULE}")
    return name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KDConfig(_Model):
    """Hinton's loss (1-alpha)·CE + alpha·tau²·KL; defaults from AKD (tau 1, alpha 0.9)."""

    tau: Annotated[float, Field(gt=0, le=100)] = 1.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.9


class TrainConfig(_Model):
    """One training run: AdamW, linear warm-up for ``warmup_epochs`` then cosine decay."""

    epochs: Annotated[int, Field(ge=1, le=100_000)]
    lr: Annotated[float, Field(gt=0, le=10)] = 3e-3
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 64
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 1e-4
    warmup_epochs: Annotated[int, Field(ge=0, le=100_000)] = 1


class PAMKDConfig(_Model):
    """PAMKD's group of learners (``edgekd.evaluators.pamkd``)."""

    learners: Annotated[int, Field(ge=1, le=32)] = 3
    """K: differentiable supernets searching together, each with its V and W weights (1: a single learner
    searching alone, W trained by cross-entropy only: the paper's baseline)."""
    scrutiny: bool = True
    """Performance scrutiny: V_j teaches W_k only if V_j is better on mini-val; False: plain mutual KD."""
    kd_from_epoch: Annotated[int, Field(ge=0, le=100_000)] = 3
    """Epochs of cross-entropy only before the learners teach each other (as EnNAS's ensemble teacher waits)."""
    grs_weight: Annotated[float, Field(ge=0, le=1000)] = 1.0
    """λ_GRS: weight of the group-wise relative similarity loss beside the KL term."""
    group_size: Annotated[int, Field(ge=4, le=1024)] = 4
    """Examples per GRS group (the seed: at least 4)."""
    grs_gamma: Annotated[float, Field(gt=0, le=100)] = 0.1
    """Temperature of GRS's relative-similarity softmax."""
    cost_weight: Annotated[float, Field(ge=0, le=1000)] = 1.0
    """λ_cost: weight of max(0, log(E[cost] / target)) in the operator logits' loss."""
    relaxation: Literal["gdas", "darts"] = "gdas"
    """gdas: one operator per slot drawn by hard Gumbel-softmax per step; darts: the softmax mixture of all."""
    temperature: tuple[Annotated[float, Field(gt=0, le=100)], Annotated[float, Field(gt=0, le=100)]] = (5.0, 0.5)
    """gdas: Gumbel-softmax temperature at the first and the last epoch (annealed geometrically between)."""


class OneShotConfig(_Model):
    """The one-shot evaluators' supernet training (EnNAS: ensemble KD; spos: plain single-path; DNA: block-wise)."""

    train: TrainConfig = TrainConfig(epochs=15, batch_size=32)
    subnets: Annotated[int, Field(ge=2, le=64)] = 4
    """EnNAS's m: paths sampled per batch, whose logits form the ensemble teacher."""
    kd_from_epoch: Annotated[int, Field(ge=0, le=100_000)] = 3
    """EnNAS: epochs of CE only before the ensemble teacher starts teaching (the paper: 20 of 120)."""
    diversity: bool = True
    """EnNAS's diversity-based sampling (eq. 4-5); False: uniform sampling, the paper's "w/o DS"."""
    rating_images: Annotated[int, Field(ge=8, le=1_000_000)] = 128
    """DNA: mini-val images every block path is rated on."""
    pamkd: PAMKDConfig = PAMKDConfig()




class SearchConfig(_Model):
    """KD-guided search: proxy training on mini-train, scored on mini-val, MnasNet reward."""

    space: str = "mnas"
    space_width: Annotated[float, Field(gt=0, le=16)] = 0.25
    strategy: str = "random"
    trials: Annotated[int, Field(ge=1, le=1_000_000)] = 10
    proxy: TrainConfig = TrainConfig(epochs=3, batch_size=32)
    reward: Literal["soft", "hard"] = "soft"
    target_ms: Annotated[float, Field(gt=0, le=1e6)] | None = None
    target_mmacs: Annotated[float, Field(gt=0, le=1e9)] | None = None
    target_fraction_of_teacher: Fraction = 0.25
    search_kd: bool = False
    """AutoKD: the KD temperature and weight are searched with the architecture and carried into distillation."""
    family_samples: Annotated[int, Field(ge=1, le=100)] = 1
    """AutoKD's protocol for ``space: family``: students drawn from the best family and each distilled; the report
    gives their mean and spread (the first is the run's student)."""
    evaluator: str = "proxy"
    """How a candidate is rated: KD proxy training (AKD, AutoKD), or inherited weights of a supernet trained with
    EnNAS's ensemble KD, plain single-path training (SPOS), or DNA's block-wise distillation."""
    oneshot: OneShotConfig = OneShotConfig()
    reward_training: Literal["kd", "ce"] = "kd"
    """How candidates are proxy-trained: with distillation (AKD's KD-guided search) or hard labels only."""
    jobs: Annotated[int, Field(ge=1, le=1024)] = 1
    storage: str | None = None
    """An Optuna RDB URL shared by several machines; None: SQLite in the run directory."""
    study: str | None = None
    """The study's name in the storage; None: the run's name."""

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        if self.target_ms is not None and self.target_mmacs is not None:
            raise ValueError("give either target_ms (latency target) or target_mmacs (MACs target), not both")
        if self.search_kd and self.reward_training == "ce":
            raise ValueError("search_kd searches KD settings, which hard-label (ce) proxy training does not use")
        return self


AUTO_FORMATS = "auto"
"""``export.formats`` of one word: every format whose runtime is installed is exported and validated, and the
bundle keeps those that pass and that no other beats on the device (faster and at least as accurate)."""


class ExportConfig(_Model):
    """Export, validation and packaging. These settings may change between calls of ``edgekd export``."""

    formats: tuple[str, ...] = ("onnx", "onnx-int8")
    """Formats to export, or ``("auto",)`` (AUTO_FORMATS)."""
    opset: Annotated[int, Field(ge=13, le=30)] = 18
    onnx_exporter: Literal["torchscript", "dynamo"] = "torchscript"
    simplify: bool = True
    calibration_images: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    reference_images: Annotated[int, Field(ge=1, le=100_000)] = 256
    max_accuracy_drop: dict[str, Annotated[float, Field(ge=0, le=100)]] = {
        "onnx": 0.0, "onnx-fp16": 0.5, "onnx-int8": 1.0, "tensorrt": 0.5, "tensorrt-fp16": 0.5, "tensorrt-int8": 1.0,
        "tflite-int8": 1.0, "executorch-int8": 1.0,
        "executorch-int8-pointwise": 1.0,
    }
    """Largest top-1 drop from the PyTorch student, in points, per format; a larger drop fails validation."""
    max_latency_drift: Annotated[float, Field(gt=0, le=1000)] | None = None
    """Largest |measured - predicted| / predicted latency of the fp32 model on the device; None: not checked."""

    @field_validator("formats", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value

    @field_validator("formats")
    @classmethod
    def _some(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one format (e.g. onnx): a bundle without a model gates nothing")
        if AUTO_FORMATS in value and len(value) > 1:
            raise ValueError(f"{AUTO_FORMATS!r} chooses the formats itself: give it alone")
        return value


class RuntimeConfig(_Model):
    """Where and how training runs. These settings may change between calls on one run (another machine, more
    workers); a seeded run gives the same results on the same kind of device."""

    train_device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """auto: a CUDA GPU, else Apple's MPS, else the CPU; a named GPU that is missing is an error."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a loss scaler)."""
    workers: Annotated[int, Field(ge=0, le=64)] | None = None
    """DataLoader worker processes; None: 0 for in-memory data, else min(4, usable cores)."""
    threads: Annotated[int, Field(ge=1, le=1024)] | None = None
    """torch's CPU threads; None: the cores this process may use (split among torchrun's local processes)."""
    checkpoint_steps: Annotated[int, Field(ge=1)] | None = None
    """Also save the training state every N steps inside an epoch."""
    checkpoint_minutes: Annotated[float, Field(gt=0)] | None = 10.0
    """Also save the training state inside an epoch when this many minutes passed since the last save."""


class RunConfig(_Model):
    """Everything a run needs; ``edgekd run`` with no arguments uses these defaults (the embedded digits task)."""

    name: str = "quickstart"
    """The run's folder under the runs directory: one path segment (see RUN_NAME)."""
    data: str = "digits"
    resolution: Annotated[int, Field(ge=4, le=4096)] | None = None
    mini_val_fraction: Fraction = 0.2
    val_fraction: Fraction = 0.2
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    augment: Literal["none", "standard"] = "none"
    """Training augmentation: standard = random-resized crop + flip at 64 px and above, pad-crop + flip below
    (the teacher then runs on every augmented batch instead of from cached logits)."""
    teacher: str = "train"
    teacher_weights: str | None = None
    teacher_train: TrainConfig = TrainConfig(epochs=12)
    device: str = "host-cpu"
    devices_file: str | None = None
    kd: KDConfig = KDConfig()
    search: SearchConfig = SearchConfig()
    distill: TrainConfig = TrainConfig(epochs=25)
    export: ExportConfig = ExportConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    version: str = "0.1.0"

    def student_kd(self, searched: KDConfig) -> KDConfig:
        """The KD settings a chosen student trains with: those searched with it (``search_kd``), else the run's."""
        return searched if self.search.search_kd else self.kd

    def public_dump(self) -> dict[str, Any]:
        """The config as JSON data for run files and bundles: a storage URL's password masked."""
        data = self.model_dump(mode="json")
        if self.search.storage:
            data["search"]["storage"] = mask_url(self.search.storage)
        return data

    @model_validator(mode="after")
    def _weights_for_torchvision(self) -> RunConfig:
        if self.teacher_weights is not None and not self.teacher.startswith("torchvision:"):
            raise ValueError(f"teacher_weights is the state_dict of a torchvision:NAME teacher; teacher "
                             f"{self.teacher!r} takes none (a teacher file holds its own weights)")
        return self

    @field_validator("name")
    @classmethod
    def _one_segment(cls, value: str) -> str:
        if not RUN_NAME.fullmatch(value):
            raise ValueError(RUN_NAME_RULE)
        return value


# Settings that may differ from a run's saved config without starting a new run: more trials only extend the
# search, more or fewer worker processes and the training runtime only change its speed, and export settings
# only shape what `edgekd export` writes from the finished student.
CHANGEABLE = ("search.trials", "search.jobs", "search.family_samples", "export.", "runtime.", "version")


def _changeable(key: str) -> bool:
    return any(key == c or (c.endswith(".") and key.startswith(c)) for c in CHANGEABLE)


def config_path(run_dir: Path) -> Path:
    return run_dir / "config.json"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= _flatten(v, key + ".") if isinstance(v, dict) else {key: v}
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def resolve_config(run_dir: Path, overrides: dict[str, Any],
                   check: Callable[[RunConfig], None] | None = None) -> RunConfig:
    """The run's config: the saved one (if any) with ``overrides`` (dotted keys) applied, validated, passed to
    ``check`` (names only a later layer knows, such as export formats) and saved.

    An override that changes a saved setting (other than a CHANGEABLE one) is an error: a resumed run must keep
    the settings its work was done with. A run that holds no work yet (nothing besides its config, as after a
    first attempt refused for a mistyped data path or name) starts afresh from the defaults.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    check_run_name(overrides.get("name", run_dir.name))
    if run_dir.parent.exists() and not run_dir.parent.is_dir():
        raise ConfigError(f"the runs directory {run_dir.parent} is a file, not a folder")
    path = config_path(run_dir)
    holds_work = path.is_file() and any(p != path for p in run_dir.iterdir())
    saved = read_json(path) if holds_work else None
    if saved is not None and not isinstance(saved, dict):
        raise RunStateError(f"{path} is not a run configuration (a JSON object)")
    base = _flatten(saved or RunConfig().public_dump())
    cfg = _validated(base | overrides)  # a value no run may take is named before any clash with the saved run
    if saved:
        shown = {k: mask_url(v) if k == "search.storage" else v for k, v in overrides.items()}
        changed = {k: (base.get(k), v) for k, v in shown.items() if base.get(k) != v and not _changeable(k)}
        if changed:
            diffs = ", ".join(f"{k}: saved {old!r}, given {new!r}" for k, (old, new) in changed.items())
            raise ConfigError(f"{path} was made with other settings ({diffs}); use another --name for a new run")
    if check:
        check(cfg)  # before saving: a refused command leaves the run's settings as they were
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, cfg.public_dump())
    return cfg


def _validated(flat: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(_nest(flat))
    except ValidationError as exc:
        problems = "; ".join(": ".join(filter(None, (".".join(map(str, e["loc"])),
                                                     e["msg"].removeprefix("Value error, "))))
                             for e in exc.errors())
        raise ConfigError(f"invalid run configuration: {problems}") from None


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a crash never leaves a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # its own name: torchrun's ranks may write together
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    """A JSON file of a run; RunStateError naming it when it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunStateError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise RunStateError(f"{path} is not a readable JSON file ({reason}); restore it, or delete the stage's "
                            "folder to redo that stage") from None
