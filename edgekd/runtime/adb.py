"""``adb`` devices: an Android phone; the model is pushed and a benchmark tool on the phone runs it.

Tools, each timing the formats it runs (``ADB_TOOL_FORMATS``): ONNX Runtime's ``onnxruntime_perf_test`` (.onnx,
.ort), LiteRT's ``benchmark_model`` (.tflite) and ExecuTorch's ``executor_runner`` (.pte, built with XNNPACK).
Their outputs are parsed by ``parse_perf_test``, ``parse_benchmark_model`` and ``parse_executor_runner``. The
tools run under the entry's ``taskset`` mask, after its cool-down; the phone's temperature and governor are read
with every measurement (``conditions``).
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import time
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


def parse_executor_runner(output: str) -> tuple[float, float | None, float | None]:
    """(median ms, min ms, max ms) from ExecuTorch's executor_runner: its ``Iteration i of N: X ms`` lines, the
    first left out as warm-up when there are several; older runners print only ``Model executed successfully N
    time(s) in T ms.``, whose mean is taken."""
    runs = [float(ms) for ms in re.findall(r"Iteration \d+ of \d+:\s*([0-9.eE+-]+)\s*ms", output)]
    if runs:
        runs = sorted(runs[1:] if len(runs) > 1 else runs)
        return runs[len(runs) // 2], runs[0], runs[-1]
    m = re.search(r"Model executed successfully (\d+) time\(s\) in ([0-9.eE+-]+) ms", output)
    if not m:
        raise DeviceError("executor_runner printed no 'Iteration' timings or 'Model executed successfully' line")
    mean = float(m.group(2)) / max(int(m.group(1)), 1)
    return mean, None, None


PARSERS = {"onnxruntime_perf_test": parse_perf_test, "benchmark_model": parse_benchmark_model,
           "executor_runner": parse_executor_runner}
SUFFIXES = {"onnxruntime_perf_test": (".onnx", ".ort"), "benchmark_model": (".tflite",), "executor_runner": (".pte",)}
"""The model files each tool runs."""


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

    def tool_for(self, path: Path) -> str:
        """The entry's tool that runs ``path`` (by its suffix); DeviceError naming the tool to add otherwise."""
        found = [tool for tool in self.spec.binaries if path.suffix in SUFFIXES[tool]]
        if not found:
            wanted = next((t for t, suffixes in SUFFIXES.items() if path.suffix in suffixes), None)
            raise DeviceError(f"no tool of this phone's entry runs {path.suffix} files"
                              + (f": add {wanted} to its `tools`" if wanted else ""))
        return found[0]

    def runtime_for(self, path: Path) -> str:
        """``adb:TOOL`` of the tool that times ``path``."""
        return f"adb:{self.tool_for(path)}"

    def command(self, remote_model: str, tool: str | None = None) -> str:
        """The benchmark command run on the phone (by the entry's tool, or ``tool``)."""
        s = self.spec
        tool = tool or s.tool
        model = shlex.quote(remote_model)
        if tool == "onnxruntime_perf_test":
            args = f"-I -m times -r {s.repeats} -x {s.threads} -e cpu {model}"
        elif tool == "benchmark_model":
            args = f"--graph={model} --num_threads={s.threads} --num_runs={s.repeats} --warmup_runs={s.warmup}"
        else:  # the runner has no warm-up flag: its first iteration is left out by the parser
            args = f"--model_path={model} --num_executions={s.repeats + 1} --cpu_threads={s.threads}"
        pinned = f"taskset {s.affinity_mask} " if s.affinity_mask else ""
        return f"{pinned}{shlex.quote(s.binaries[tool])} {args}"

    def _push(self, path: Path) -> str:
        """Push the model to the phone; its path there."""
        s = self.spec
        self.tool_for(path)  # a file no tool runs is refused before the push
        remote = f"{s.remote_dir.rstrip('/')}/{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}{path.suffix}"
        self._adb("shell", f"mkdir -p {shlex.quote(s.remote_dir)}")
        self._adb("push", str(path), remote)
        return remote

    def _run_tool(self, remote: str, tool: str) -> tuple[float, float | None, float | None]:
        return PARSERS[tool](self._adb("shell", self.command(remote, tool)))

    def _cool_down(self) -> None:
        if self.spec.cooldown_s:
            time.sleep(self.spec.cooldown_s)

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        """Time the model file at ``path`` (any format a tool of the entry runs) once with its tool."""
        s, tool = self.spec, self.tool_for(path)
        remote = self._push(path)
        self._cool_down()
        median, low, high = self._run_tool(remote, tool)
        return Measurement(median, low or median, high or median, s.repeats, s.threads, s.batch_size, f"adb:{tool}",
                           conditions=self.conditions())

    def sampler(self, path: Path, input_shape: tuple[int, ...]) -> Sampler:
        """Push the model once; each call runs its tool on it, the first after the cool-down."""
        tool, remote = self.tool_for(path), self._push(path)
        cooled = []

        def sample() -> float:
            if not cooled:
                self._cool_down()
                cooled.append(True)
            return self._run_tool(remote, tool)[0]

        return sample

    def conditions(self) -> dict[str, str]:
        return parse_conditions(self._adb("shell", CONDITIONS_SCRIPT))

    def check(self) -> list[tuple[str, bool, str]]:
        """adb reaches the phone, and each tool of the entry is on it (else how to push it)."""
        try:
            state = self._adb("get-state").strip()
        except DeviceError as exc:
            return [("adb", False, str(exc))]
        rows = [("adb", state == "device", state)]
        for tool, binary in self.spec.binaries.items():
            try:
                found = self._adb("shell", f"ls {shlex.quote(binary)}").strip()
            except DeviceError:
                found = ""
            rows.append((tool, bool(found), found or f"{binary} is not on the phone: build {tool} for the phone's "
                         f"ABI ({PUSH_HINTS[tool]}), then `adb push {tool} {binary}` and `adb shell chmod +x "
                         f"{binary}`"))
        return rows


PUSH_HINTS = {
    "onnxruntime_perf_test": "ONNX Runtime's build.sh --android --build_shared_lib makes it",
    "benchmark_model": "LiteRT publishes prebuilt android_aarch64 benchmark_model binaries",
    "executor_runner": "ExecuTorch's CMake build with -DEXECUTORCH_BUILD_XNNPACK=ON and the Android NDK makes it",
}
