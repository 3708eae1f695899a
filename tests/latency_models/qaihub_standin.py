"""Stands in for the ``qai_hub`` client package at its documented boundary, with AI Hub's cloud played by this
host: a compile job checks that it was given an ONNX file and a target runtime; a profile job runs the model in
ONNX Runtime ``--max_profiler_iterations`` times and returns a profile shaped like ``download_profile()``'s
(execution summary in microseconds, every inference time, each layer's compute unit: convolutions on the NPU,
the rest on the CPU). Jobs finish when waited for. Every call is logged in ``CALLS``. No cloud was ever
involved."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort

__version__ = "stand-in"
DEVICES = ("Samsung Galaxy S24 (Family)", "Google Pixel 8")
CALLS: list[tuple[str, dict]] = []
FAIL_COMPILE: list[str] = []
"""Model stems whose compile jobs fail."""


@dataclass(frozen=True)
class Device:
    name: str = ""
    os: str = ""
    attributes: tuple = ()


def get_devices(name: str = "", os: str = "", attributes=None) -> list[Device]:
    CALLS.append(("get_devices", {"name": name}))
    return [Device(d) for d in DEVICES if not name or d == name]


@dataclass
class Model:
    path: Path


@dataclass
class Job:
    url: str
    outcome: str = "SUCCESS"
    message: str | None = None
    result: dict = field(default_factory=dict)

    def wait(self, timeout: int | None = None):
        return SimpleNamespace(success=self.outcome == "SUCCESS", code=self.outcome, message=self.message)


@dataclass
class CompileJob(Job):
    target: Model | None = None

    def get_target_model(self) -> Model | None:
        return self.target


@dataclass
class ProfileJob(Job):
    def download_profile(self) -> dict:
        return self.result


def _check_device(device: Device) -> None:
    if device.name not in DEVICES:
        raise RuntimeError(f"no device named {device.name!r}")  # as the client rejects an unknown device


def submit_compile_job(model, device, name=None, input_specs=None, options="", **kwargs) -> CompileJob:
    CALLS.append(("submit_compile_job", {"model": model, "device": device.name, "name": name, "options": options}))
    _check_device(device)
    path = Path(model)
    onnx.checker.check_model(onnx.load(str(path)))
    runtime = re.search(r"--target_runtime (\S+)", options)
    assert runtime, "the compile options name a target runtime"
    url = f"https://app.aihub.qualcomm.com/jobs/c{len(CALLS)}"
    if path.stem in FAIL_COMPILE:
        return CompileJob(url, "FAILED", "Failed to compile: unsupported op")
    return CompileJob(url, target=Model(path))


def submit_profile_job(model: Model, device, name=None, options="", **kwargs) -> ProfileJob:
    CALLS.append(("submit_profile_job", {"model": model.path, "device": device.name, "options": options}))
    _check_device(device)
    iterations = int(re.search(r"--max_profiler_iterations (\d+)", options).group(1))
    session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape],
                                                 dtype=np.float32)
    for _ in range(5):
        session.run(None, {inp.name: x})
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, {inp.name: x})
        times.append(round((time.perf_counter() - start) * 1e6))
    layers = [{"name": n.name, "type": n.op_type, "compute_unit": "NPU" if n.op_type == "Conv" else "CPU"}
              for n in onnx.load(str(model.path)).graph.node]
    profile = {"execution_summary": {"estimated_inference_time": min(times), "all_inference_times": times},
               "execution_detail": layers}
    return ProfileJob(f"https://app.aihub.qualcomm.com/jobs/p{len(CALLS)}", result=profile)
