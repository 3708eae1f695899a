"""`edgekd profile`: measures real architectures once (resumable), fits every predictor, reports held-out."""

import csv
import json
import random
import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.core.errors import ConfigError
from edgekd.core.ui import console
from edgekd.data import load_data
from edgekd.latency_models.features import total_mmacs
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.latency_models.predictors import fit_kinds, fit_predictor, load_predictor
from edgekd.pipeline.profile import profile_device, read_latency_csv, sample_archs
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


def test_profile_command(tmp_path, fast_devices_yaml):
    fast_devices_yaml({"cpu": 1})
    # The block table is profile_device's (above); here the command's wiring, without its 78 networks.
    result = CliRunner().invoke(app, ["profile", "--device", "cpu", "--archs", "12", "--heldout", "4",
                                      "--data", "synthetic", "--resolution", "8", "--kind", "learned", "--no-blocks"])
    assert result.exit_code == 0, result.output
    assert load_predictor(tmp_path / "predictors" / "cpu-learned.json").kind == "learned"
    report = json.loads((tmp_path / "predictors" / "cpu-profile.json").read_text())
    assert report["n_train"] == 12 and "blocks" not in report["predictors"]
    # by default the report names the kind most accurate on the held-out architectures
    result = CliRunner().invoke(app, ["profile", "--device", "cpu", "--archs", "12", "--heldout", "4",
                                      "--data", "synthetic", "--resolution", "8", "--no-blocks"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "predictors" / "cpu-profile.json").read_text())
    rows, best = report["predictors"], report["chosen"]
    assert all((rows[best]["within10"], rows[best]["kendall"]) >= (r["within10"], r["kendall"]) for r in rows.values())
    assert report["chosen_file"].endswith(f"cpu-{best}.json")
    for bad in (["--kind", "magic"], ["--kind", "blocks", "--no-blocks"]):
        assert CliRunner().invoke(app, ["profile", "--device", "cpu", *bad]).exit_code == 2
    for bad in (["--archs", "9"], ["--heldout", "1"]):
        result = CliRunner().invoke(app, ["profile", "--device", "cpu", *bad])
        assert result.exit_code == 2 and "profiling needs at least 10" in result.output  # before measuring


def test_profile_warns_where_the_device_does_not_agree_with_itself(tmp_path, fast_devices_yaml, monkeypatch):
    fast_devices_yaml({"cpu": 1})
    args = ["profile", "--device", "cpu", "--archs", "10", "--heldout", "4", "--data", "synthetic", "--resolution", "8",
            "--kind", "lut", "--no-blocks"]
    assert CliRunner().invoke(app, args).exit_code == 0  # every architecture measured and cached
    monkeypatch.setattr(console, "quiet", False)
    for slowdown, warned in ((1.0, False), (2.0, True)):
        # the ceiling's second measurement: the first again (a steady host), or the host at half its speed since
        # (every architecture is cached, so measure_many returns the first measurements)
        monkeypatch.setattr(MeasuredLatency, "remeasure", lambda self, specs, *a, f=slowdown, **k: [
            replace(m, median_ms=m.median_ms * f) for m in self.measure_many(specs)])
        with console.capture() as captured:
            result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "predictors" / "cpu-profile.json").read_text())
        assert report["measurement_ceiling"]["within10"] == (0.0 if warned else 1.0)
        output = " ".join(captured.get().split())  # the console wraps lines
        assert ("cpu does not agree with itself" in output and "within ±10% of the first for 0% of them" in output
                and "passes: 3" in output) == warned, output


def test_profile_spends_a_budget_on_spread_architectures_and_transfers_another_devices_predictor(
        tmp_path, fast_devices_yaml):
    fast_devices_yaml({"cpu": 1, "cpu-2t": 2})
    common = ["--data", "synthetic", "--resolution", "8", "--no-blocks", "--heldout", "4"]
    assert CliRunner().invoke(app, ["profile", "--device", "cpu", "--archs", "16", "--kind", "table", *common]
                              ).exit_code == 0
    result = CliRunner().invoke(app, ["profile", "--device", "cpu-2t", "--budget", "10", "--transfer-from",
                                      "predictors/cpu-table.json", "--kind", "transfer", *common])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "predictors" / "cpu-2t-profile.json").read_text())
    assert report["chosen_by"] == "spread" and report["n_train"] == 10 and "transfer" in report["predictors"]
    transfer = load_predictor(tmp_path / "predictors" / "cpu-2t-transfer.json")
    assert transfer.kind == "transfer" and transfer.meta["base_device"] == "cpu" and transfer.meta["fitted_on"] == 10
    for bad, message in ((["--kind", "transfer"], "transfer needs --transfer-from"),
                         (["--budget", "0"], "profiling needs at least 10 architectures to fit on"),
                         (["--budget", "12", "--import", "x.csv"], "with --import nothing is measured"),
                         (["--transfer-from", "nowhere.json"], "predictor file not found")):
        result = CliRunner().invoke(app, ["profile", "--device", "cpu", *bad])
        assert result.exit_code == 2 and message in result.output, result.output


def _latency_csv(path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_profile_imports_latencies_measured_elsewhere_by_choices_or_archspec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = load_data("synthetic", resolution=8)
    space = make_space("mnas", 8, data.input_shape[0], data.num_classes, width=0.25)
    rng = random.Random(0)
    choices = [space.sample(rng) for _ in range(40)]
    ms = [0.05 + 0.01 * total_mmacs(space.decode(c)) for c in choices]  # a device whose time is its MACs
    _latency_csv(tmp_path / "phone.csv", [{**c, "ms": t} for c, t in zip(choices, ms, strict=True)])
    args = ["profile", "--device", "lab-phone", "--data", "synthetic", "--resolution", "8", "--heldout", "8",
            "--kind", "flops"]
    result = CliRunner().invoke(app, [*args, "--import", "phone.csv"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "predictors" / "lab-phone-profile.json").read_text())
    assert report["n_train"] == 32 and report["n_heldout"] == 8 and report["imported_from"].endswith("phone.csv")
    assert report["predictors"]["flops"]["within10"] == 1.0  # nothing measured: the CSV's figures were fitted
    flops = load_predictor(tmp_path / "predictors" / "lab-phone-flops.json")
    assert flops.predict(space.decode(choices[0])) == pytest.approx(ms[0], rel=1e-3)

    # the same latencies given as ArchSpec JSON
    _latency_csv(tmp_path / "archs.csv", [{"arch": space.decode(c).to_json(), "ms": t}
                                          for c, t in zip(choices, ms, strict=True)])
    assert CliRunner().invoke(app, [*args, "--import", "archs.csv", "--out", "p2"]).exit_code == 0
    assert json.loads((tmp_path / "p2" / "lab-phone-profile.json").read_text())["n_train"] == 32

    # another phone's latencies, 1.5x slower, adapted from the first phone's predictor
    _latency_csv(tmp_path / "phone2.csv", [{**c, "ms": 1.5 * t} for c, t in zip(choices, ms, strict=True)])
    assert CliRunner().invoke(app, [*args, "--import", "phone2.csv", "--out", "p3", "--transfer-from",
                                    "predictors/lab-phone-flops.json"]).exit_code == 0
    rows = json.loads((tmp_path / "p3" / "lab-phone-profile.json").read_text())["predictors"]
    assert rows["transfer"]["within10"] == 1.0


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows: rows[3].update(ms="fast"), "line 5: ms is 'fast', not a number"),
    (lambda rows: rows[6].update(ms="-1"), "line 8: ms is -1; a latency is a positive number"),
    (lambda rows: rows[2].update(s0_kernel="4"), "line 4: s0_kernel='4' is not one of"),
    (lambda rows: [r.pop("s0_kernel") for r in rows], "missing s0_kernel"),
    (lambda rows: [r.pop("ms") for r in rows], "needs an `ms` column"),
])
def test_an_imported_csv_with_a_bad_row_names_the_row(tmp_path, edit, message):
    space = make_space("mnas", 8, 3, 10, width=0.25)
    rng = random.Random(0)
    rows = [{**space.sample(rng), "ms": 1.0} for _ in range(12)]
    edit(rows)
    _latency_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_latency_csv(tmp_path / "bad.csv", space)


@pytest.mark.parametrize("name", ["mnas", "fbnet"])
def test_fit_predictor_takes_the_choices_of_any_registered_space(name):
    space = make_space(name, 8, 3, 10, width=0.25)
    rng = random.Random(1)
    choices = [space.sample(rng) for _ in range(20)]
    pairs = [(c, 0.1 + 0.02 * total_mmacs(space.decode(c))) for c in choices]
    p = fit_predictor("flops", pairs, space=space)
    assert p.predict(space.decode(choices[3])) == pytest.approx(pairs[3][1], rel=1e-3)
    with pytest.raises(ConfigError, match="need the space"):
        fit_predictor("flops", pairs)
    with pytest.raises(ConfigError, match="is not one of"):
        fit_predictor("flops", [({**choices[0], next(iter(space.choices)): "nope"}, 1.0), *pairs], space=space)
