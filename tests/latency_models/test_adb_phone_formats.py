"""Phones timing LiteRT and ExecuTorch models over adb, against the stand-in phone (adb_standin.py: its
benchmark_model played by ai-edge-litert, its executor_runner by ExecuTorch's runtime, with the tools' own output
lines). No real phone."""

from __future__ import annotations

import shlex

import numpy as np
import torch

from edgekd.core.arch import ArchSpec, BlockSpec, build
from edgekd.core.devices import AdbDevice, MeasurementProtocol, NamedDevice
from edgekd.exporters import get_format
from edgekd.latency_models import check_device
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.validate import validate_artifact

TOOLS = "/data/local/tmp"
SPEC = ArchSpec(resolution=16, in_channels=1, num_classes=10, stem_channels=8, head_channels=32,
                blocks=(BlockSpec(op="mbconv", kernel=3, expand=3, out_channels=16, stride=2),))


def _phone(root, **entry) -> NamedDevice:
    for binary in [entry["binary"], *entry.get("tools", {}).values()]:
        (root / binary.lstrip("/")).write_text("")  # the stand-in plays the tool
    return NamedDevice(name="phone", spec=AdbDevice(kind="adb", repeats=5, warmup=1,
                                                    protocol=MeasurementProtocol(kind="median"), **entry))


def _shell_calls(root) -> list[list[str]]:
    lines = (root / "adb-calls.log").read_text().splitlines()
    return [shlex.split(" ".join(shlex.split(line)[1:])) for line in lines if line.startswith("shell ")]


def test_searched_candidates_are_timed_as_int8_litert_models_by_benchmark_model(phone, tmp_path):
    device = _phone(phone, tool="benchmark_model", binary=f"{TOOLS}/benchmark_model", variant="int8",
                    affinity_mask="f0", cooldown_s=0.2)
    latency = MeasuredLatency(device, tmp_path / "lat.sqlite")
    m = latency.measure(SPEC)
    assert m.runtime == "adb:benchmark_model" and 0 < m.p10_ms <= m.median_ms
    assert "load average" in m.conditions  # the phone's state, read with the measurement
    runs = [c for c in _shell_calls(phone) if "--graph" in " ".join(c)]
    assert len(runs) == 1 and runs[0][:3] == ["taskset", "f0", f"{TOOLS}/benchmark_model"]
    pushed = phone / runs[0][3].removeprefix("--graph=").lstrip("/")
    assert pushed.suffix == ".tflite" and pushed.read_bytes()[4:8] == b"TFL3"
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=str(pushed)).get_input_details()[0]["dtype"] == np.int8  # the int8 model
    assert latency.measure(SPEC) == m  # cached: the phone is not asked again
    assert len([c for c in _shell_calls(phone) if "--graph" in " ".join(c)]) == 1


def test_an_executorch_program_is_validated_on_the_phone_and_a_missing_tool_is_named(phone, tmp_path):
    device = _phone(phone, tool="executor_runner", binary=f"{TOOLS}/executor_runner",
                    tools={"onnxruntime_perf_test": f"{TOOLS}/onnxruntime_perf_test"})
    torch.manual_seed(0)
    model = build(SPEC).eval()
    path = get_format("executorch").export(model, SPEC, tmp_path / "export", {})
    latency = MeasuredLatency(device, tmp_path / "lat.sqlite")
    assert latency.times(path) and not latency.times(path.with_suffix(".tflite"))
    images = np.random.default_rng(0).standard_normal((8, *SPEC.input_shape), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(images)).numpy()
    f = validate_artifact("executorch", path, images, ref, ref.argmax(1), device, latency)
    assert f["latency_where"] == "phone" and f["runtime"] == "adb:executor_runner" and f["top1_agreement"] == 1.0
    runs = [c for c in _shell_calls(phone) if c and c[0].endswith("executor_runner")]
    assert len(runs) == 1 and f"--num_executions={device.spec.repeats + 1}" in runs[0]
    rows = {what: (ok, detail) for what, ok, detail in check_device(device)}
    assert rows["executor_runner"][0] and rows["onnxruntime_perf_test"][0]
    (phone / f"{TOOLS}/onnxruntime_perf_test".lstrip("/")).unlink()
    rows = {what: (ok, detail) for what, ok, detail in check_device(device)}
    assert not rows["onnxruntime_perf_test"][0] and "adb push onnxruntime_perf_test" in rows["onnxruntime_perf_test"][1]
