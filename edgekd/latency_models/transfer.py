"""``transfer``: a predictor fitted on one device, adapted to a new device from a few of its measurements.

The shape comes from the device with many measurements: its predictor (any kind, the ``base``) ranks the
architectures and knows how their costs relate. The new device gives the scale and the few differences:
``latency = a x base(arch) + b + sum_t c_t x f_t(arch)``, the f_t being the per-operator features (count, MMACs
and MMACs with the channels padded as vectorised kernels compute them, per operator type, the outputs' elements,
the depthwise work on channels that fill no whole vector, or no half one, and the count of all operators;
standardised), their coefficients chosen by the lasso (scikit-learn's, strength by leave-one-out error), a and b
not shrunk. A device differs from another in a few operators (LiteRT's 7x7 depthwise kernels, int8's depthwise
kernels on channels that are not a multiple of 16, slower again where not of 8) and in its cost per operator, and
the lasso keeps those few terms and sets the rest to zero: with a handful of measurements it is the base merely
rescaled, with more it learns the differences. The 7x7 depthwise MACs per output size are candidates too where
they cut the leave-one-out error well below the fit without them (LiteRT's case). Errors are weighed relatively,
as latencies are compared by ratio. The file holds its base whole.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgekd.core.arch import ArchSpec
from edgekd.core.errors import ConfigError
from edgekd.latency_models.features import (
    HALF_VECTOR_CHANNELS,
    PADDING,
    SIDE_BINS,
    operators,
    padded_mmacs,
    sized_mmacs,
    unaligned_work,
)
from edgekd.latency_models.predictors import PREDICTOR_KINDS, Predictor, PredictorKind, varying_columns

MIN_TRANSFER = 5
"""Fewest measurements of the new device a transfer is fitted on."""
SIZED_TERMS = len(SIDE_BINS)
SIZED_MARGIN = 0.75
"""The sized terms (7x7 depthwise MACs per output size) are kept only where the fit with them has a leave-one-out
error under this share of the fit without them: leave-one-out favours more terms, and on int8, which does not
need these, they cost points. Over 50 fits per device on this project's saved runs (spread, random and mixed
choices of 30), the share was 0.17-0.74 on LiteRT, which needs them (68% within ±10% without, 90% with), and
0.61-1.47 on int8; at 0.6 five LiteRT fits left them out (54-64% within ±10%)."""
OVERHEAD_FAVOUR = 3.0
"""The count of all operators (the runtime's cost per operator, which every device has its own of: int8's
operators cost ~5 us each on this project's host whatever their work) is penalised this many times less than the
other terms. Chosen on saved measurements of this host's int8 and LiteRT runs (1, 3 and 10 tried, and no
penalty)."""


def _base(p: Predictor) -> Predictor:
    if "base" not in p.cache:
        b = p.params["base"]
        p.cache["base"] = Predictor(b["kind"], b["params"], b["meta"])
    return p.cache["base"]


def _operator_terms(base: Predictor, specs: list[ArchSpec]) -> tuple[np.ndarray, slice, int]:
    """The terms of ``specs``, the columns of the sized ones and the column of the count of operators. Per operator
    type: count, MMACs, MMACs with the channels rounded up to 8 and to 16, and all outputs' elements; then the
    depthwise work on channels that fill no whole vector (features.unaligned_work); then the 7x7 depthwise MACs per
    output size (features.sized_mmacs); then the depthwise work per channel where the channels fill no half vector;
    then the count of all operators. Terms are only ever appended: a file names the columns it was fitted on (one
    from before that, the first ones)."""
    head = np.hstack([base.features(specs), *(np.array([padded_mmacs(s, m, base.op_types) for s in specs])
                                              for m in PADDING),
                      np.array([unaligned_work(s, base.op_types) for s in specs]).reshape(len(specs), -1)])
    half = np.array([unaligned_work(s, base.op_types, HALF_VECTOR_CHANNELS)[1::2] for s in specs])
    sized = slice(head.shape[1], head.shape[1] + SIZED_TERMS)
    count = np.array([[len(operators(s))] for s in specs], dtype=float)
    terms = np.hstack([head, np.array([sized_mmacs(s) for s in specs]), half.reshape(len(specs), -1), count])
    return terms, sized, terms.shape[1] - 1


def _inputs(base: Predictor, specs: list[ArchSpec], terms: np.ndarray, columns: np.ndarray, mean: np.ndarray,
            std: np.ndarray) -> np.ndarray:
    """The base's prediction, 1, and the ``columns`` of ``terms`` standardised."""
    return np.hstack([base.predict_many(specs)[:, None], np.ones((len(specs), 1)), (terms[:, columns] - mean) / std])


def _lasso(u: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Coefficients of ``y`` ~ u·c_u + x·c_x with the lasso on c_x only (strength by leave-one-out error), the
    strength and that error: c_u solved exactly for any c_x, so the lasso runs on what ``u`` leaves unexplained
    (Frisch-Waugh)."""
    from sklearn.linear_model import LassoCV
    from sklearn.model_selection import LeaveOneOut

    pinv = np.linalg.pinv(u)
    residual = np.eye(len(y)) - u @ pinv
    fit = LassoCV(cv=LeaveOneOut(), fit_intercept=False, max_iter=100_000, tol=1e-3).fit(residual @ x, residual @ y)
    return pinv @ (y - x @ fit.coef_), fit.coef_, float(fit.alpha_), float(fit.mse_path_.mean(1).min())


def fit_transfer(base: Predictor, pairs: list[tuple[ArchSpec, float]], meta: dict[str, Any] | None = None,
                 weights: np.ndarray | None = None) -> Predictor:
    """A ``transfer`` predictor: ``base`` (fitted on another device) adapted to the device ``pairs`` (architecture,
    measured ms) were measured on, each weighted by ``weights`` (equal by default)."""
    if len(pairs) < MIN_TRANSFER:
        raise ConfigError(f"adapting a predictor needs at least {MIN_TRANSFER} measurements of the new device, "
                          f"got {len(pairs)}")
    specs = [s for s, _ in pairs]
    y = np.array([ms for _, ms in pairs], dtype=float)
    root_w = np.sqrt(np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)) / y
    terms, sized, count = _operator_terms(base, specs)
    mean, std = terms.mean(0), terms.std(0)
    std[~varying_columns(terms)] = 1.0  # a constant term stays near zero
    std[count] /= OVERHEAD_FAVOUR  # its column larger, its penalty less
    every = np.arange(terms.shape[1])
    x = _inputs(base, specs, terms, every, mean, std) * root_w[:, None]
    candidates = (np.delete(every, sized), every)  # without the sized terms, with them
    without, with_sized = (_lasso(x[:, :2], x[:, 2 + c], y * root_w) for c in candidates)
    kept = with_sized[-1] < SIZED_MARGIN * without[-1]
    scale, differences, alpha, _ = with_sized if kept else without
    columns = candidates[kept]
    params = {"base": {"kind": base.kind, "params": base.params, "meta": base.meta},
              "coef": [*scale.tolist(), *differences.tolist()], "columns": columns.tolist(),
              "mean": mean[columns].tolist(), "std": std[columns].tolist(), "lasso": alpha,
              "terms_kept": int(np.count_nonzero(differences))}
    meta = {**(meta or {}), "fitted_on": len(pairs), "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "features": base.meta.get("features"), "base_device": base.meta.get("device"),
            "base_runtime": base.meta.get("runtime")}
    return Predictor("transfer", params, {k: v for k, v in meta.items() if v is not None})


def _predict(p: Predictor, specs: list[ArchSpec]) -> np.ndarray:
    base = _base(p)
    mean = np.asarray(p.params["mean"])
    columns = np.asarray(p.params.get("columns", range(len(mean))))  # files of version 3 and before: the first
    x = _inputs(base, specs, _operator_terms(base, specs)[0], columns, mean, np.asarray(p.params["std"]))
    return x @ np.asarray(p.params["coef"])


PREDICTOR_KINDS.add("transfer", PredictorKind(_predict))
