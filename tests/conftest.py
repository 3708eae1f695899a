import contextlib
import getpass
import glob
import io
import os
import pickle
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EDGEKD_QUIET", "1")

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

from edgekd.core.config import RunConfig, TrainConfig
from edgekd.core.devices import LocalDevice, MeasurementProtocol, NamedDevice, SshDevice
from edgekd.runtime.ort import has_provider


def _own_cores() -> None:
    """Under pytest-xdist each worker runs on cores of its own (and its subprocesses inherit them): torch processes
    of two workers sharing the cores would each run far slower than alone. Called before torch is imported: its
    OpenMP pool is sized by the cores it sees then, and two threads spinning on one core crawl.

    numpy is imported earlier (by a pytest plugin), and its OpenBLAS pool was started for every core: its threads
    are pinned too and the pool shrunk to the worker's cores. A pool thread left free on the other worker's core
    made small linear algebra wait for that busy core at every call (a 2 s test took 37 s in the suite)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        mine = cores[int(worker.removeprefix("gw")) % len(cores) :: count] or cores
        for thread in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(thread), mine)
        threadpool_limits(len(mine))


_own_cores()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, saying why, where ONNX Runtime has no CUDA provider (``cuda(needs="torch")``:
    where torch sees no CUDA GPU)."""
    import torch

    ready = {"onnxruntime": has_provider("cuda"), "torch": torch.cuda.is_available()}
    reasons = {"onnxruntime": "needs onnxruntime-gpu and an NVIDIA GPU (ONNX Runtime's CUDAExecutionProvider)",
               "torch": "needs an NVIDIA GPU visible to torch (training on --train-device cuda)"}
    for item in items:
        marker = item.get_closest_marker("cuda")
        needs = marker.kwargs.get("needs", "onnxruntime") if marker else None
        if needs and not ready[needs]:
            item.add_marker(pytest.mark.skip(reason=reasons[needs]))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fast_device() -> NamedDevice:
    return NamedDevice(name="test-cpu", spec=LocalDevice(threads=1, warmup=2, repeats=5, processes=1,
                                                         protocol=MeasurementProtocol(budget_s=2)))


@pytest.fixture
def median_device(fast_device) -> NamedDevice:
    """``fast_device`` timed by the median protocol: for tests that need a latency, not the interleaved protocol's
    precision (on a loaded core that protocol spends its whole budget on every model)."""
    return fast_device.model_copy(update={"spec": fast_device.spec.model_copy(
        update={"protocol": MeasurementProtocol(kind="median")})})


@pytest.fixture
def fast_devices_yaml(tmp_path, monkeypatch):
    """Writes ./devices.yaml (the working directory becomes ``tmp_path``), a user's own registry of local ONNX Runtime
    entries timed briefly: the median of a few runs in one process. ``threads`` maps each entry's name to its thread
    count. A test needs a measurement, not its precision; on a loaded core the default interleaved protocol spends
    its whole budget (10 s) on every model."""

    def write(threads: dict[str, int] | None = None) -> Path:
        entries = "".join(f"  {name}:\n    kind: local\n    threads: {n}\n    warmup: 2\n    repeats: 5\n"
                          f"    processes: 1\n    protocol: {{kind: median}}\n"
                          for name, n in (threads or {"host-cpu": 1}).items())
        path = tmp_path / "devices.yaml"
        path.write_text("devices:\n" + entries)
        monkeypatch.chdir(tmp_path)
        return path

    return write


@pytest.fixture
def cuda_device(fast_device) -> NamedDevice:
    """``fast_device`` on ONNX Runtime's CUDA provider."""
    return fast_device.model_copy(update={"spec": fast_device.spec.model_copy(update={"provider": "cuda"})})


def _tiny_config(**fields) -> RunConfig:
    """A whole run on synthetic 8x8 data in seconds (``fields`` override top-level settings)."""
    return RunConfig.model_validate({
        "name": "tiny", "data": "synthetic", "resolution": 8,
        "teacher_train": TrainConfig(epochs=2).model_dump(),
        "search": {"trials": 2, "proxy": {"epochs": 1}, "space_width": 0.25},
        "distill": TrainConfig(epochs=2).model_dump(),
        **fields,
    })


@pytest.fixture(scope="session")
def make_tiny_config():
    """Builds tiny run configs; usable from fixtures of any scope."""
    return _tiny_config


@pytest.fixture
def tiny_config() -> RunConfig:
    return _tiny_config()


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or ([shutil.which("initdb")] if shutil.which(
        "initdb") else [])
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server listening on a Unix socket only (run as the postgres user under root)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb); .ci/run installs Debian's postgresql")
    pytest.importorskip("psycopg", reason="psycopg is missing: pip install -e '.[test]'")
    root = Path(tempfile.mkdtemp(prefix="edgekd-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run([*as_user, bindir / "initdb", "-D", data, "-A", "trust", "-U", "edgekd"], check=True,
                   capture_output=True)
    pg_ctl = [*as_user, bindir / "pg_ctl", "-D", data]
    subprocess.run([*pg_ctl, "-w", "-l", root / "server.log", "-o", f"-k {root} -c listen_addresses=''", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://edgekd@/postgres?host={root}"  # the URL form the README gives
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return _free_port()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 accepting one key for the current user; yields (port, client key path)."""
    if not os.path.exists(SSHD):
        pytest.skip("sshd is not installed (.ci/run installs openssh-server)")
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


@pytest.fixture
def board(sshd, tmp_path):
    """Makes ssh device entries for the test sshd (``board(**changes)``); the board's files go to tmp_path/remote.

    Its benchmark command is edgekd's ONNX Runtime benchmark in this venv."""
    port, key = sshd

    def make(**changes) -> NamedDevice:
        fields = dict(
            kind="ssh", host=f"{getpass.getuser()}@127.0.0.1", port=port, identity_file=str(key),
            ssh_options=["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"],
            remote_dir=str(tmp_path / "remote"), warmup=2, repeats=10,
            command=f"{sys.executable} -m edgekd.runtime.ort_bench {{model}} --threads {{threads}} "
                    f"--warmup {{warmup}} --repeats {{repeats}}",
            pattern=r"median_ms=([0-9.]+)", protocol=MeasurementProtocol(budget_s=1),
        )
        return NamedDevice(name="board", spec=SshDevice(**(fields | changes)))

    return make


@pytest.fixture(scope="session")
def trtexec_emulator() -> str:
    """Command line of the trtexec stand-in (tests/exporters/trtexec_emulator.py) for the test board."""
    return f"{sys.executable} {Path(__file__).parent / 'exporters' / 'trtexec_emulator.py'}"


def _write_cifar(root, per_batch=20):
    """A cifar-10-batches-py folder in the real pickle format, with few images per batch."""
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        labels = [(j + i) % 10 for j in range(per_batch)]
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        data[:, 0] = labels  # first red pixel encodes the label: lets the test check image/label alignment
        with (root / name).open("wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{j}.png".encode() for j in range(per_batch)]}, f)
    with (root / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, f)


def _write_image_tree(root, per_class=6, size=(20, 14)):
    for c, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, color).save(root / f"class{c}" / f"{i}.png")


@pytest.fixture(scope="session")
def write_cifar():
    """Writes a cifar-10-batches-py folder (the real pickle format) at the path given."""
    return _write_cifar


@pytest.fixture(scope="session")
def write_image_tree():
    """Writes a class-per-folder PNG tree (3 classes) at the path given."""
    return _write_image_tree


@pytest.fixture(scope="session")
def thop_conv_macs():
    """thop's MACs of an ArchSpec's convolutions and classifier (BatchNorm not counted: it folds into the convs)."""
    import torch
    from thop import profile
    from torch import nn

    from edgekd.core.arch import build

    def nothing(m, x, y):
        m.total_ops += torch.zeros(1, dtype=torch.float64)

    def count(spec) -> float:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            macs, _ = profile(build(spec).eval(), inputs=(torch.zeros(1, *spec.input_shape),), verbose=False,
                              custom_ops={nn.BatchNorm2d: nothing})
        return float(macs)

    return count
