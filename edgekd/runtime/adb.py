"""``adb`` devices: an Android phone; the model is pushed and a benchmark tool on the phone runs it.

Tools: ONNX Runtime's ``onnxruntime_perf_test`` (runs the .onnx file itself) and TensorFlow Lite's
``benchmark_model`` (needs a .tflite file: edgekd does not convert to TFLite, so it can only time models the
user converted). Their outputs are parsed by ``parse_perf_test`` and ``parse_benchmark_model``.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from pathlib import Path

from edgekd.core.devices import AdbDevice
from edgekd.core.errors import DeviceError
from edgekd.core.measurement import Measurement
from edgekd.runtime import BACKENDS
from edgekd.runtime.conditions import CONDITIONS_SCRIPT, parse_conditions
from edgekd.runtime.protocol import Sampler

_SECONDS = {"s": 1e3, "sec": 1e3, "ms": 1.0, "us": 1e-3}


def parse_perf_test(output: str) -> tuple[float, float | None, float | None]:
    """(median or mean ms, p10-ish min ms, p90 ms) from onnxruntime_perf_test's summary.

    Newer releases print ``P50 Latency: 0.0122 s``, older ones ``P50 Latency is 0.0587108 sec``; both print
    ``Average inference time cost: 12.3 ms`` (older: ``Average time cost: 58.8 ms``).
    """
    def latency(name: str) -> float | None:
        m = re.search(rf"{name} Latency(?: is|:)\s*([0-9.eE+-]+)\s*(s|sec|ms|us)\b", output)
        return float(m.group(1)) * _SECONDS[m.group(2)] if m else None

    p50 = latency("P50")
    if p50 is None:
        m = re.search(r"Average (?:inference )?time cost:\s*([0-9.eE+-]+)\s*ms", output)
        if not m:
            raise DeviceError("onnxruntime_perf_test printed no P50 latency or average time cost")
        p50 = float(m.group(1))
    return p50, latency("Min"), latency("P90")


def parse_benchmark_model(output: str) -> tuple[float, float | None, float | None]:
    """(mean ms, min ms, None) from TFLite benchmark_model: ``Inference timings in us: ..., Inference (avg): X``
    and its ``count=N first=.. curr=.. min=.. max=.. avg=.. std=..`` statistics line."""
    m = re.search(r"Inference \(avg\):\s*([0-9.eE+-]+)", output)
    if not m:
        raise DeviceError("benchmark_model printed no 'Inference (avg)' timing")
    mean_ms = float(m.group(1)) * 1e-3
    stats = re.findall(r"count=\d+.*?min=([0-9.]+).*?avg=([0-9.eE+-]+)", output)
    min_ms = float(stats[-1][0]) * 1e-3 if stats else None
    return mean_ms, min_ms, None


PARSERS = {"onnxruntime_perf_test": parse_perf_test, "benchmark_model": parse_benchmark_model}


@BACKENDS.register("adb")
class AdbBackend:
    def __init__(self, spec: AdbDevice) -> None:
        self.spec = spec
        self.runtime = f"adb:{spec.tool}"

    def _adb(self, *args: str) -> str:
        argv = ["adb", *(["-s", self.spec.serial] if self.spec.serial else []), *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.spec.timeout_s)
        except FileNotFoundError as exc:
            raise DeviceError("adb not found: install Android platform-tools and put adb on PATH") from exc
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"adb {args[0]} timed out after {self.spec.timeout_s:g} s") from exc
        if proc.returncode != 0:
            raise DeviceError(f"adb {args[0]} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        return proc.stdout

    def command(self, remote_model: str) -> str:
        """The benchmark command run on the phone."""
        s = self.spec
        if s.tool == "onnxruntime_perf_test":
            args = f"-I -m times -r {s.repeats} -x {s.threads} -e cpu {shlex.quote(remote_model)}"
        else:
            args = (f"--graph={shlex.quote(remote_model)} --num_threads={s.threads} --num_runs={s.repeats} "
                    f"--warmup_runs={s.warmup}")
        return f"{shlex.quote(s.binary)} {args}"

    def _push(self, path: Path) -> str:
        """Push the model to the phone; its path there."""
        s = self.spec
        if s.tool == "benchmark_model" and path.suffix != ".tflite":
            raise DeviceError("benchmark_model runs .tflite models; use tool onnxruntime_perf_test for ONNX")
        remote = f"{s.remote_dir.rstrip('/')}/{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}{path.suffix}"
        self._adb("shell", f"mkdir -p {shlex.quote(s.remote_dir)}")
        self._adb("push", str(path), remote)
        return remote

    def _run_tool(self, remote: str) -> tuple[float, float | None, float | None]:
        return PARSERS[self.spec.tool](self._adb("shell", self.command(remote)))

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        s = self.spec
        median, low, high = self._run_tool(self._push(path))
        return Measurement(median, low or median, high or median, s.repeats, s.threads, s.batch_size, self.runtime)

    def sampler(self, path: Path, input_shape: tuple[int, ...]) -> Sampler:
        """Push the model once; each call runs the tool on it."""
        remote = self._push(path)
        return lambda: self._run_tool(remote)[0]

    def conditions(self) -> dict[str, str]:
        return parse_conditions(self._adb("shell", CONDITIONS_SCRIPT))

    def check(self) -> list[tuple[str, bool, str]]:
        binary = self.spec.binary
        try:
            state = self._adb("get-state").strip()
        except DeviceError as exc:
            return [("adb", False, str(exc))]
        try:
            found = self._adb("shell", f"ls {shlex.quote(binary)}").strip()
        except DeviceError:
            found = ""
        missing = f"{binary} is not on the phone: `adb push {self.spec.tool} {binary}` (the tool built for the phone)"
        return [("adb", state == "device", state), ("benchmark binary", bool(found), found or missing)]
