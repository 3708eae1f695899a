"""`edgekd profile`: measures real architectures once (resumable), fits every predictor, reports held-out."""

import json

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.latency_models.predictors import fit_kinds, load_predictor
from edgekd.pipeline.profile import profile_device, sample_archs
from edgekd.runtime.local import LocalBackend
from edgekd.spaces import RestrictedSpace, make_space


def test_profile_fits_every_kind_and_resumes_from_cached_measurements(tmp_path, fast_device, monkeypatch):
    full = make_space("mnas", 8, 3, 10, width=0.25)
    # Stages 0-4 fixed (a stage's decisions depend only on the stages before it): a block table of 23 networks, not 78.
    canonical = full.encode(full.decode({k: v[0] for k, v in full.choices.items()}))
    space = RestrictedSpace(full, {k: v for k, v in canonical.items() if k[1] not in "56"})
    latency = MeasuredLatency(fast_device, tmp_path / "lat.sqlite")
    report = profile_device(latency, space, 14, 6, "lut", tmp_path / "out")
    assert report["n_train"] == 14 and report["n_heldout"] == 6
    assert set(report["predictors"]) == {*fit_kinds(), "blocks"}
    for row in report["predictors"].values():
        assert {"rmse_ms", "mape", "within10", "kendall", "predict_s_per_arch", "measure_s_per_arch"} <= set(row)
        assert row["speedup"] == pytest.approx(row["measure_s_per_arch"] / row["predict_s_per_arch"])
    lut = load_predictor(tmp_path / "out" / "test-cpu-lut.json")
    assert lut.meta["device"] == "test-cpu" and lut.meta["space"]["resolution"] == 8 and lut.meta["fitted_on"] == 14
    assert json.loads((tmp_path / "out" / "test-cpu-profile.json").read_text())["chosen"] == "lut"

    calls = []
    monkeypatch.setattr(LocalBackend, "measure_many", lambda *a: calls.append(a) or [])
    profile_device(MeasuredLatency(fast_device, tmp_path / "lat.sqlite"), space, 14, 6, "lut", tmp_path / "out")
    assert calls == []  # every architecture came from the cache


def test_sampled_architectures_are_distinct_and_reproducible():
    space = make_space("mnas", 8, 3, 10, width=0.25)
    a, b = sample_archs(space, 30, seed=1), sample_archs(space, 30, seed=1)
    assert [s.id for s in a] == [s.id for s in b] and len({s.id for s in a}) == 30


def test_profile_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devices.yaml").write_text(
        "devices:\n  cpu:\n    kind: local\n    warmup: 2\n    repeats: 5\n    processes: 1\n")
    # The block table is profile_device's (above); here the command's wiring, without its 78 networks.
    result = CliRunner().invoke(app, ["profile", "--device", "cpu", "--archs", "12", "--heldout", "4",
                                      "--data", "synthetic", "--resolution", "8", "--kind", "learned", "--no-blocks"])
    assert result.exit_code == 0, result.output
    assert load_predictor(tmp_path / "predictors" / "cpu-learned.json").kind == "learned"
    report = json.loads((tmp_path / "predictors" / "cpu-profile.json").read_text())
    assert report["n_train"] == 12 and "blocks" not in report["predictors"]
    for bad in (["--kind", "magic"], ["--kind", "blocks", "--no-blocks"]):
        assert CliRunner().invoke(app, ["profile", "--device", "cpu", *bad]).exit_code == 2
    for bad in (["--archs", "9"], ["--heldout", "1"]):
        result = CliRunner().invoke(app, ["profile", "--device", "cpu", *bad])
        assert result.exit_code == 2 and "profiling needs at least 10" in result.output  # before measuring
