"""A run: its resolved config, directory, data, teacher, device and latency model."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from edgekd.core.config import RunConfig, config_path, read_json, write_json
from edgekd.core.devices import NamedDevice, get_device
from edgekd.core.errors import ConfigError
from edgekd.core.ui import console
from edgekd.data import Data, load_data
from edgekd.exporters import get_format
from edgekd.latency_models import LatencyModel, make_latency_model
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.search.evaluation import evaluator_kind
from edgekd.pipeline.search.storage import check_storage
from edgekd.pipeline.teacher import Teacher, prepare_teacher
from edgekd.spaces import SearchSpace, make_space, space_preset
from edgekd.strategies import strategy_factory
from edgekd.train import (
    LOCAL,
    CachedLogits,
    FrozenTeacher,
    Runtime,
    TeacherSignal,
    distributed,
    resolve_device,
    set_threads,
)
from edgekd.train.devices import usable_cores

STAGES = ("teacher", "search", "student", "export", "validation", "bundle")


def cache_dir() -> Path:
    """Measurement caches shared by runs: $EDGEKD_CACHE, else ~/.cache/edgekd."""
    return Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))


@dataclass
class RunContext:
    cfg: RunConfig
    run_dir: Path
    data: Data
    device: NamedDevice
    latency: LatencyModel
    runtime: Runtime = LOCAL
    """Where this process trains (device, precision, torchrun rank, loader workers, augmentation)."""

    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    @cached_property
    def teacher(self) -> Teacher:
        """The run's teacher, loaded (or trained, the first time) on first use."""
        return prepare_teacher(self.cfg, self.data, self.stage_dir("teacher"), self.runtime)

    @cached_property
    def teacher_signal(self) -> TeacherSignal:
        """What students learn from: the teacher's cached logits, or (with augmentation) the teacher itself run on
        every batch (a copy, so that the run's teacher stays on the CPU for latency measurement)."""
        if self.teacher.logits is not None:
            return CachedLogits(self.teacher.logits)
        return FrozenTeacher(copy.deepcopy(self.teacher.model))

    @property
    def has_teacher(self) -> bool:
        """Whether the run has a teacher already (a run exporting a given checkpoint has none)."""
        return (self.stage_dir("teacher") / "metrics.json").is_file()

    @property
    def space(self) -> SearchSpace:
        c, res, _ = self.data.input_shape
        return make_space(self.cfg.search.space, res, c, self.data.num_classes, self.cfg.search.space_width)

    def teacher_latency_ms(self) -> float:
        """The teacher's median latency on the run's device (measured once per device setting)."""
        path = self.stage_dir("teacher") / f"latency-{self.device.fingerprint}.json"
        if not path.is_file() and not self.device.measurable:
            if self.teacher.arch is None:
                raise ConfigError(f"device {self.device.name!r} predicts latency from edgekd architectures, and the "
                                  f"teacher {self.teacher.source} has none: give --target-ms")
            write_json(path, {"median_ms": self.latency.latency_ms(self.teacher.arch), "predicted": True})
        elif not path.is_file():
            m = self.latency.measure_model(self.teacher.model, self.data.input_shape)
            write_json(path, {"median_ms": m.median_ms, "p10_ms": m.p10_ms, "p90_ms": m.p90_ms, "runtime": m.runtime})
        return read_json(path)["median_ms"]

    def reward(self) -> Reward:
        """The search reward: the configured latency or MACs target, else a fraction of the teacher's latency."""
        s = self.cfg.search
        if s.target_mmacs is not None:
            return Reward(s.target_mmacs, "mmacs", s.reward)
        target = s.target_ms if s.target_ms is not None else s.target_fraction_of_teacher * self.teacher_latency_ms()
        return Reward(target, "latency_ms", s.reward)


def check_names(cfg: RunConfig) -> None:
    """ConfigError for an unknown search space, strategy, evaluator or export format, or an unusable study
    storage, before any stage spends minutes on a teacher."""
    space_preset(cfg.search.space)
    strategy_factory(cfg.search.strategy)
    evaluator_kind(cfg.search)
    for name in cfg.export.formats:
        get_format(name)
    if cfg.search.storage:
        check_storage(cfg.search.storage)


def training_runtime(cfg: RunConfig, data: Data, worker: int | None = None) -> Runtime:
    """The runtime ``cfg`` asks for: the training device, the torchrun process group when launched by torchrun,
    torch's CPU threads and the loader workers for ``data``. ``worker`` (a ``--jobs`` search process) gets its
    share of the CPU threads and, on a host with several GPUs, a GPU of its own."""
    r = cfg.runtime
    torchrun = distributed.launched_by_torchrun()
    device = resolve_device(r.train_device, r.amp, distributed.local_rank() if torchrun else worker)
    dist = distributed.setup(device.kind)
    console.quiet = console.quiet or not dist.main
    set_threads(r.threads, share=cfg.search.jobs if worker is not None else dist.local_world)
    workers = r.workers if r.workers is not None else 0 if data.source.in_memory else min(4, usable_cores())
    return Runtime(device, dist, workers, cfg.augment, r.checkpoint_steps, r.checkpoint_minutes)


def open_run(cfg: RunConfig, runs_root: Path, worker: int | None = None) -> RunContext:
    """Check ``cfg``'s names and load its data, device and training runtime (``worker``: which process of a
    ``--jobs`` search this is); the teacher is prepared when a stage first needs it."""
    check_names(cfg)
    run_dir = runs_root / cfg.name
    if not config_path(run_dir).is_file():  # the Python API skips resolve_config; a run always records its config
        write_json(config_path(run_dir), cfg.public_dump())
    device = get_device(cfg.device, Path(cfg.devices_file) if cfg.devices_file else None)
    data = load_data(cfg.data, cfg.seed, cfg.resolution, cfg.mini_val_fraction, cfg.val_fraction)
    latency = make_latency_model(device, cache_dir() / "latency.sqlite")
    return RunContext(cfg, run_dir, data, device, latency, training_runtime(cfg, data, worker))
