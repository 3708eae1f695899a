"""``transfer``: a predictor fitted on one device, adapted to a new device from a few of its measurements.

The shape comes from the device with many measurements: its predictor (any kind, the ``base``) ranks the
architectures and knows how their costs relate. The new device gives the scale and the few differences:
``latency = a x base(arch) + b + sum_t c_t x f_t(arch)``, the f_t being the per-operator features (count, MMACs
and MMACs with the channels padded as vectorised kernels compute them, per operator type, and the outputs'
elements; standardised), their coefficients shrunk towards zero by ridge (strength chosen by
leave-one-out error), a and b not shrunk. With a handful of measurements it is the base rescaled; with more the
operator terms learn what differs (int8's slower depthwise convolutions, another thread's fixed cost per
operator). Errors are weighed relatively, as latencies are compared by ratio. The file holds its base whole.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgekd.core.arch import ArchSpec
from edgekd.core.errors import ConfigError
from edgekd.latency_models.features import padded_mmacs
from edgekd.latency_models.predictors import PREDICTOR_KINDS, Predictor, PredictorKind

MIN_TRANSFER = 5
"""Fewest measurements of the new device a transfer is fitted on."""
PADDING = (8, 16)
"""Channel multiples vectorised kernels compute in (an int8 GEMM's or a SIMD unit's), whose padded work the
operator terms include."""
RIDGE_GRID = (*(10.0 ** e for e in range(-3, 5)), 1e8)
"""Ridge strengths tried; the last is the base merely rescaled."""


def _base(p: Predictor) -> Predictor:
    if "base" not in p.cache:
        b = p.params["base"]
        p.cache["base"] = Predictor(b["kind"], b["params"], b["meta"])
    return p.cache["base"]


def _operator_terms(base: Predictor, specs: list[ArchSpec]) -> np.ndarray:
    """Per operator type: count, MMACs, MMACs with the channels rounded up to 8 and to 16, and all outputs'
    elements."""
    return np.hstack([base.features(specs), *(np.array([padded_mmacs(s, m, base.op_types) for s in specs])
                                              for m in PADDING)])


def _inputs(base: Predictor, specs: list[ArchSpec], mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.hstack([base.predict_many(specs)[:, None], np.ones((len(specs), 1)),
                      (_operator_terms(base, specs) - mean) / std])


def _solve(x: np.ndarray, y: np.ndarray, w: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and leave-one-out residuals of the weighted ridge fit (first two columns not shrunk)."""
    penalty = np.full(x.shape[1], lam)
    penalty[:2] = 0.0
    xw = x * w[:, None]
    inverse = np.linalg.pinv(x.T @ xw + np.diag(penalty))
    coef = inverse @ (xw.T @ y)
    leverage = np.einsum("ij,jk,ik->i", x, inverse, xw)
    return coef, (y - x @ coef) / np.maximum(1 - leverage, 1e-6)


def fit_transfer(base: Predictor, pairs: list[tuple[ArchSpec, float]], meta: dict[str, Any] | None = None,
                 weights: np.ndarray | None = None) -> Predictor:
    """A ``transfer`` predictor: ``base`` (fitted on another device) adapted to the device ``pairs`` (architecture,
    measured ms) were measured on, each weighted by ``weights`` (equal by default)."""
    if len(pairs) < MIN_TRANSFER:
        raise ConfigError(f"adapting a predictor needs at least {MIN_TRANSFER} measurements of the new device, "
                          f"got {len(pairs)}")
    specs = [s for s, _ in pairs]
    y = np.array([ms for _, ms in pairs], dtype=float)
    w = (np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)) / y ** 2
    terms = _operator_terms(base, specs)
    mean, std = terms.mean(0), terms.std(0)
    std[std == 0] = 1.0
    x = _inputs(base, specs, mean, std)
    loo = [float(np.sum(w * _solve(x, y, w, lam)[1] ** 2)) for lam in RIDGE_GRID]
    lam = RIDGE_GRID[int(np.argmin(loo))]
    coef, _ = _solve(x, y, w, lam)
    params = {"base": {"kind": base.kind, "params": base.params, "meta": base.meta}, "coef": coef.tolist(),
              "mean": mean.tolist(), "std": std.tolist(), "ridge": lam}
    meta = {**(meta or {}), "fitted_on": len(pairs), "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "features": base.meta.get("features"), "base_device": base.meta.get("device"),
            "base_runtime": base.meta.get("runtime")}
    return Predictor("transfer", params, {k: v for k, v in meta.items() if v is not None})


def _predict(p: Predictor, specs: list[ArchSpec]) -> np.ndarray:
    base = _base(p)
    x = _inputs(base, specs, np.asarray(p.params["mean"]), np.asarray(p.params["std"]))
    return x @ np.asarray(p.params["coef"])


PREDICTOR_KINDS.add("transfer", PredictorKind(_predict))
