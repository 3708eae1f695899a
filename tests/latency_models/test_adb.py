"""The adb device kind end to end against a stand-in ``adb`` (adb_standin.py: a phone whose file system is a
folder, its onnxruntime_perf_test played by ONNX Runtime with the tool's output format). No real phone."""

from __future__ import annotations

import itertools
import os
import random
import shlex
import sys
from pathlib import Path

import pytest

from edgekd.core.devices import AdbDevice, MeasurementProtocol, NamedDevice
from edgekd.latency_models import check_device
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.runtime import device_conditions
from edgekd.runtime.adb import AdbBackend
from edgekd.spaces import make_space

BINARY = "/data/local/tmp/onnxruntime_perf_test"


@pytest.fixture
def phone(tmp_path, monkeypatch) -> Path:
    """The stand-in phone's root folder, with ``adb`` on PATH and the perf test binary installed."""
    bindir, root = tmp_path / "bin", tmp_path / "phone"
    bindir.mkdir()
    (root / BINARY.lstrip("/")).parent.mkdir(parents=True)
    (root / BINARY.lstrip("/")).write_text("")
    adb = bindir / "adb"
    standin = Path(__file__).with_name("adb_standin.py")
    adb.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(standin))} "$@"\n')
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADB_STANDIN_ROOT", str(root))
    return root


def _device(binary: str = BINARY) -> NamedDevice:
    return NamedDevice(name="phone", spec=AdbDevice(kind="adb", tool="onnxruntime_perf_test", binary=binary,
                                                    repeats=20, protocol=MeasurementProtocol(budget_s=1)))


def test_a_model_is_timed_interleaved_with_the_reference_on_the_phone(phone, tmp_path):
    space = make_space("mnas", 16, 1, 10, width=0.25)
    spec = space.decode(space.sample(random.Random(0)))
    m = MeasuredLatency(_device(), tmp_path / "lat.sqlite").measure(spec)
    assert m.protocol == "interleaved" and m.runtime == "adb:onnxruntime_perf_test"
    assert m.low_ms <= m.median_ms <= m.high_ms and m.rounds >= 3
    runs = [shlex.split(line)[-1] for line in (phone / "adb-calls.log").read_text().splitlines()
            if "onnxruntime_perf_test -I" in line]
    reference, timed = runs[0], runs[1:]  # the reference timed alone once, to calibrate it; then interleaved
    assert timed[0] == timed[-1] == reference and len(timed) == 2 * m.rounds + 1
    assert len(set(timed)) == 2 and all(a != b for a, b in itertools.pairwise(timed))


def test_devices_check_finds_the_binary_and_reads_the_phones_state(phone):
    assert all(ok for _, ok, _ in check_device(_device()))
    missing = dict((what, ok) for what, ok, _ in check_device(_device("/data/local/tmp/nothing")))
    assert missing["adb"] and not missing["benchmark binary"]
    state = device_conditions(AdbBackend(_device().spec))
    assert "load average" in state and state["cores"].isdigit()
