"""Latency predictors: the LUT recovers known costs, files round-trip, predictor devices predict."""

import json
import random

import numpy as np
import pytest

from edgekd.core.devices import get_device
from edgekd.core.errors import ConfigError
from edgekd.latency_models import make_latency_model
from edgekd.latency_models.features import OP_TYPES, features, operators, total_mmacs
from edgekd.latency_models.predictors import (
    FILE_VERSION,
    PredictedLatency,
    block_table_archs,
    fit_block_table,
    fit_kinds,
    fit_predictor,
    load_predictor,
)
from edgekd.spaces import make_space

# Known per-operator costs: overhead (ms) and ms per MMAC, as a device might have them.
OVERHEAD = {"conv_k3": 0.010, "dw_k3": 0.004, "dw_k5": 0.006, "dw_k7": 0.009, "pw": 0.003, "se": 0.012,
            "add": 0.002, "fc": 0.001}
PER_MMAC = {"conv_k3": 0.030, "dw_k3": 0.050, "dw_k5": 0.045, "dw_k7": 0.040, "pw": 0.020, "se": 0.100,
            "add": 0.200, "fc": 0.010}
NETWORK = 0.050


def _true_ms(spec) -> float:
    return NETWORK + sum(OVERHEAD[op.type] + PER_MMAC[op.type] * op.macs / 1e6 for op in operators(spec))


@pytest.fixture(scope="module")
def specs():
    space = make_space("mnas", 16, 1, 10, width=0.25)
    return [space.decode(space.sample(random.Random(i))) for i in range(160)]


def test_lut_fitted_from_whole_model_measurements_recovers_known_per_block_costs(specs):
    train, heldout = specs[:120], specs[120:]
    lut = fit_predictor("lut", [(s, _true_ms(s)) for s in train])
    for s in heldout:
        assert lut.predict(s) == pytest.approx(_true_ms(s), rel=1e-6)
    table = lut.lut_table()
    # Depthwise, pointwise, SE and add vary independently across the space: their costs are identifiable.
    for op in ("dw_k3", "dw_k5", "dw_k7", "pw", "se", "add"):
        assert table[op]["overhead_ms"] == pytest.approx(OVERHEAD[op], abs=1e-6), op
        assert table[op]["ms_per_mmac"] == pytest.approx(PER_MMAC[op], abs=1e-6), op
    # Every network has the same stem conv and classifier, so only their total with the network overhead is.
    ops = operators(specs[0])
    stem, fc = ops[0].macs / 1e6, ops[-1].macs / 1e6

    def fixed(cost, per_mmac, network):
        return network + cost["conv_k3"] + cost["fc"] + per_mmac["conv_k3"] * stem + per_mmac["fc"] * fc

    fitted = fixed({k: v["overhead_ms"] for k, v in table.items()}, {k: v["ms_per_mmac"] for k, v in table.items()},
                   table["network"]["overhead_ms"])
    assert fitted == pytest.approx(fixed(OVERHEAD, PER_MMAC, NETWORK), abs=1e-6)


def test_flops_baseline_cannot_follow_per_operator_overheads_the_lut_and_learned_models_can(specs):
    pairs = [(s, _true_ms(s)) for s in specs]
    train, heldout = pairs[:120], pairs[120:]
    measured = np.array([ms for _, ms in heldout])
    errors = {}
    for kind in fit_kinds():
        p = fit_predictor(kind, train)
        errors[kind] = np.mean(np.abs(p.predict_many([s for s, _ in heldout]) - measured) / measured)
    assert errors["lut"] < 1e-6 and errors["learned"] < errors["flops"]


def test_every_kind_round_trips_through_its_json_file(specs, tmp_path):
    pairs = [(s, _true_ms(s) * (1 + 0.05 * np.sin(i))) for i, s in enumerate(specs[:60])]
    for kind in fit_kinds():
        p = fit_predictor(kind, pairs, {"device": "pi", "runtime": "onnxruntime-1.32.0", "space": {"name": "mnas"}})
        path = p.save(tmp_path / f"{kind}.json")
        doc = json.loads(path.read_text())
        assert doc["format"] == "edgekd-latency-predictor" and doc["version"] == FILE_VERSION
        assert doc["meta"]["device"] == "pi"
        again = load_predictor(path)
        assert np.array_equal(again.predict_many(specs[60:80]), p.predict_many(specs[60:80]))


def test_unreadable_foreign_or_newer_files_are_clear_errors(tmp_path):
    for body, message in (("{", "not JSON"), ('{"a": 1}', "not an edgekd latency predictor"),
                          ('{"format": "edgekd-latency-predictor", "version": 9, "kind": "lut"}', "version 9")):
        (tmp_path / "p.json").write_text(body)
        with pytest.raises(ConfigError, match=message):
            load_predictor(tmp_path / "p.json")
    with pytest.raises(ConfigError, match="at least 10"):
        fit_predictor("lut", [])


def test_a_predictor_device_predicts_from_its_file_relative_to_devices_yaml(specs, tmp_path):
    p = fit_predictor("lut", [(s, _true_ms(s)) for s in specs[:60]])
    p.save(tmp_path / "predictors" / "phone-lut.json")
    (tmp_path / "devices.yaml").write_text(
        "devices:\n  phone:\n    kind: predictor\n    file: predictors/phone-lut.json\n")
    model = make_latency_model(get_device("phone", tmp_path / "devices.yaml"), tmp_path / "cache.sqlite")
    assert isinstance(model, PredictedLatency)
    assert model.latency_ms(specs[100]) == pytest.approx(_true_ms(specs[100]), rel=1e-6)


def test_features_count_operators_and_their_macs(specs):
    x = features(specs[0])
    n = len(OP_TYPES)
    assert x[OP_TYPES.index("fc")] == 1 and x[OP_TYPES.index("conv_k3")] == 1  # classifier, stem
    assert sum(x[n : 2 * n]) == pytest.approx(total_mmacs(specs[0]))


def test_block_table_profiled_in_context_recovers_additive_costs_and_round_trips(tmp_path):
    space = make_space("mnas", 16, 1, 10, width=0.25)
    rng = random.Random(7)
    # Skips cost nothing here: whether a skip exists depends on the stage's other decisions (channels, layers).
    cost = {d: {json.dumps(v): 0.0 if d.endswith("_skip") else rng.uniform(0, 0.05) for v in values}
            for d, values in space.choices.items()}

    def device_ms(spec):  # a device whose latency is additive over the stage decisions
        return 0.2 + sum(cost[d][json.dumps(v)] for d, v in space.encode(spec).items())

    reference = {d: values[len(values) // 2] for d, values in space.choices.items()}
    table = [spec for _, _, spec in block_table_archs(space, reference)]
    assert len(table) == 1 + sum(len(v) - 1 for v in space.choices.values())
    pairs = [(s, device_ms(s)) for s in (space.decode(space.sample(rng)) for _ in range(40))]
    blocks = fit_block_table(space, reference, [device_ms(s) for s in table], pairs)
    for spec in (space.decode(space.sample(rng)) for _ in range(20)):
        assert blocks.predict(spec) == pytest.approx(device_ms(spec), rel=1e-6)
    again = load_predictor(blocks.save(tmp_path / "blocks.json"))
    spec = space.decode(space.sample(rng))
    assert again.predict(spec) == pytest.approx(blocks.predict(spec))
