"""Search features end to end through the command line: searched KD settings, the ablation table, workers."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.pipeline import ablate as ablate_module
from edgekd.train import train as real_train

runner = CliRunner()
BASE = ["--data", "synthetic", "--resolution", "8", "--teacher-epochs", "2", "--proxy-epochs", "1",
        "--distill-epochs", "1"]
TINY = [*BASE, "--trials", "2"]


@pytest.fixture(autouse=True)
def _fast_device(fast_devices_yaml):
    """A quick local device, found as ./devices.yaml like a user's own registry."""
    fast_devices_yaml()


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_searched_kd_settings_are_carried_into_the_final_distillation(tmp_path):
    runs = str(tmp_path / "runs")
    _ok(["search", "--name", "kd", "--runs-dir", runs, *TINY, "--search-kd"])
    _ok(["distill", "--name", "kd", "--runs-dir", runs])
    best = json.loads((tmp_path / "runs/kd/search/best.json").read_text())
    metrics = json.loads((tmp_path / "runs/kd/student/metrics.json").read_text())
    assert metrics["kd"] == best["kd"] and metrics["arch_id"] == best["arch_id"]
    assert runner.invoke(app, ["search", "--name", "bad", "--runs-dir", runs, "--search-kd", "--reward-training",
                               "ce"]).exit_code == 2


def test_ablation_trains_each_search_s_top_students_with_hard_labels_and_with_kd(tmp_path, monkeypatch):
    runs = str(tmp_path / "runs")
    _ok(["search", "--name", "akd", "--runs-dir", runs, *TINY])
    _ok(["search", "--name", "nas", "--runs-dir", runs, *TINY, "--reward-training", "ce"])
    _ok(["ablate", "akd", "nas", "--top", "2", "--epochs", "1", "--runs-dir", runs])
    out = tmp_path / "runs/ablate-akd-nas"
    saved = json.loads((out / "ablation.json").read_text())
    assert set(saved["table"]) == {"searched by KD-guided (akd)", "searched by hard labels (nas)"}
    assert len(saved["results"]) == 2 * 2 * 2  # runs x top students x trainings
    for r in saved["results"].values():
        assert 0 <= r["val_acc"] <= 1 and (r["kd"]["alpha"] == 0) == (r["training"] == "hard labels")
    assert "| searched by |" in (out / "ablation.md").read_text()
    # finished trainings are kept: after losing one result, a second call trains only that one again
    lost = next(iter(saved["results"]))
    (out / "ablation.json").write_text(json.dumps({"results": {k: v for k, v in saved["results"].items()
                                                               if k != lost}}))
    calls = []
    monkeypatch.setattr(ablate_module, "train", lambda *a, **k: calls.append(a) or real_train(*a, **k))
    _ok(["ablate", "akd", "nas", "--top", "2", "--epochs", "1", "--runs-dir", runs])
    assert len(calls) == 1 and json.loads((out / "ablation.json").read_text())["results"] == saved["results"]
    # a second training seed: only the new seed's trainings run, and the table gets intervals and the difference
    _ok(["ablate", "akd", "nas", "--top", "1", "--epochs", "1", "--seeds", "2", "--runs-dir", runs])
    assert len(calls) == 1 + 2 * 2
    seeded = json.loads((out / "ablation.json").read_text())
    assert seeded["seeds"] == 2 and len(seeded["results"]) == len(saved["results"]) + 4
    assert {r["seed"] for r in seeded["results"].values()} == {0, 1}
    for row, cells in seeded["table"].items():
        for training, mean in cells.items():
            low, high = seeded["intervals"][row][training]
            assert low <= mean <= high
    kd_row, ce_row = seeded["table"]
    for training, d in seeded["differences"].items():
        assert d["difference"] == pytest.approx(seeded["table"][kd_row][training] - seeded["table"][ce_row][training])
    assert "minus" in (out / "ablation.md").read_text()

    _ok(["search", "--name", "other", "--runs-dir", runs, *TINY, "--seed", "3"])
    result = runner.invoke(app, ["ablate", "akd", "other", "--runs-dir", runs])
    assert result.exit_code == 2 and "not comparable" in result.output
    assert runner.invoke(app, ["ablate", "akd", "--runs-dir", runs]).exit_code == 2
    result = runner.invoke(app, ["ablate", "akd", "typo", "--runs-dir", runs])
    assert result.exit_code == 6 and "no run at" in result.output and "typo" in result.output


def _edgekd(*args, **kw):
    env = {**os.environ, "EDGEKD_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgekd", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_two_workers_share_a_study_and_a_killed_worker_s_trial_is_retried(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    common = [*BASE, "--trials", "6", "--storage", storage, "--study", "shared", "--target-ms", "0.5", "--runs-dir",
              str(tmp_path / "runs")]
    doomed = _edgekd("search", "--name", "a", *common)
    survivor = _edgekd("search", "--name", "b", *common)
    deadline = time.time() + 120
    victim = None
    while victim is None and time.time() < deadline:  # kill worker a in the middle of a trial
        time.sleep(0.05)
        try:
            study = optuna.load_study(study_name="shared", storage=storage)
        except KeyError:  # not created yet
            continue
        victim = next((t for t in study.get_trials(states=(TrialState.RUNNING,))  # candidate chosen, training
                       if t.user_attrs.get("worker", "").endswith(f":{doomed.pid}") and len(t.params) == 42), None)
    assert victim is not None, doomed.communicate()[0]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    output, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, output

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 1
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert failed.number == victim.number
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == failed.params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 6 <= len(complete) <= 7  # the killed worker may have finished a trial the survivor then counted
    assert {t.user_attrs["worker"].rpartition(":")[2] for t in complete} >= {str(survivor.pid)}
    other_target = [*common[:common.index("--target-ms")], "--target-ms", "0.7", *common[common.index("--runs-dir"):]]
    result = runner.invoke(app, ["search", "--name", "c", *other_target])
    assert result.exit_code == 2 and "need one target" in result.output, result.output


def _running_trials(db) -> int:
    """RUNNING trials in the study file, read-only (Optuna's own storage would create the tables the search is
    creating)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
            return c.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
    except sqlite3.Error:  # not made yet
        return 0


def _group_gone(pgid: int, within_s: float) -> bool:
    deadline = time.time() + within_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_stops_a_two_worker_search_in_one_line_and_the_rerun_finishes_it(tmp_path):
    runs = tmp_path / "runs"
    args = ["search", "--name", "cc", "--runs-dir", str(runs), *BASE, "--trials", "3", "--jobs", "2"]
    # a terminal's Ctrl-C: SIGINT to the whole foreground process group (not ignored, as under a test runner)
    search = _edgekd(*args, start_new_session=True,
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db, deadline = runs / "cc" / "search" / "study.db", time.time() + 120
    while time.time() < deadline and not _running_trials(db):  # until a worker is training a candidate
        time.sleep(0.1)
    os.killpg(search.pid, signal.SIGINT)
    output, _ = search.communicate(timeout=60)
    assert search.returncode == 130, output
    assert "Traceback" not in output and "interrupted: finished trials and epochs are kept" in output, output
    assert _group_gone(search.pid, 15), "a worker outlived Ctrl-C"
    _ok(args)
    trials = optuna.load_study(study_name="cc", storage=f"sqlite:///{db}").get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_jobs_runs_worker_processes_on_one_study(tmp_path, backend, request):
    runs = tmp_path / "runs"
    storage = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    _ok(["search", "--name", "par", "--runs-dir", str(runs), *BASE, "--trials", "4", "--jobs", "2",
         *(["--storage", storage] if storage else [])])
    study = optuna.load_study(study_name="par", storage=storage or f"sqlite:///{runs / 'par/search/study.db'}")
    trials = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]  # asked in a race, never run
    assert all(t.state == TrialState.COMPLETE for t in trials) and len(trials) == 4  # exactly --trials
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert len(json.loads((runs / "par/search/trials.json").read_text())) == len(trials)
