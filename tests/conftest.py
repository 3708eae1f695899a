import os

os.environ.setdefault("EDGEKD_QUIET", "1")

import pytest

from edgekd.config import RunConfig, TrainConfig
from edgekd.devices import LocalDevice, NamedDevice


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fast_device() -> NamedDevice:
    return NamedDevice(name="test-cpu", spec=LocalDevice(threads=1, warmup=2, repeats=5, processes=1))


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
