"""The ssh device kind end to end, against a real OpenSSH server started on 127.0.0.1 for these tests.

The "remote" side runs a real ONNX Runtime benchmark (edgekd's ort_bench in this venv) on the copied model.
"""

import getpass
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.devices import NamedDevice, SshDevice
from edgekd.errors import DeviceError
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.latency_models.ssh import SshBackend
from edgekd.pipeline.space import make_space

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not os.path.exists(SSHD),
                                reason="sshd is not installed (.ci/run installs openssh-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 accepting one key for the current user; yields (port, client key path)."""
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"sshd did not start: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    yield port, d / "client_key"
    proc.terminate()
    proc.wait(timeout=10)


def _device(sshd, tmp_path, **changes) -> NamedDevice:
    port, key = sshd
    fields = dict(
        kind="ssh", host=f"{getpass.getuser()}@127.0.0.1", port=port, identity_file=str(key),
        ssh_options=["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"],
        remote_dir=str(tmp_path / "remote"), warmup=2, repeats=10,
        command=f"{sys.executable} -m edgekd.latency_models.ort_bench {{model}} --threads {{threads}} "
                f"--warmup {{warmup}} --repeats {{repeats}}",
        pattern=r"median_ms=([0-9.]+)",
    )
    return NamedDevice(name="board", spec=SshDevice(**(fields | changes)))


@pytest.fixture
def spec():
    space = make_space("mnas", 8, 3, 10, width=0.25)
    return space.decode(space.sample(random.Random(0)))


def test_a_model_is_copied_benchmarked_remotely_parsed_and_cached(sshd, tmp_path, spec, monkeypatch):
    device = _device(sshd, tmp_path)
    latency = MeasuredLatency(device, tmp_path / "lat.sqlite")
    m = latency.measure(spec)
    assert m.median_ms > 0 and m.repeats == 10 and m.runtime.startswith("ssh:")
    assert len(list((tmp_path / "remote").glob("*.onnx"))) == 1  # the model really travelled
    calls = []
    monkeypatch.setattr(SshBackend, "measure_onnx", lambda *a: calls.append(a))
    assert MeasuredLatency(device, tmp_path / "lat.sqlite").measure(spec) == m and not calls


def test_check_reports_the_board_and_its_benchmark_binary(sshd, tmp_path):
    rows = SshBackend(_device(sshd, tmp_path).spec).check()
    assert rows[0][:2] == ("ssh", True) and "Linux" in rows[0][2]
    assert rows[1][:2] == ("benchmark binary", True)
    missing = SshBackend(_device(sshd, tmp_path, command="no-such-benchmark {model}").spec).check()
    assert missing[1][:2] == ("benchmark binary", False)


def test_output_not_matching_the_pattern_is_a_clear_error(sshd, tmp_path, spec):
    device = _device(sshd, tmp_path, pattern=r"latency=([0-9.]+)us")
    with pytest.raises(DeviceError, match=r"does not match pattern .*median_ms="):
        MeasuredLatency(device, tmp_path / "lat.sqlite").measure(spec)


def test_an_unreachable_board_is_a_clear_error(tmp_path, spec):
    device = _device((_free_port(), tmp_path / "no-key"), tmp_path, timeout_s=20)
    with pytest.raises(DeviceError, match=r"creating the remote folder on .*127\.0\.0\.1 failed"):
        MeasuredLatency(device, tmp_path / "lat.sqlite").measure(spec)


def test_devices_check_on_the_command_line(sshd, tmp_path):
    registry = tmp_path / "devices.yaml"
    registry.write_text(yaml.safe_dump({"devices": {
        "board": _device(sshd, tmp_path).spec.model_dump(),
        "bare-board": _device(sshd, tmp_path, command="no-such-benchmark {model}").spec.model_dump(),
    }}))
    check = ["devices", "check", "--devices-file", str(registry)]
    assert CliRunner().invoke(app, [*check[:2], "board", *check[2:]]).exit_code == 0
    result = CliRunner().invoke(app, [*check[:2], "bare-board", *check[2:]])
    assert result.exit_code == 4 and "device 'bare-board' is not ready: benchmark binary" in result.output
