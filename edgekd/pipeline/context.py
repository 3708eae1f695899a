"""A run: its resolved config, directory, data, teacher, device and latency model."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from edgekd.core.config import RunConfig, read_json, write_json
from edgekd.core.devices import NamedDevice
from edgekd.core.errors import ConfigError
from edgekd.data import Data
from edgekd.latency_models import LatencyModel
from edgekd.pipeline.reward import Reward
from edgekd.pipeline.teacher import Teacher, prepare_teacher
from edgekd.spaces import SearchSpace, make_space
from edgekd.train import (
    LOCAL,
    CachedLogits,
    FrozenTeacher,
    Runtime,
    TeacherSignal,
)

STAGES = ("teacher", "search", "student", "export", "validation", "bundle")


def cache_dir() -> Path:
    """Measurement caches shared by runs: $EDGEKD_CACHE, else ~/.cache/edgekd."""
    return Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))


def latency_cache() -> Path:
    """The measurement cache every command shares (SQLite)."""
    return cache_dir() / "latency.sqlite"


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
