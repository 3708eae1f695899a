"""The drift-cancelling protocol: the interleaved ratio against a step change of host speed (simulated and real),
adaptive repeats (precision reached on a steady device, budget spent on a wild one), drift redone, the stability
probe's verdict, intervals in the cache, weighted predictor fits, and a straddling candidate re-measured."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.core.arch import build
from edgekd.core.devices import MeasurementProtocol
from edgekd.core.measurement import Measurement
from edgekd.exporters.onnx import export_onnx
from edgekd.latency_models.measured import MeasuredLatency, reference_arch
from edgekd.latency_models.predictors import fit_predictor, interval_weights
from edgekd.latency_models.stability import Stability, judge
from edgekd.runtime.ort import open_onnx
from edgekd.runtime.protocol import (
    Interleaved,
    Settings,
    block_sampler,
    calls_per_block,
    combine_passes,
    interleave,
)
from edgekd.spaces import make_space

BURN = "import time\nend = time.time() + 30\nwhile time.time() < end:\n    pass\n"


class FakeHost:
    """A host whose speed steps from 1 to ``step`` after ``switch_after`` samples, with multiplicative noise;
    each sample advances a fake clock by its own duration (one block of ten calls)."""

    def __init__(self, step: float = 1.0, switch_after: int = 10**9, noise: float = 0.005, seed: int = 0) -> None:
        self.step, self.switch_after, self.noise = step, switch_after, noise
        self.rng, self.samples, self.now = random.Random(seed), 0, 0.0

    def sampler(self, cost_ms: float):
        def sample() -> float:
            speed = self.step if self.samples >= self.switch_after else 1.0
            self.samples += 1
            ms = cost_ms * speed * math.exp(self.rng.gauss(0, self.noise))
            self.now += 10 * ms / 1e3
            return ms

        return sample

    def clock(self) -> float:
        return self.now


def test_the_ratio_cancels_a_step_change_of_host_speed():
    host = FakeHost(step=2.0, switch_after=30)  # the host halves its speed mid-measurement
    samples: list[float] = []
    candidate = host.sampler(3.0)
    result = interleave(lambda: samples.append(candidate()) or samples[-1], host.sampler(1.0),
                        Settings(precision=0.01, budget_s=60, min_rounds=40), clock=host.clock)
    assert result.ratio == pytest.approx(3.0, rel=0.01)
    assert result.low <= 3.0 <= result.high
    assert max(samples) > 5.5 and min(samples) < 3.1  # the raw candidate times saw both speeds
    assert result.reference_cv > 0.2  # and the reference shows that the host moved


def test_adaptive_repeats_stop_at_the_precision_on_a_steady_device_and_at_the_budget_on_a_wild_one():
    steady = FakeHost(noise=0.01)
    result = interleave(steady.sampler(2.0), steady.sampler(1.0), Settings(precision=0.02, budget_s=5),
                        clock=steady.clock)
    assert result.converged and result.half_width <= 0.02 and result.rounds < 50
    wild = FakeHost(noise=0.8, seed=1)
    result = interleave(wild.sampler(2.0), wild.sampler(1.0), Settings(precision=0.001, budget_s=0.5),
                        clock=wild.clock)
    assert not result.converged and result.half_width > 0.001
    assert 0.5 <= result.seconds < 0.6  # stopped at the budget, not before


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory):
    return export_onnx(build(reference_arch((1, 16, 16))), (1, 16, 16), tmp_path_factory.mktemp("ref") / "ref.onnx")


def test_a_real_load_started_mid_measurement_leaves_a_known_ratio_in_place(reference_file):
    run = open_onnx(reference_file)
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 16), dtype=np.float32)
    calls = calls_per_block(run, x, 5)
    reference = block_sampler(run, x, calls)
    twice = block_sampler(lambda batch: (run(batch), run(batch)), x, calls)  # exactly twice the reference's work
    burners: list[subprocess.Popen] = []
    rounds = 0

    def candidate() -> float:
        nonlocal rounds
        rounds += 1
        if rounds == 40:  # the load starts in the middle: more CPU-bound processes than this machine has cores
            burners.extend(subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(3))
        return twice()

    try:
        result = interleave(candidate, reference, Settings(precision=0.02, budget_s=8, min_rounds=80))
    finally:
        for b in burners:
            b.kill()
    assert burners and result.rounds >= 80
    assert result.ratio == pytest.approx(2.0, rel=0.1)


def _probe(cv: float, level: float, half: float) -> Interleaved:
    return Interleaved(1.0, 1 - half, 1 + half, 100, 5.0, level, level, cv, half <= 0.03)


def test_the_stability_verdict_names_what_to_change():
    steady = judge(Stability(0.03, 0.15, [_probe(0.02, 1.0, 0.005), _probe(0.03, 1.05, 0.006)],
                             {"runnable tasks": "1", "cores": "2"}))
    assert steady.fit and not steady.advice
    busy = judge(Stability(0.03, 0.15, [_probe(0.02, 1.0, 0.005)] * 2, {"runnable tasks": "5", "cores": "2"}))
    assert not busy.fit and "5 tasks are runnable on 2 cores" in busy.advice[0]
    loaded = judge(Stability(0.03, 0.15, [_probe(0.4, 1.0, 0.01), _probe(0.1, 1.9, 0.05)],
                             {"governor": "powersave", "load average": "3.1 2.0 1.2", "temperature": "71 C"}))
    assert not loaded.fit
    text = " ".join(loaded.advice)
    assert "stop other work" in text and "3.1" in text and "powersave" in text and "cool" in text
    assert "budget" in text  # the ratio did not reach the precision either


def test_devices_check_stability_reports_a_loaded_machine_as_unfit(tmp_path, monkeypatch):
    from edgekd.cli import app

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "250")
    (tmp_path / "devices.yaml").write_text("devices:\n  cpu:\n    kind: local\n    protocol: {drift_bound: 0.1}\n")
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(4)]
    try:
        result = CliRunner().invoke(app, ["devices", "check", "cpu", "--stability", "--seconds", "4", "--input",
                                          "1x16x16", "--devices-file", str(tmp_path / "devices.yaml")])
    finally:
        for b in burners:
            b.kill()
    assert result.exit_code == 4, result.output
    assert "unfit for a search" in result.output and "stop other work" in result.output
    assert "fit for a search" in result.output and "load average" in result.output


def test_the_interleaved_protocol_records_its_interval_and_the_cache_keeps_it(tmp_path, fast_device):
    space = make_space("mnas", 16, 1, 10, width=0.25)
    spec = space.decode(space.sample(random.Random(0)))
    latency = MeasuredLatency(fast_device, tmp_path / "lat.sqlite")
    m = latency.measure(spec)
    assert m.protocol == "interleaved" and m.low_ms <= m.median_ms <= m.high_ms
    assert m.median_ms == pytest.approx(m.ratio * m.reference_ms)
    assert m.raw_ms > 0 and m.raw_reference_ms > 0 and m.rounds >= 10
    assert MeasuredLatency(fast_device, tmp_path / "lat.sqlite").measure(spec) == m
    old = Measurement(0.5, 0.4, 0.6, 100, 1, 1, "onnxruntime-x")  # a cache entry from before the protocol
    assert not old.straddles(0.5) and old.protocol == "median"


def test_a_measurement_during_which_the_host_drifted_is_redone(tmp_path, fast_device, monkeypatch):
    import edgekd.latency_models.measured as measured

    space = make_space("mnas", 16, 1, 10, width=0.25)
    specs = [space.decode(space.sample(random.Random(i))) for i in range(2)]
    # only the injected drift may count: a loaded CI host must not make the real measurements drift too
    loose = fast_device.spec.protocol.model_copy(update={"drift_bound": 0.5})
    device = fast_device.model_copy(update={"spec": fast_device.spec.model_copy(update={"protocol": loose})})
    latency = MeasuredLatency(device, tmp_path / "lat.sqlite")
    real = measured.measure_against
    drifted = Interleaved(2.0, 1.9, 2.1, 10, 0.1, 1.0, 1.0, reference_cv=0.9, converged=True)
    calls = []

    def first_drifts(backend, paths, *args):
        calls.append(len(paths))
        found = real(backend, paths, *args)
        return [drifted, *found[1:]] if len(calls) == 1 else found

    monkeypatch.setattr(measured, "measure_against", first_drifts)
    ms = latency.measure_many(specs)
    assert calls == [2, 1] and latency.redone == 1
    assert ms[0].redone == 1 and ms[0].reference_cv < 0.9 and ms[1].redone == 0


def test_predictors_trust_precise_measurements_more():
    space = make_space("mnas", 16, 1, 10, width=0.25)
    specs = [space.decode(space.sample(random.Random(i))) for i in range(40)]
    truth = {s.id: 0.05 + 0.02 * len(s.blocks) for s in specs}
    measurements, pairs = [], []
    for i, s in enumerate(specs):
        noisy = i % 2 == 1  # every other one measured badly: 60% off, and its interval says so
        ms = truth[s.id] * (1.6 if noisy else 1.0)
        half = 0.5 if noisy else 0.01
        measurements.append(Measurement(ms, ms, ms, 10, 1, 1, "x", low_ms=ms * (1 - half), high_ms=ms * (1 + half)))
        pairs.append((s, ms))
    weights = interval_weights(measurements)
    assert weights.mean() == pytest.approx(1.0) and weights[0] > 100 * weights[1]
    clean = [s for i, s in enumerate(specs) if i % 2 == 0]

    def error(p) -> float:
        return float(np.mean([abs(p.predict(s) - truth[s.id]) / truth[s.id] for s in clean]))

    assert error(fit_predictor("flops", pairs, weights=weights)) < 0.5 * error(fit_predictor("flops", pairs))
    assert np.all(interval_weights([Measurement(1, 1, 1, 1, 1, 1, "x")] * 3) == 1)


def test_a_candidate_whose_interval_straddles_the_target_is_measured_again(tmp_path, fast_device, tiny_config):
    import optuna

    from edgekd.core.config import TrainConfig
    from edgekd.data import load_data
    from edgekd.evaluators.proxy import KDProxyEvaluator
    from edgekd.pipeline.reward import Reward
    from edgekd.pipeline.search.objective import TrialObjective

    space = make_space("mnas", 8, 3, 10, width=0.25)
    choices = space.sample(random.Random(0))
    spec = space.decode(choices)
    latency = MeasuredLatency(fast_device, tmp_path / "lat.sqlite")
    first = latency.measure(spec)
    evaluator = KDProxyEvaluator(load_data("synthetic", resolution=8), None, TrainConfig(epochs=1), tiny_config.kd, 0)

    def trial_attrs(target: float) -> dict:
        study = optuna.create_study(direction="maximize")
        study.enqueue_trial(choices)
        study.optimize(TrialObjective(tiny_config, space, evaluator, latency, Reward(target)), n_trials=1)
        return study.trials[0].user_attrs

    straddling = trial_attrs(first.median_ms)  # the target in the middle of the candidate's interval
    assert straddling["remeasured"] and straddling["latency_low_ms"] <= straddling["latency_high_ms"]
    again = latency.measure(spec)
    assert again.seconds != first.seconds and straddling["latency_ms"] == again.median_ms  # measured anew, cached
    low, high = straddling["reward_interval"]
    assert low <= straddling["reward"] <= high
    assert "remeasured" not in trial_attrs(again.high_ms * 3)


def test_a_median_protocol_device_measures_as_before(tmp_path, fast_device):
    device = fast_device.model_copy(update={"spec": fast_device.spec.model_copy(
        update={"protocol": MeasurementProtocol(kind="median")})})
    space = make_space("mnas", 16, 1, 10, width=0.25)
    m = MeasuredLatency(device, tmp_path / "lat.sqlite").measure(space.decode(space.sample(random.Random(0))))
    assert m.protocol == "median" and m.low_ms is None and m.repeats == 5
    assert device.fingerprint != fast_device.fingerprint


def test_passes_combine_into_their_geometric_mean_with_an_interval_from_their_spread():
    tight = [Interleaved(r, r * 0.99, r * 1.01, 20, 1.0, r, 1.0, 0.01, True) for r in (2.0, 2.2)]
    both = combine_passes(tight)
    assert both.ratio == pytest.approx(math.sqrt(2.0 * 2.2))
    assert both.low < 2.0 < 2.2 < both.high  # the passes disagree beyond their own intervals: the spread counts
    assert both.rounds == 40 and both.seconds == 2.0
    wide = [Interleaved(2.0, 1.0, 4.0, 10, 1.0, 2.0, 1.0, 0.01, False)] * 2
    assert combine_passes(wide).high < 4.0 and not combine_passes(wide).converged  # two agreeing passes: narrower
    assert combine_passes(tight[:1]) is tight[0]


def test_a_device_with_passes_times_every_model_once_per_pass_every_other_pass_reversed(tmp_path, fast_device,
                                                                                        monkeypatch):
    import edgekd.latency_models.measured as measured

    space = make_space("mnas", 16, 1, 10, width=0.25)
    specs = [space.decode(space.sample(random.Random(i))) for i in range(4)]
    protocol = fast_device.spec.protocol.model_copy(update={"passes": 3, "drift_bound": 10, "budget_s": 1})
    device = fast_device.model_copy(update={"spec": fast_device.spec.model_copy(update={"protocol": protocol})})
    assert device.fingerprint != fast_device.fingerprint  # passes count among the settings once set
    real, orders = measured.measure_against, []

    def recorded(backend, paths, *args):
        orders.append([p.stem for p in paths])
        return real(backend, paths, *args)

    monkeypatch.setattr(measured, "measure_against", recorded)
    ms = MeasuredLatency(device, tmp_path / "lat.sqlite").measure_many(specs)
    assert orders == [orders[0], orders[0][::-1], orders[0]] and len(set(orders[0])) == 4
    assert all(m.rounds >= 3 * 10 and m.low_ms <= m.median_ms <= m.high_ms for m in ms)


def test_an_entry_from_before_passes_keeps_its_fingerprint(fast_device):
    import hashlib
    import json

    settings = fast_device.spec.model_dump()
    del settings["protocol"]["passes"]
    old = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    assert fast_device.fingerprint == f"test-cpu-{old}"
