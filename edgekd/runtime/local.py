"""``local`` devices: ONNX Runtime on this host (CPU or CUDA provider), measured in fresh processes (threads,
affinity pinned).

On a shared 2-core virtual machine the same model's median moves between levels (0.33, 0.54, 0.63 ms seen
for one model) as the host's state changes over seconds, within a process as well as across processes. The
default, interleaved protocol (``measure_against``) therefore times each model alternately with a reference in
one fresh process (``edgekd.runtime.protocol``). The ``median`` protocol (``measure_many``) runs ``processes``
fresh processes, at different moments, and keeps the lowest median (the least disturbed run, as timeit takes the
minimum), recording every process's median. Several models share the same processes, so the start-up cost is
paid once per batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort

from edgekd.core.devices import LocalDevice
from edgekd.core.errors import DeviceError
from edgekd.core.measurement import Measurement
from edgekd.runtime import BACKENDS
from edgekd.runtime.conditions import local_conditions
from edgekd.runtime.ort import check_provider, has_provider, onnxruntime_version
from edgekd.runtime.protocol import Interleaved, Settings

TIMEOUT_S = 3600


@BACKENDS.register("local")
class LocalBackend:
    def __init__(self, spec: LocalDevice) -> None:
        self.spec = spec
        self.runtime = onnxruntime_version(spec.provider)

    def _ort_bench(self, paths: list[Path], *options: str) -> list[dict]:
        """The JSON lines of one fresh ``ort_bench`` process over ``paths``."""
        s = self.spec
        check_provider(s.provider)
        cmd = [sys.executable, "-m", "edgekd.runtime.ort_bench", *map(str, paths), "--threads",
               str(s.threads), "--warmup", str(s.warmup), "--repeats", str(s.repeats), "--batch", str(s.batch_size),
               "--provider", s.provider, *options]
        if s.affinity:
            cmd += ["--affinity", ",".join(map(str, s.affinity))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        if proc.returncode != 0:
            raise DeviceError(f"measuring on this host failed: {' | '.join(proc.stderr.strip().splitlines()[-2:])}")
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    def _one_process(self, paths: list[Path]) -> list[Measurement]:
        return [Measurement(**m) for m in self._ort_bench(paths)]

    def measure_against(self, paths: list[Path], reference: Path, input_shape: tuple[int, ...],
                        settings: Settings) -> list[Interleaved]:
        """Each model timed interleaved with ``reference``, in one fresh process."""
        found = self._ort_bench(paths, "--reference", str(reference), "--precision", str(settings.precision),
                                "--budget-s", str(settings.budget_s))
        return [Interleaved(**r) for r in found]

    def measure_many(self, paths: list[Path]) -> list[Measurement]:
        """One measurement per ONNX file: the best of ``processes`` fresh processes."""
        runs = [self._one_process(paths) for _ in range(self.spec.processes)]
        out = []
        for per_path in zip(*runs, strict=True):
            best = min(per_path, key=lambda m: m.median_ms)
            out.append(dataclasses.replace(best, process_medians_ms=[m.median_ms for m in per_path]))
        return out

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        return self.measure_many([path])[0]

    def conditions(self) -> dict[str, str]:
        return local_conditions()

    def check(self) -> list[tuple[str, bool, str]]:
        """(what, ok, detail) rows saying whether the device is ready."""
        cpus = sorted(os.sched_getaffinity(0))
        bad = sorted(set(self.spec.affinity or []) - set(cpus))
        return [
            ("onnxruntime", True, self.runtime),
            ("provider", has_provider(self.spec.provider), f"available: {', '.join(ort.get_available_providers())}"),
            ("CPUs", not bad, f"{len(cpus)} usable: {cpus}" + (f"; affinity asks for missing {bad}" if bad else "")),
            ("threads", self.spec.threads <= len(cpus), f"{self.spec.threads} requested"),
        ]
