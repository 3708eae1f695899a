import pytest

from edgekd.config import RunConfig, resolve_config
from edgekd.errors import ConfigError


def test_defaults_are_the_embedded_quickstart():
    cfg = RunConfig()
    assert (cfg.data, cfg.teacher, cfg.device) == ("digits", "train", "host-cpu")
    assert (cfg.kd.tau, cfg.kd.alpha) == (1.0, 0.9)


def test_saved_config_is_reused_and_conflicts_are_errors(tmp_path):
    run = tmp_path / "r"
    cfg = resolve_config(run, {"name": "r", "data": "synthetic", "search.trials": 3})
    (run / "teacher").mkdir()  # work done with these settings
    assert resolve_config(run, {"name": "r"}) == cfg
    assert resolve_config(run, {"search.trials": 5}).search.trials == 5  # extending a search is allowed
    with pytest.raises(ConfigError, match="data: saved 'synthetic', given 'digits'"):
        resolve_config(run, {"data": "digits"})


def test_a_run_without_work_takes_new_settings(tmp_path):
    run = tmp_path / "r"
    resolve_config(run, {"name": "r", "data": "imagefolder:/mistyped", "search.trials": 3})
    cfg = resolve_config(run, {"name": "r", "data": "synthetic"})  # the first attempt failed before any work
    assert (cfg.data, cfg.search.trials) == ("synthetic", RunConfig().search.trials)


def test_invalid_values_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"kd\.alpha"):
        resolve_config(tmp_path / "a", {"kd.alpha": 1.5})
    with pytest.raises(ConfigError, match="not both"):
        resolve_config(tmp_path / "b", {"search.target_ms": 1.0, "search.target_mmacs": 5.0})
