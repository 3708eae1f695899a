import pytest

from edgekd.core.config import RunConfig, resolve_config
from edgekd.core.errors import ConfigError


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
    with pytest.raises(ConfigError, match="torchvision:NAME teacher; teacher 'train' takes none"):
        resolve_config(tmp_path / "c", {"teacher_weights": "resnet18.pt"})


def test_an_invalid_value_is_named_before_a_clash_with_the_saved_run(tmp_path):
    run = tmp_path / "r"
    resolve_config(run, {"name": "r", "data": "synthetic"})
    (run / "teacher").mkdir()
    with pytest.raises(ConfigError, match=r"invalid run configuration: kd\.alpha"):
        resolve_config(run, {"kd.alpha": 1.5})


def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ["../../escaped", "/abs/run", "a/b", ".hidden", "", "x" * 101, "a b"])
def test_a_run_name_is_one_path_segment(tmp_path, name):
    from typer.testing import CliRunner

    from edgekd.cli import app

    runs = tmp_path / "deep" / "runs"
    runs.mkdir(parents=True)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["search", "--name", name, "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "invalid run name" in result.output
    assert _snapshot(tmp_path) == before  # nothing written, inside or outside the runs directory


def test_runs_dir_that_is_a_file_empty_formats_and_unbounded_values_are_refused(tmp_path):
    from typer.testing import CliRunner

    from edgekd.cli import app

    runner = CliRunner()
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, ["search", "--runs-dir", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    result = runner.invoke(app, ["export", "--runs-dir", str(tmp_path / "r"), "--formats", ""])
    assert result.exit_code == 2 and "at least one format" in result.output
    for option, value, field in (("--trials", "10000001", "search.trials"), ("--jobs", "5000", "search.jobs"),
                                 ("--distill-epochs", "10000000", "distill.epochs"),
                                 ("--resolution", "100000", "resolution"), ("--seed", "-1", "seed"),
                                 ("--kd-tau", "1e9", "kd.tau"), ("--workers", "1000", "runtime.workers")):
        result = runner.invoke(app, ["search", "--runs-dir", str(tmp_path / "r"), option, value])
        assert result.exit_code == 2 and field in result.output, (option, result.output)


def test_a_storage_password_never_reaches_run_files(tmp_path, monkeypatch):
    url = "postgresql+psycopg://edgekd:s3cret@db.example/studies"
    cfg = resolve_config(tmp_path / "r", {"name": "r", "search.storage": url})
    assert cfg.search.storage == url  # this process connects with it
    saved = (tmp_path / "r" / "config.json").read_text()
    assert "s3cret" not in saved and "edgekd:***@db.example" in saved
    (tmp_path / "r" / "teacher").mkdir()
    again = resolve_config(tmp_path / "r", {"name": "r", "search.storage": url})  # the same storage, given again
    assert again.search.storage == url
    resumed = resolve_config(tmp_path / "r", {"name": "r"})
    from edgekd.pipeline.search.storage import open_storage

    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="run files keep no passwords"):
        open_storage(resumed.search.storage)
