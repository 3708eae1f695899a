"""``table``: a position-aware latency table, solvable from whole-model measurements.

A network costs a fitted overhead plus the cost of each block's cell: (slot, operator choice, input size), the
slot being the block's stage and place in it, the choice its op, kernel, expansion, squeeze-excite, grouping,
skip and output width and stride, the input size its input channels and side (FBNet's and Once-for-All's
tables, keyed by position and shape). A phone gives whole-model latencies only, and a few hundred of them cannot
pin down thousands of cells, so every cell starts from a prior, the per-operator ``lut`` cost of its operators
(with a cost per MMAC of channels padded to the vector widths, as ONNX Runtime's and XNNPACK's kernels compute
them), and the measurements move it: a ridge fit of what the prior leaves unexplained on the cells and on
coarser cells that share strength (the same choice and input size at any slot; the same operator at the slot
whatever the sizes), its strength chosen by cross-validation. A cell never measured costs its prior. Errors are
weighed relatively, as latencies are compared by ratio (else the slowest networks decide the fit).

The sum is then calibrated: a CPU's smallest networks cost more than their parts add up to and its middling ones
less (on three CPUs the additive table's held-out errors ran from -3% or -4% for the smallest tenth to +2%),
so a quadratic in the sum, fitted on the cross-validation's out-of-fold predictions, maps it to milliseconds where
it predicts those better than the sum itself (chosen by cross-validation again); outside the fitted range it
continues as a straight line.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from edgekd.core.arch import ArchSpec, BlockSpec
from edgekd.latency_models.features import OP_TYPES, PADDING, Op, block_inputs, operators, padded_op_mmacs
from edgekd.latency_models.predictors import PREDICTOR_KINDS, Predictor, PredictorKind

RIDGE_GRID = tuple(10.0 ** e for e in np.arange(-6, 6.5, 0.5))
COARSE_FREEDOM = (1.0, 10.0, 100.0, 1000.0)
"""How much more freely than a cell a coarse cell may move (its ridge strength divided by this), chosen by
cross-validation with the strength: a coarse cell is seen in many networks, a cell in one or two."""
FOLDS = 5


def _choice(b: BlockSpec, cin: int, size: int) -> str:
    extras = "".join((f" se{b.se_ratio:g}" if b.se_ratio else "", f" g{b.groups}" if b.groups > 1 else "",
                      " shuffle" if b.shuffle else "", " res" if b.residual and b.stride == 1
                      and cin == b.out_channels else ""))
    return f"{b.op} k{b.kernel} e{b.expand}{extras} | {cin}x{size}x{size}->{b.out_channels}/{b.stride}"


def cells(spec: ArchSpec) -> list[str]:
    """Each block's cell, ``SLOT CHOICE``, SLOT being ``s{stage}.{place in the stage}``."""
    places: dict[int, int] = defaultdict(int)
    out = []
    for b, (cin, size) in zip(spec.blocks, block_inputs(spec), strict=True):
        out.append(f"s{b.stage}.{places[b.stage]} {_choice(b, cin, size)}")
        places[b.stage] += 1
    return out


def _coarse(cell: str) -> list[str]:
    """The coarser cells a cell shares strength with: its choice and input size at any slot, and at its slot
    each part of its choice alone (the op and expansion, the kernel, the extras) whatever the rest."""
    slot, choice = cell.split(" ", 1)
    op, kernel, expand, *extras = choice.split(" | ")[0].split()
    return ["* " + choice, f"{slot} {op} {expand}", f"{slot} {kernel}", f"{slot} {' '.join(extras) or 'plain'}"]


def _keys(spec: ArchSpec) -> list[str]:
    fine = cells(spec)
    return fine + [k for c in fine for k in _coarse(c)]


def _op_row(op: Op, types: tuple[str, ...], padding: tuple[int, ...]) -> np.ndarray:
    """``op``'s part of a network's prior columns: ``lut``'s (operator counts, MMACs, then 1 for the network
    overhead, which no operator has), then per multiple of ``padding`` the padded MMACs, each per operator type."""
    n = len(types)
    row = np.zeros(n * (2 + len(padding)) + 1)
    if op.type in types:
        i = types.index(op.type)
        row[[i, n + i]] = 1.0, op.macs / 1e6
        for j, m in enumerate(padding):
            row[2 * n + 1 + j * n + i] = padded_op_mmacs(op, m)
    return row


def _prior_design(specs: list[ArchSpec], padding: tuple[int, ...], types: tuple[str, ...] = OP_TYPES) -> np.ndarray:
    overhead = np.zeros(len(types) * (2 + len(padding)) + 1)
    overhead[2 * len(types)] = 1.0
    return np.array([overhead + sum(_op_row(op, types, padding) for op in operators(s)) for s in specs])


def _design(specs: list[ArchSpec], columns: dict[str, int]) -> np.ndarray:
    z = np.zeros((len(specs), len(columns)))
    for i, s in enumerate(specs):
        for key in _keys(s):
            if key in columns:
                z[i, columns[key]] += 1
    return z


def _ridge(u: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray,
           lams: tuple[float, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(per-operator costs, cell corrections) minimising the weighted squared error of ``y`` ~ u·costs + z·cells
    plus lam x the corrections' squared norm (the costs are not shrunk), for each lam; solved in the dual, as
    there are far fewer measurements than cells."""
    root = np.sqrt(w)
    uw = u * root[:, None]
    pinv = np.linalg.pinv(uw)

    def unexplained(m: np.ndarray) -> np.ndarray:  # what the per-operator costs alone cannot fit
        return m - uw @ (pinv @ m)

    a, b = unexplained(z * root[:, None]), unexplained(y * root)
    values, vectors = np.linalg.eigh(a @ a.T)
    out = []
    for lam in lams:
        corrections = a.T @ (vectors @ ((vectors.T @ b) / (np.maximum(values, 0) + lam)))
        out.append((pinv @ (root * (y - z @ corrections)), corrections))
    return out


def _relative_error(predicted: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The weighted mean squared relative error (along the last axis)."""
    return np.sum(w * ((predicted - y) / y) ** 2, axis=-1) / w.sum()


def _out_of_fold(u: np.ndarray, z: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """For each strength of ``RIDGE_GRID``, every measurement predicted by the fit on the other ``FOLDS`` - 1
    folds: [strength, measurement]."""
    folds = np.arange(len(y)) % FOLDS
    predicted = np.zeros((len(RIDGE_GRID), len(y)))
    for k in range(FOLDS):
        test = folds == k
        for j, (costs, corrections) in enumerate(_ridge(u[~test], z[~test], y[~test], w[~test], RIDGE_GRID)):
            predicted[j, test] = u[test] @ costs + z[test] @ corrections
    return predicted


def _quadratic(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """The quadratic (highest power first) closest to ``y`` from ``x`` in weighted relative error; None where it
    does not rise over the range of ``x`` (a calibration must keep the order of the sums)."""
    root = np.sqrt(w) / y
    coef = np.linalg.lstsq(np.vander(x, 3) * root[:, None], y * root, rcond=None)[0]
    slope = np.polyval(np.polyder(coef), [x.min(), x.max()])
    return coef if (slope > 0).all() else None


def _calibrate(coef: np.ndarray | list[float], lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    """``coef``'s quadratic of ``x`` within [lo, hi], continued beyond them as its tangents there."""
    edge = np.clip(x, lo, hi)
    return np.polyval(coef, edge) + np.polyval(np.polyder(coef), edge) * (x - edge)


def _calibration(summed: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, Any] | None:
    """The quadratic map of out-of-fold sums to the measurements, where it predicts held-out folds better than
    the sums themselves; None otherwise."""
    folds = np.arange(len(y)) % FOLDS
    calibrated = summed.copy()
    for k in range(FOLDS):
        test = folds == k
        coef = _quadratic(summed[~test], y[~test], w[~test]) if (~test).sum() > 3 else None
        if coef is None:
            return None
        calibrated[test] = _calibrate(coef, summed[~test].min(), summed[~test].max(), summed[test])
    coef = _quadratic(summed, y, w)
    if coef is None or _relative_error(calibrated, y, w) >= _relative_error(summed, y, w):
        return None
    return {"quadratic": coef.tolist(), "range": [float(summed.min()), float(summed.max())]}


def fit_table(specs: list[ArchSpec], y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """Per-operator costs (the prior of every cell, not shrunk) and the cells' ridge corrections, fitted
    together; the ridge strength and the coarse cells' freedom by cross-validation."""
    u = _prior_design(specs, PADDING)
    w = w / y ** 2
    w = w / w.mean()  # the ridge grid's scale whatever the milliseconds
    columns = {key: i for i, key in enumerate(sorted({k for s in specs for k in _keys(s)}))}
    coarse = np.array([key.startswith("*") or " | " not in key for key in columns])  # see _coarse
    z = _design(specs, columns)

    def scaled(freedom: float) -> np.ndarray:
        return np.where(coarse, np.sqrt(freedom), 1.0)  # a column scaled by c is shrunk c² times less

    out_of_fold = {f: _out_of_fold(u, z * scaled(f), y, w) for f in COARSE_FREEDOM}
    errors = {f: _relative_error(p, y, w) for f, p in out_of_fold.items()}
    freedom = min(errors, key=lambda f: errors[f].min())
    best = int(np.argmin(errors[freedom]))
    (costs, corrections), = _ridge(u, z * scaled(freedom), y, w, (RIDGE_GRID[best],))
    corrections = corrections * scaled(freedom)
    return {"prior": costs.tolist(), "padding": list(PADDING), "ridge": RIDGE_GRID[best], "coarse_freedom": freedom,
            "cells": {key: float(corrections[i]) for key, i in columns.items()},
            "calibration": _calibration(out_of_fold[freedom][best], y, w)}


def _summed(p: Predictor, specs: list[ArchSpec]) -> np.ndarray:
    """The additive table: each network's prior plus its cells' corrections, before the calibration."""
    prior = _prior_design(specs, tuple(p.params.get("padding", ())), p.op_types) @ np.asarray(p.params["prior"])
    correction = p.params["cells"]
    return prior + np.array([sum(correction.get(k, 0.0) for k in _keys(s)) for s in specs])


def _calibrated(p: Predictor, summed: np.ndarray) -> np.ndarray:
    """The table's sums mapped through its calibration."""
    calibration = p.params.get("calibration")  # absent in files from before it, None where it did not help
    return _calibrate(calibration["quadratic"], *calibration["range"], summed) if calibration else summed


def _predict(p: Predictor, specs: list[ArchSpec]) -> np.ndarray:
    return _calibrated(p, _summed(p, specs))


def cell_costs(p: Predictor, spec: ArchSpec) -> list[tuple[str, float]]:
    """``spec``'s latency broken down: each block's cell and its cost in ms (prior plus corrections), then the
    rest (stem, head, classifier and the fitted overhead) as ``other``, all scaled by the calibration's ratio at
    this network; they sum to ``p.predict(spec)``."""
    prior = np.asarray(p.params["prior"])
    types, padding = p.op_types, tuple(p.params.get("padding", ()))
    per_block: dict[int, float] = defaultdict(float)
    for op in operators(spec):
        per_block[op.block] += _op_row(op, types, padding) @ prior
    correction = p.params["cells"]
    rows = [(c, per_block[i] + sum(correction.get(k, 0.0) for k in [c, *_coarse(c)]))
            for i, c in enumerate(cells(spec))]
    parts = [*rows, ("other", per_block[-1] + prior[2 * len(types)])]
    summed = sum(ms for _, ms in parts)
    ratio = _calibrated(p, np.array([summed]))[0] / summed
    return [(c, ms * ratio) for c, ms in parts]


PREDICTOR_KINDS.add("table", PredictorKind(_predict, fit_table))
