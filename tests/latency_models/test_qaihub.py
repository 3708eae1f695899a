"""`qaihub` devices: compile and profile jobs through the qai-hub client, tested against a stand-in client
(qaihub_standin.py) at the client's documented boundary; the real client without a token is a clear error."""

import importlib
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edgekd.core.arch import build
from edgekd.core.devices import NamedDevice, QaiHubDevice
from edgekd.core.errors import DeviceError
from edgekd.exporters.onnx import export_onnx
from edgekd.latency_models import check_device
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.pipeline.profile import sample_archs
from edgekd.runtime.ort import open_onnx
from edgekd.runtime.qaihub import profile_measurement
from edgekd.runtime.timing import time_runner
from edgekd.spaces import make_space

PHONE = "Samsung Galaxy S24 (Family)"


@pytest.fixture
def hub(monkeypatch):
    """The stand-in client as ``qai_hub``."""
    sys.path.insert(0, str(Path(__file__).parent))
    standin = importlib.import_module("qaihub_standin")
    sys.path.pop(0)
    standin.CALLS.clear()
    standin.FAIL_COMPILE.clear()
    monkeypatch.setitem(sys.modules, "qai_hub", standin)
    return standin


def _device(**fields) -> NamedDevice:
    return NamedDevice(name="s24", spec=QaiHubDevice(kind="qaihub", device=PHONE, repeats=30, **fields))


def test_candidates_are_compiled_and_profiled_on_the_named_phone_and_cached(hub, tmp_path):
    space = make_space("mnas", 8, 3, 10, width=0.25)
    specs = sample_archs(space, 3, 0)
    latency = MeasuredLatency(_device(profile_options="--compute_unit npu"), tmp_path / "lat.sqlite")
    measured = latency.measure_many(specs)
    compiles = [c for name, c in hub.CALLS if name == "submit_compile_job"]
    profiles = [c for name, c in hub.CALLS if name == "submit_profile_job"]
    assert len(compiles) == len(profiles) == 3 and all(c["device"] == PHONE for c in compiles + profiles)
    assert all(c["options"] == "--target_runtime tflite" for c in compiles)
    assert all(c["options"] == "--max_profiler_iterations 30 --compute_unit npu" for c in profiles)
    # all compile jobs were submitted before the first profile job (AI Hub runs them in parallel)
    order = [name for name, _ in hub.CALLS]
    assert order.index("submit_profile_job") > max(i for i, n in enumerate(order) if n == "submit_compile_job")
    for spec, m in zip(specs, measured, strict=True):
        assert m.runtime == "qaihub:tflite" and m.repeats == 30 and m.p10_ms <= m.median_ms <= m.p90_ms
        layers = json.loads(m.conditions["layer_compute_units"])
        assert layers and {unit for _, unit in layers} == {"NPU", "CPU"}
        assert m.conditions["compute_units"].startswith(("NPU", "CPU")) and m.conditions["device"] == PHONE
        with tempfile.TemporaryDirectory() as tmp:  # the phone's time is the model's own time
            path = export_onnx(build(spec), spec.input_shape, Path(tmp) / "m.onnx")
            here = time_runner(open_onnx(path, 1), spec.input_shape, 5, 30, 1, "ort").median_ms
        assert 0.2 < m.median_ms / here < 5
    hub.CALLS.clear()
    assert [m.median_ms for m in latency.measure_many(specs)] == [m.median_ms for m in measured]
    assert hub.CALLS == []  # cached: no job submitted again


def test_a_failed_compile_job_names_the_model_the_phone_and_the_job(hub, tmp_path):
    spec = sample_archs(make_space("mnas", 8, 3, 10, width=0.25), 1, 0)[0]
    hub.FAIL_COMPILE.append(spec.id)
    message = f"compile job of {spec.id}.onnx on {PHONE} did not succeed: Failed to compile: unsupported op (https:"
    with pytest.raises(DeviceError, match=re.escape(message)):
        MeasuredLatency(_device(), tmp_path / "lat.sqlite").measure(spec)


def test_the_profile_summary_is_the_median_of_every_run_not_the_fastest():
    profile = {"execution_summary": {"estimated_inference_time": 1000, "all_inference_times": [1000, 4000, 5000]},
               "execution_detail": [{"name": "conv", "compute_unit": "NPU"}, {"name": "fc", "compute_unit": "CPU"}]}
    m = profile_measurement(profile, _device().spec, "qaihub:tflite", "url")
    assert m.median_ms == 4.0 and m.p10_ms == pytest.approx(1.6) and m.conditions["compute_units"] == "NPU 1, CPU 1"
    only_estimate = profile_measurement({"execution_summary": {"estimated_inference_time": 2500}}, _device().spec,
                                        "qaihub:tflite", "url")
    assert only_estimate.median_ms == 2.5 and only_estimate.conditions["compute_units"] == "unknown"
    with pytest.raises(DeviceError, match="has no inference time"):
        profile_measurement({"execution_summary": {}}, _device().spec, "qaihub:tflite", "url")


def test_check_finds_the_phone_or_says_how_to_list_them(hub):
    rows = check_device(_device())
    assert rows[0][:2] == ("qai-hub client", True) and rows[1][:2] == ("device", True)
    rows = check_device(NamedDevice(name="x", spec=QaiHubDevice(kind="qaihub", device="Nokia 3310")))
    assert rows[1][1] is False and "qai-hub list-devices" in rows[1][2]


def test_without_the_client_or_a_token_the_error_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "qai_hub", None)  # not installed
    assert check_device(_device())[0] == ("qai-hub client", False,
                                          "the qai-hub client is not installed: pip install 'edgekd[qaihub]'")
    monkeypatch.delitem(sys.modules, "qai_hub")
    pytest.importorskip("qai_hub", reason="the qai-hub extra is not installed")
    monkeypatch.setenv("HOME", str(tmp_path))  # the real client, with no configuration file: no token
    monkeypatch.delenv("QAIHUB_CLIENT_INI", raising=False)
    rows = check_device(_device())
    assert rows[0][1] is True and rows[1][1] is False and "qai-hub configure --api_token" in rows[1][2]


def test_a_qaihub_entry_is_timed_by_its_jobs_only():
    with pytest.raises(ValidationError, match="protocol kind must be median"):
        QaiHubDevice(kind="qaihub", device=PHONE, protocol={"kind": "interleaved"})
    assert QaiHubDevice(kind="qaihub", device=PHONE).protocol.kind == "median"
    assert np.isfinite(QaiHubDevice(kind="qaihub", device=PHONE).timeout_s)
