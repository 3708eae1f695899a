"""The ssh device kind end to end, against a real OpenSSH server started on 127.0.0.1 (conftest's ``sshd``).

The "remote" side runs a real ONNX Runtime benchmark (edgekd's ort_bench in this venv) on the copied model.
"""

import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.errors import DeviceError
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.runtime.ssh import SshBackend
from edgekd.spaces import make_space


@pytest.fixture
def spec():
    space = make_space("mnas", 8, 3, 10, width=0.25)
    return space.decode(space.sample(random.Random(0)))


def test_a_model_is_copied_benchmarked_remotely_parsed_and_cached(board, tmp_path, spec, monkeypatch):
    device = board()
    latency = MeasuredLatency(device, tmp_path / "lat.sqlite")
    m = latency.measure(spec)
    assert m.median_ms > 0 and m.protocol == "interleaved" and m.runtime.startswith("ssh:")
    assert m.low_ms <= m.median_ms <= m.high_ms and m.rounds >= 3  # its command run alternately with the reference's
    assert len(list((tmp_path / "remote").glob("*.onnx"))) == 2  # the model and the reference really travelled
    calls = []
    monkeypatch.setattr(SshBackend, "measure_onnx", lambda *a: calls.append(a))
    assert MeasuredLatency(device, tmp_path / "lat.sqlite").measure(spec) == m and not calls



def test_a_file_already_on_the_board_is_not_copied_again_and_a_cut_copy_is_not_trusted(board, tmp_path):
    backend = SshBackend(board().spec)
    local = tmp_path / "engine.plan"
    local.write_bytes(b"x" * 4096)
    copies = []
    run = backend._run
    backend._run = lambda argv, what: copies.append(argv[0]) or run(argv, what)
    remote = Path(backend.upload(local))
    assert copies.count("scp") == 1 and remote.read_bytes() == local.read_bytes()
    assert str(backend.upload(local)) == str(remote) and copies.count("scp") == 1

    remote.unlink()
    cut = remote.with_name(remote.name + ".0123.partial")
    cut.write_bytes(b"x" * 100)  # another process's copy, cut short
    assert backend.upload(local) == str(remote) and remote.read_bytes() == local.read_bytes()
    assert copies.count("scp") == 2 and list(remote.parent.glob("*.partial")) == [cut]


def test_check_reports_the_board_and_its_benchmark_binary(board, tmp_path):
    rows = SshBackend(board().spec).check()
    assert rows[0][:2] == ("ssh", True) and "Linux" in rows[0][2]
    assert rows[1][:2] == ("benchmark binary", True)
    missing = SshBackend(board(command="no-such-benchmark {model}").spec).check()
    assert missing[1][:2] == ("benchmark binary", False)
    jetson = SshBackend(board(trtexec="/opt/no-such/trtexec").spec).check()
    assert jetson[2] == ("trtexec", False, "/opt/no-such/trtexec not found on the device")


def test_output_not_matching_the_pattern_is_a_clear_error(board, tmp_path, spec):
    device = board(pattern=r"latency=([0-9.]+)us")
    with pytest.raises(DeviceError, match=r"does not match pattern .*median_ms="):
        MeasuredLatency(device, tmp_path / "lat.sqlite").measure(spec)


def test_an_unreachable_board_is_a_clear_error(board, free_port, tmp_path, spec):
    device = board(port=free_port, identity_file=str(tmp_path / "no-key"), timeout_s=20)
    with pytest.raises(DeviceError, match=r"creating the remote folder on .*127\.0\.0\.1 failed"):
        MeasuredLatency(device, tmp_path / "lat.sqlite").measure(spec)


def test_devices_check_on_the_command_line(board, tmp_path):
    registry = tmp_path / "devices.yaml"
    registry.write_text(yaml.safe_dump({"devices": {
        "board": board().spec.model_dump(exclude_unset=True),
        "bare-board": board(command="no-such-benchmark {model}").spec.model_dump(exclude_unset=True),
    }}))
    check = ["devices", "check", "--devices-file", str(registry)]
    assert CliRunner().invoke(app, [*check[:2], "board", *check[2:]]).exit_code == 0
    result = CliRunner().invoke(app, [*check[:2], "bare-board", *check[2:]])
    assert result.exit_code == 4 and "device 'bare-board' is not ready: benchmark binary" in result.output
