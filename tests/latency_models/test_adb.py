"""The adb device kind end to end against a stand-in ``adb`` (adb_standin.py: a phone whose file system is a
folder, its onnxruntime_perf_test played by ONNX Runtime with the tool's output format). No real phone."""

from __future__ import annotations

import itertools
import random
import shlex

from edgekd.core.devices import AdbDevice, MeasurementProtocol, NamedDevice
from edgekd.latency_models import check_device
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.runtime import device_conditions
from edgekd.runtime.adb import AdbBackend
from edgekd.spaces import make_space

BINARY = "/data/local/tmp/onnxruntime_perf_test"


def _device(binary: str = BINARY) -> NamedDevice:
    # drift_bound 10: a busy test host must not make a measurement be redone, which would add calls to the log
    protocol = MeasurementProtocol(budget_s=1, drift_bound=10)
    return NamedDevice(name="phone", spec=AdbDevice(kind="adb", tool="onnxruntime_perf_test", binary=binary,
                                                    repeats=20, protocol=protocol))


def test_a_model_is_timed_interleaved_with_the_reference_on_the_phone(phone, tmp_path):
    space = make_space("mnas", 16, 1, 10, width=0.25)
    spec = space.decode(space.sample(random.Random(0)))
    m = MeasuredLatency(_device(), tmp_path / "lat.sqlite").measure(spec)
    assert m.protocol == "interleaved" and m.runtime == "adb:onnxruntime_perf_test"
    assert m.low_ms <= m.median_ms <= m.high_ms and m.rounds >= 3 and m.redone == 0
    runs = [shlex.split(line)[-1] for line in (phone / "adb-calls.log").read_text().splitlines()
            if "onnxruntime_perf_test -I" in line]
    reference, timed = runs[0], runs[1:]  # the reference timed alone once, to calibrate it; then interleaved
    assert timed[0] == timed[-1] == reference and len(timed) == 2 * m.rounds + 1
    assert len(set(timed)) == 2 and all(a != b for a, b in itertools.pairwise(timed))


def test_devices_check_finds_the_binary_and_reads_the_phones_state(phone):
    assert all(ok for _, ok, _ in check_device(_device()))
    rows = {what: (ok, detail) for what, ok, detail in check_device(_device("/data/local/tmp/nothing"))}
    assert rows["adb"][0] and not rows["onnxruntime_perf_test"][0]
    assert "adb push onnxruntime_perf_test /data/local/tmp/nothing" in rows["onnxruntime_perf_test"][1]
    state = device_conditions(AdbBackend(_device().spec))
    assert "load average" in state and state["cores"].isdigit()
