import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

os.environ.setdefault("EDGEKD_QUIET", "1")

import pytest

from edgekd.config import RunConfig, TrainConfig
from edgekd.devices import LocalDevice, NamedDevice
from edgekd.ort import has_provider


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, saying why, where ONNX Runtime has no CUDA provider."""
    if has_provider("cuda"):
        return
    skip = pytest.mark.skip(reason="needs onnxruntime-gpu and an NVIDIA GPU (ONNX Runtime's CUDAExecutionProvider)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fast_device() -> NamedDevice:
    return NamedDevice(name="test-cpu", spec=LocalDevice(threads=1, warmup=2, repeats=5, processes=1))


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
    pytest.importorskip("psycopg2", reason="psycopg2 is missing: pip install -e '.[test]'")
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
        yield f"postgresql+psycopg2://edgekd@/postgres?host={root}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
