"""Kill -9 at random moments: a search (one process and --jobs 2) and a distillation, rerun until done, end as an
uninterrupted run does (slow: `pytest -m slow`)."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

TINY = ["--data", "synthetic", "--resolution", "8", "--teacher-epochs", "2", "--proxy-epochs", "2",
        "--train-device", "cpu", "--threads", "1"]


def _edgekd(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgekd", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _until_done(args: list[str], env: dict, kills: int, rng: random.Random, window: tuple[float, float]) -> int:
    """Run ``args`` again and again, killing the process group (-9) at a random moment of ``window`` seconds,
    ``kills`` times; then once more to the end. Returns how many kills landed before the run finished."""
    landed = 0
    for _ in range(kills):
        proc = _edgekd(args, env)
        try:
            proc.wait(timeout=rng.uniform(*window))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            landed += 1
            continue
        assert proc.returncode == 0, proc.stderr.read()
    last = _edgekd(args, env)
    _, err = last.communicate(timeout=900)
    assert last.returncode == 0, err
    return landed


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'search' / 'study.db'}")


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "EDGEKD_CACHE": str(tmp_path / "cache"), "EDGEKD_QUIET": "1", "OMP_NUM_THREADS": "1"}


def test_a_search_killed_at_random_moments_ends_as_an_uninterrupted_one(tmp_path, env):
    runs, rng = tmp_path / "runs", random.Random(0)
    # a MACs target: the reward, and so what evolution breeds from, does not depend on measured (noisy) latency
    args = [*TINY, "--trials", "6", "--strategy", "evolution", "--target-mmacs", "1.0", "--runs-dir", str(runs)]
    straight = _edgekd(["search", "--name", "straight", *args], env)
    assert straight.wait(timeout=900) == 0, straight.stderr.read()
    landed = _until_done(["search", "--name", "killed", *args], env, kills=12, rng=rng, window=(2.0, 12.0))
    assert landed >= 8
    trials = _study(runs / "killed").get_trials()
    complete = [t.params for t in trials if t.state == TrialState.COMPLETE]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert complete == [t.params for t in _study(runs / "straight").get_trials() if t.state == TrialState.COMPLETE]
    records = json.loads((runs / "killed" / "search" / "trials.json").read_text())
    assert len(records) == 6 and len({r["trial"] for r in records}) == 6


def test_a_two_worker_search_killed_at_random_moments_finishes_exactly_its_trials(tmp_path, env):
    runs, rng = tmp_path / "runs", random.Random(1)
    args = ["search", "--name", "jobs", *TINY, "--trials", "6", "--jobs", "2", "--runs-dir", str(runs)]
    landed = _until_done(args, env, kills=8, rng=rng, window=(3.0, 15.0))
    assert landed >= 4
    trials = _study(runs / "jobs").get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_a_distillation_killed_at_random_moments_resumes_to_the_uninterrupted_weights(tmp_path, env):
    runs, rng = tmp_path / "runs", random.Random(2)
    common = [*TINY, "--trials", "1", "--runs-dir", str(runs)]
    for name in ("straight", "killed"):
        done = _edgekd(["search", "--name", name, *common, "--distill-epochs", "12"], env)
        assert done.wait(timeout=900) == 0, done.stderr.read()
    straight = _edgekd(["distill", "--name", "straight", "--runs-dir", str(runs), "--checkpoint-steps", "3"], env)
    assert straight.wait(timeout=900) == 0, straight.stderr.read()
    landed = _until_done(["distill", "--name", "killed", "--runs-dir", str(runs), "--checkpoint-steps", "3"], env,
                         kills=10, rng=rng, window=(3.0, 9.0))
    assert landed >= 6

    def curves(name):
        return json.loads((runs / name / "student" / "curves.json").read_text())

    assert [c["metrics"] for c in curves("killed")] == [c["metrics"] for c in curves("straight")]
    assert [c["eval_acc"] for c in curves("killed")] == [c["eval_acc"] for c in curves("straight")]
