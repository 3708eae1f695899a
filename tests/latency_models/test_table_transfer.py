"""The position-aware table, the transfer to a new device, and the spread choice of what to measure, on devices
whose costs are known."""

import random

import numpy as np
import pytest

from edgekd.core.errors import ConfigError
from edgekd.latency_models.features import (
    HALF_VECTOR_CHANNELS,
    PADDING,
    operators,
    padded_mmacs,
    padded_op_mmacs,
    sized_mmacs,
    unaligned_work,
)
from edgekd.latency_models.predictors import Predictor, fit_predictor, load_predictor
from edgekd.latency_models.table import cell_costs, cells
from edgekd.latency_models.transfer import SIZED_TERMS, fit_transfer
from edgekd.pipeline.profile import sample_archs, spread_archs
from edgekd.spaces import make_space


@pytest.fixture(scope="module")
def space():
    return make_space("mnas", 16, 1, 10, width=0.25)


def _operator_ms(spec, depthwise=1.0) -> float:
    """A device whose every operator costs a fixed overhead plus a cost per MAC (depthwise ones x ``depthwise``)."""
    return 0.05 + sum((0.003 + 0.02 * op.macs / 1e6) * (depthwise if op.type.startswith("dw") else 1.0)
                      for op in operators(spec))


def _slot_ms(spec) -> float:
    """The same device, except that a stage-2 block in its first place is 0.03 ms slower with a 7x7 kernel and
    0.02 ms faster with a 3x3 one (a cost of the position, which no per-operator table can follow)."""
    extra = {" k7 ": 0.03, " k3 ": -0.02}
    return _operator_ms(spec) + sum(v for c in cells(spec) if c.startswith("s2.0 ") for k, v in extra.items()
                                    if k in c)


def _mape(p, specs, truth) -> float:
    measured = np.array([truth(s) for s in specs])
    return float(np.mean(np.abs(p.predict_many(specs) - measured) / measured))


def test_the_table_learns_a_cost_of_the_layer_slot_that_the_operator_table_cannot(space, tmp_path):
    train, heldout = sample_archs(space, 300, 0), sample_archs(space, 100, 1)
    pairs = [(s, _slot_ms(s)) for s in train]
    table, lut = fit_predictor("table", pairs), fit_predictor("lut", pairs)
    assert _mape(table, heldout, _slot_ms) < 0.01 < _mape(lut, heldout, _slot_ms)
    breakdown = cell_costs(table, heldout[0])
    assert [c for c, _ in breakdown[:-1]] == cells(heldout[0]) and breakdown[-1][0] == "other"
    assert sum(ms for _, ms in breakdown) == pytest.approx(table.predict(heldout[0]))
    again = load_predictor(table.save(tmp_path / "table.json"))
    assert np.array_equal(again.predict_many(heldout), table.predict_many(heldout))


def test_the_table_follows_work_done_in_vector_widths_of_channels(space):
    """A CPU whose kernels compute 16 channels at a time (AVX-512 floats): a block of 17 channels costs as much as
    one of 32. The table's prior has a cost per padded MMAC; the per-operator table has none."""

    def simd_ms(spec):
        return 0.05 + sum(0.003 + 0.02 * padded_op_mmacs(op, 16) for op in operators(spec))

    train, heldout = sample_archs(space, 300, 0), sample_archs(space, 100, 1)
    pairs = [(s, simd_ms(s)) for s in train]
    assert _mape(fit_predictor("table", pairs), heldout, simd_ms) < 0.005 < _mape(fit_predictor("lut", pairs), heldout,
                                                                                     simd_ms)


def test_the_table_is_calibrated_where_small_networks_cost_more_than_their_parts(space, tmp_path):
    """A CPU whose latency is a convex curve of its operators' sum (as measured on three CPUs, the smallest
    networks cost more than a straight line of the sum gives, middling ones less). The calibration of the summed
    table follows the curve."""

    def curved_ms(spec):
        total = _operator_ms(spec)
        return total + 2 * total ** 2

    train, heldout = sample_archs(space, 300, 0), sample_archs(space, 100, 1)
    table = fit_predictor("table", [(s, curved_ms(s)) for s in train])
    calibration = table.params["calibration"]
    assert calibration is not None and calibration["quadratic"][0] > 0
    summed = Predictor("table", {**table.params, "calibration": None}, table.meta)
    assert _mape(table, heldout, curved_ms) < 0.6 * _mape(summed, heldout, curved_ms)
    assert sum(ms for _, ms in cell_costs(table, heldout[0])) == pytest.approx(table.predict(heldout[0]))
    again = load_predictor(table.save(tmp_path / "table.json"))
    assert np.array_equal(again.predict_many(heldout), table.predict_many(heldout))
    faster = sorted(train, key=curved_ms)[:150]  # beyond the sums it was fitted on, it keeps their order
    partial = fit_predictor("table", [(s, curved_ms(s)) for s in faster])
    sums = Predictor("table", {**partial.params, "calibration": None}, partial.meta).predict_many(heldout)
    assert partial.params["calibration"]["range"][1] < sums.max()
    assert np.all(np.diff(partial.predict_many(heldout)[np.argsort(sums)]) > 0)


def test_a_transfer_learns_a_new_device_from_30_measurements_where_a_fit_from_scratch_cannot(space, tmp_path):
    base = fit_predictor("table", [(s, _slot_ms(s)) for s in sample_archs(space, 300, 0)],
                         {"device": "lab-cpu", "runtime": "onnxruntime"})

    def phone(spec):  # the lab CPU 1.7x slower, with depthwise convolutions twice as slow again, 1% noise
        slower_depthwise = _operator_ms(spec, depthwise=2.0) - _operator_ms(spec)
        return 1.7 * (_slot_ms(spec) + slower_depthwise) * (1 + 0.01 * np.sin(int(spec.id[:8], 16)))

    few = [(s, phone(s)) for s in spread_archs(space, 30, 5)]
    heldout = sample_archs(space, 200, 9)
    transfer = fit_transfer(base, few, {"device": "phone"})
    scratch = fit_predictor("lut", few)
    assert _mape(transfer, heldout, phone) < 0.025 and _mape(transfer, heldout, phone) < _mape(scratch, heldout, phone)
    assert transfer.meta["base_device"] == "lab-cpu" and transfer.meta["fitted_on"] == 30
    again = load_predictor(transfer.save(tmp_path / "phone-transfer.json"))  # holds its base: no other file read
    assert np.array_equal(again.predict_many(heldout), transfer.predict_many(heldout))
    with pytest.raises(ConfigError, match="at least 5 measurements of the new device"):
        fit_transfer(base, few[:4])


def test_a_transfer_learns_depthwise_kernels_that_are_slow_on_channels_filling_no_whole_vector(space):
    """int8 on a CPU without VNNI: a depthwise convolution whose channels are not a multiple of 16 takes a slow
    pass costing per pixel and kernel tap, whatever the channels left over (12 channels slower than 48), and
    costing more again where they are not a multiple of 8 either (12 slower than 24)."""
    base = fit_predictor("table", [(s, _operator_ms(s)) for s in sample_archs(space, 300, 0)], {"device": "lab-cpu"})

    def int8(spec):
        depthwise = [op for op in operators(spec) if op.type.startswith("dw")]
        tail = sum(op.macs / op.channels for op in depthwise if op.channels % 16)
        odd = sum(op.macs / op.channels for op in depthwise if op.channels % 8)
        return 1.5 * _operator_ms(spec) + 3e-5 * tail + 5e-5 * odd

    few = [(s, int8(s)) for s in spread_archs(space, 30, 5)]
    heldout = sample_archs(space, 200, 9)
    transfer = fit_transfer(base, few, {"device": "int8"})
    measured = np.array([int8(s) for s in heldout])
    assert np.mean(np.abs(transfer.predict_many(heldout) / measured - 1) < 0.1) >= 0.97
    a, b = np.polyfit(base.predict_many([s for s, _ in few]), [ms for _, ms in few], 1)  # the base rescaled
    rescaled = a * base.predict_many(heldout) + b
    assert _mape(transfer, heldout, int8) < 0.5 * float(np.mean(np.abs(rescaled / measured - 1)))
    assert len(transfer.params["mean"]) == len(_terms_of(base, heldout[0])) - SIZED_TERMS  # not needed: left out
    # a file of version 3 (no columns named) reads the first terms: the same as a fit with the later ones zeroed
    n_first = len(_terms_of(base, heldout[0])) - SIZED_TERMS - len(_half_of(base, heldout[0])) - 1
    first = {k: v for k, v in transfer.params.items() if k != "columns"}
    first.update({k: transfer.params[k][:n_first] for k in ("mean", "std")}, coef=transfer.params["coef"][:2 + n_first])
    zeroed = {**transfer.params, "coef": [*first["coef"], *[0.0] * (len(transfer.params["coef"]) - 2 - n_first)]}
    assert np.allclose(Predictor("transfer", first, transfer.meta).predict_many(heldout),
                       Predictor("transfer", zeroed, transfer.meta).predict_many(heldout))


def test_a_transfer_learns_a_runtime_cost_per_operator_from_noisy_measurements(space):
    """A runtime whose every operator costs 6 us more (int8's quantized operators cost ~5 us each on this project's
    host, whatever their work), timed with 3% noise: the count of operators is one term where the per-type counts
    are eleven, and the transfer keeps it and little else."""
    base = fit_predictor("table", [(s, _operator_ms(s)) for s in sample_archs(space, 300, 0)], {"device": "lab-cpu"})

    def runtime(spec):
        return 1.2 * _operator_ms(spec) + 0.006 * len(operators(spec))

    few = [(s, runtime(s) * (1 + 0.03 * np.sin(int(s.id[:8], 16)))) for s in spread_archs(space, 30, 5)]
    heldout = sample_archs(space, 200, 9)
    transfer = fit_transfer(base, few, {"device": "runtime"})
    assert _mape(transfer, heldout, runtime) < 0.01
    assert transfer.params["coef"][-1] > 0 and transfer.params["terms_kept"] <= 3


def _half_of(base, spec) -> list:
    return unaligned_work(spec, base.op_types, HALF_VECTOR_CHANNELS)[1::2]


def _terms_of(base, spec) -> list:
    return [*base.features([spec])[0], *(v for m in PADDING for v in padded_mmacs(spec, m, base.op_types)),
            *unaligned_work(spec, base.op_types), *sized_mmacs(spec), *_half_of(base, spec), len(operators(spec))]


def test_a_transfer_takes_the_sized_7x7_terms_where_they_cut_its_error(space):
    """LiteRT on a CPU: 7x7 depthwise convolutions on small feature maps cost 3x per MAC what they do on large
    ones; only the terms per output size follow that, and the transfer keeps them (its file holds every term)."""
    base = fit_predictor("table", [(s, _operator_ms(s)) for s in sample_archs(space, 300, 0)], {"device": "lab-cpu"})

    def litert(spec):
        small = sum(op.macs / 1e6 for op in operators(spec) if op.type == "dw_k7" and op.out_elems / op.channels <= 16)
        return 2.0 * _operator_ms(spec) + 0.2 * small

    few = [(s, litert(s)) for s in spread_archs(space, 30, 5)]
    heldout = sample_archs(space, 200, 9)
    transfer = fit_transfer(base, few, {"device": "litert"})
    measured = np.array([litert(s) for s in heldout])
    assert np.mean(np.abs(transfer.predict_many(heldout) / measured - 1) < 0.1) >= 0.97
    assert len(transfer.params["mean"]) == len(_terms_of(base, heldout[0]))


def test_spread_choices_are_distinct_reproducible_and_fit_better_than_random_ones(space):
    a, b = spread_archs(space, 20, 3), spread_archs(space, 20, 3)
    assert [s.id for s in a] == [s.id for s in b] and len({s.id for s in a}) == 20
    heldout = sample_archs(space, 200, 11)
    errors = {name: _mape(fit_predictor("lut", [(s, _slot_ms(s)) for s in chosen]), heldout, _slot_ms)
              for name, chosen in (("spread", a), ("random", sample_archs(space, 20, 3)))}
    assert errors["spread"] < errors["random"]
    sizes = {name: np.ptp([_operator_ms(s) for s in chosen]) for name, chosen in
             (("spread", a), ("random", sample_archs(space, 20, 3)))}
    assert sizes["spread"] > sizes["random"]  # reaches further into the space's extremes
    many = spread_archs(space, 120, 3)  # past two choices per feature (14 vary here) the rest are random ones
    assert [s.id for s in many[:20]] == [s.id for s in a]
    spreads = [np.std([_operator_ms(s) for s in chosen])
               for chosen in (many[:28], many[28:], sample_archs(space, 200, 11))]
    assert spreads[0] > 1.2 * spreads[2] and abs(spreads[1] / spreads[2] - 1) < 0.2
    assert len(spread_archs(space, 5, 0, pool=random.Random(0).randint(10, 20))) == 5
