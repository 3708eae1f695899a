"""TensorRT engines for ``ssh`` devices, built, run and timed on the board with TensorRT's ``trtexec``.

An engine only runs on the GPU model and TensorRT version that built it, so for a board the ONNX model is
copied over and the board's trtexec builds the engine (``--saveEngine``), which is fetched back into export/.
Validation runs it there too: the held-out images travel as a raw float32 file (``--loadInputs``), the
logits come back as trtexec's JSON (``--exportOutput``), and the latency is trtexec's median over
``repeats`` runs (``--loadEngine``). Nothing of TensorRT is needed on this host.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np

from edgekd.core.devices import NamedDevice, SshDevice
from edgekd.core.errors import DeviceError
from edgekd.core.measurement import Measurement
from edgekd.core.scratch import scratch_dir
from edgekd.runtime.ort import INPUT_NAME, OUTPUT_NAME, Runner
from edgekd.runtime.ssh import SshBackend

MAX_BATCH = 256
"""Largest batch of every TensorRT engine edgekd builds (here or on a board); engines are optimized for 1."""
PRECISION_FLAGS = {"fp32": ["--noTF32"], "fp16": ["--fp16"], "int8": ["--fp16", "--int8"]}
"""trtexec's builder flags per precision; int8 engines come from QDQ models and keep other layers in fp16."""
LATENCY = re.compile(r"(?:\] |Host )Latency: min = ([0-9.]+) ms, max = [0-9.]+ ms, mean = [0-9.]+ ms, "
                     r"median = ([0-9.]+) ms(?:, percentile\(90%\) = ([0-9.]+) ms)?")
"""trtexec's end-to-end latency line ("[I] Latency: ...", "Host Latency" in older versions), not its H2D/D2H
lines; older versions' summaries may lack percentile(90%)."""
VERSION = re.compile(r"TensorRT version: ([0-9][0-9A-Za-z.\-]*)")


def board_of(device: NamedDevice | None) -> SshDevice | None:
    """The ssh device whose trtexec builds and runs TensorRT engines, or None (engines are for the local GPU)."""
    return device.spec if device is not None and isinstance(device.spec, SshDevice) else None


def _shape(batch: int, input_shape: tuple[int, ...]) -> str:
    return f"{INPUT_NAME}:" + "x".join(map(str, (batch, *input_shape)))


class Trtexec:
    """trtexec on one ssh device, over edgekd's ssh transport."""

    def __init__(self, spec: SshDevice) -> None:
        self.spec, self.board = spec, SshBackend(spec)

    def _trtexec(self, args: list[str], what: str) -> str:
        return self.board.ssh(shlex.join([*shlex.split(self.spec.trtexec), *args]), what)

    def build(self, onnx_path: Path, engine_path: Path, input_shape: tuple[int, ...], precision: str) -> Path:
        """Build an engine for batch 1..MAX_BATCH (optimized for 1) on the board; fetched to ``engine_path``."""
        remote = self.board.upload(onnx_path)
        remote_engine = f"{remote}.{precision}.plan"
        self._trtexec([f"--onnx={remote}", f"--saveEngine={remote_engine}", *PRECISION_FLAGS[precision],
                       f"--minShapes={_shape(1, input_shape)}", f"--optShapes={_shape(1, input_shape)}",
                       f"--maxShapes={_shape(MAX_BATCH, input_shape)}", "--skipInference"],
                      f"building a {precision} TensorRT engine with {self.spec.trtexec}")
        return self.board.download(remote_engine, engine_path)

    def runner(self, engine_path: Path) -> Runner:
        """Logits of the engine for a float32 NCHW batch, computed on the board (one trtexec run per batch)."""
        remote_engine = self.board.upload(engine_path)

        def run(x: np.ndarray) -> np.ndarray:
            return np.concatenate([self._infer(remote_engine, x[i : i + MAX_BATCH])
                                   for i in range(0, len(x), MAX_BATCH)])

        return run

    def _infer(self, remote_engine: str, x: np.ndarray) -> np.ndarray:
        with scratch_dir("trtexec") as tmp:
            inputs = Path(tmp) / "input.bin"
            inputs.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
            remote_inputs = self.board.upload(inputs)
            remote_outputs = f"{remote_inputs}.json"
            self._trtexec([f"--loadEngine={remote_engine}", f"--loadInputs={INPUT_NAME}:{remote_inputs}",
                           f"--shapes={_shape(len(x), x.shape[1:])}", f"--exportOutput={remote_outputs}",
                           "--warmUp=0", "--iterations=1", "--duration=0"], "running the TensorRT engine")
            return parse_outputs(self.board.download(remote_outputs, Path(tmp) / "outputs.json").read_text())

    def measure(self, engine_path: Path, input_shape: tuple[int, ...]) -> Measurement:
        """trtexec's latency of the engine on the board: median (and 90th percentile) of ``repeats`` runs."""
        s = self.spec
        out = self._trtexec([f"--loadEngine={self.board.upload(engine_path)}",
                             f"--shapes={_shape(s.batch_size, input_shape)}", f"--iterations={s.repeats}",
                             "--duration=0"], "timing the TensorRT engine")
        low, median, p90 = parse_latency_summary(out, s.host)
        version = VERSION.search(out)
        runtime = f"trtexec-tensorrt-{version.group(1) if version else 'unknown'}"
        return Measurement(median, low, p90, s.repeats, 1, s.batch_size, runtime)


def parse_latency_summary(output: str, host: str) -> tuple[float, float, float]:
    """(min, median, 90th percentile) ms of trtexec's latency summary; trtexec reports no 10th percentile, so
    its minimum stands for the low end of the spread, and the median for a 90th percentile it does not print."""
    match = LATENCY.search(output)
    if not match:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise DeviceError(f"trtexec printed no latency summary on {host}; its output ended with: {tail}")
    median = float(match.group(2))
    return float(match.group(1)), median, float(match.group(3) or median)


def parse_outputs(text: str) -> np.ndarray:
    """The logits in trtexec's ``--exportOutput`` JSON: [{"name", "dimensions": "NxK", "values": [...]}]."""
    try:
        tensors = {t["name"]: t for t in json.loads(text)}
        logits = tensors[OUTPUT_NAME]
        dims = tuple(int(d) for d in logits["dimensions"].split("x"))
        return np.asarray(logits["values"], dtype=np.float32).reshape(dims)
    except (ValueError, KeyError, TypeError) as exc:
        raise DeviceError(f"trtexec's output file holds no readable {OUTPUT_NAME!r} tensor: {exc}") from exc
