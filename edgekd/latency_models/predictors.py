"""Latency predictors fitted from measurements, stored as portable, versioned JSON files (never pickles).

Kinds:
- ``flops``: latency = a·MACs + b·params + c, least squares: the baseline every predictor must beat.
- ``lut``: a lookup table of per-operator costs: each operator type (full conv per kernel, depthwise per
  kernel, pointwise, squeeze-excite, add, classifier) costs a fixed overhead plus a cost per MAC, and a
  network costs the sum plus a fitted overhead. Solved by non-negative least squares from whole-model
  measurements only, which is all a phone may give.
- ``blocks``: a block table profiled in context: a reference network of the space is measured with each
  decision of each stage set to each of its values in turn, and a network costs the reference's latency plus
  the difference each of its choices made, scaled and offset by a fit on whole-model measurements
  (``fit_block_table``; needs the space, so it only predicts architectures of that space).
- ``learned``: gradient-boosted regression trees over the same operator features (nn-Meter's idea of
  predicting from kernel-level features), stored as plain arrays and evaluated in numpy.
- ``table`` (``edgekd.latency_models.table``): a position-aware table, a cost per (layer slot, operator
  choice, input size) on top of the ``lut`` prior, fitted from whole-model measurements.
- ``transfer`` (``edgekd.latency_models.transfer``): a predictor of another device adapted to this one from a
  few measurements (``fit_transfer``).

``fit_predictor(kind, pairs)`` fits any kind from (ArchSpec, measured ms) pairs, wherever they were measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.core.arch import ArchSpec
from edgekd.core.devices import PredictorDevice
from edgekd.core.errors import ConfigError
from edgekd.core.measurement import Measurement
from edgekd.core.registry import Registry
from edgekd.latency_models import PREDICTING, CheckRows, PredictingKind
from edgekd.latency_models.features import FEATURE_NAMES, features, mparams, total_mmacs

if TYPE_CHECKING:
    from edgekd.spaces import SearchSpace

FILE_FORMAT, FILE_VERSION = "edgekd-latency-predictor", 4
"""2: a ``table`` may hold a calibration of its sum, which a reader of version 1 would silently leave out.
3: a ``transfer`` has terms for unaligned depthwise work and sized 7x7 ones, which a reader of version 2 would not
compute.
4: a ``transfer`` names the columns of its terms it was fitted on (the terms on channels filling no half vector and
the count of operators come after the sized ones), which a reader of version 3 would take as the first ones."""


@dataclass(frozen=True)
class PredictorKind:
    """How a kind of predictor predicts from its parameters and, where it can, fits them."""

    predict: Callable[[Predictor, list[ArchSpec]], np.ndarray]
    fit: Callable[[list[ArchSpec], np.ndarray, np.ndarray], dict[str, Any]] | None = None
    """Parameters from (architectures, measured ms, per-measurement weights) alone; None where a kind needs more
    (``blocks``, its table)."""


PREDICTOR_KINDS: Registry[PredictorKind] = Registry(
    "predictor_kinds", "predictor kind", ("edgekd.latency_models.table", "edgekd.latency_models.transfer"))


def fit_kinds() -> list[str]:
    """Kinds ``fit_predictor`` fits from (architecture, latency) pairs alone."""
    return [name for name, kind in PREDICTOR_KINDS.items() if kind.fit is not None]


@dataclass
class Predictor:
    """A fitted predictor: ``kind``, its parameters, and what it was fitted for."""

    kind: str
    params: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """What a kind derives from its parameters once (the learned kind's tree arrays)."""

    def predict(self, spec: ArchSpec) -> float:
        """Predicted latency of ``spec`` in ms."""
        return float(self.predict_many([spec])[0])

    def predict_many(self, specs: list[ArchSpec]) -> np.ndarray:
        return PREDICTOR_KINDS.get(self.kind).predict(self, specs)

    @property
    def op_types(self) -> tuple[str, ...]:
        """The operator types of the features it was fitted on (a file from before a type existed has fewer)."""
        names = self.meta.get("features", FEATURE_NAMES)
        return tuple(n.removeprefix("n_") for n in names if n.startswith("n_"))

    def features(self, specs: list[ArchSpec]) -> np.ndarray:
        """The feature rows of ``specs`` in the layout this predictor was fitted on."""
        return np.array([features(s, self.op_types) for s in specs])

    def save(self, path: Path) -> Path:
        """Write the predictor as JSON (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": FILE_FORMAT, "version": FILE_VERSION, "kind": self.kind, "meta": self.meta,
               "params": self.params}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(path)
        return path

    def lut_table(self) -> dict[str, dict[str, float]]:
        """For ``lut``: each operator type's overhead (ms) and cost per MMAC (ms), plus the network overhead."""
        if self.kind != "lut":
            raise ConfigError(f"a {self.kind} predictor has no lookup table")
        coef = self.params["coef"]
        types = self.op_types
        n = len(types)
        table = {t: {"overhead_ms": coef[i], "ms_per_mmac": coef[n + i]} for i, t in enumerate(types)}
        return table | {"network": {"overhead_ms": coef[-1], "ms_per_mmac": 0.0}}


def load_predictor(path: Path) -> Predictor:
    """Read a predictor file; clear errors for other files and newer versions."""
    if not path.is_file():
        raise ConfigError(f"predictor file not found: {path}")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not a predictor file (not JSON text: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
        raise ConfigError(f"{path} is not an edgekd latency predictor file")
    if doc.get("version", 0) > FILE_VERSION:
        raise ConfigError(f"{path} has predictor format version {doc['version']}; this edgekd reads {FILE_VERSION}")
    if doc.get("kind") not in PREDICTOR_KINDS:
        raise ConfigError(f"{path}: unknown predictor kind {doc.get('kind')!r}")
    if not isinstance(doc.get("params"), dict) or not isinstance(doc.get("meta", {}), dict):
        raise ConfigError(f"{path}: a predictor file's params and meta are JSON objects")
    return Predictor(doc["kind"], doc["params"], doc.get("meta", {}))


MIN_FIT = 10
"""Fewest measured architectures a predictor is fitted on."""


def interval_weights(measurements: list[Measurement], floor: float = 0.01) -> np.ndarray:
    """Weights of measurements for fitting, 1 / (relative half-width of the interval)², the half-width floored
    at ``floor``, scaled to mean 1; equal weights where a measurement has no interval (``median`` protocol)."""
    if any(m.low_ms is None or m.high_ms is None for m in measurements):
        return np.ones(len(measurements))
    half = np.array([(m.high_ms - m.low_ms) / (2 * m.median_ms) for m in measurements])
    w = 1 / np.maximum(half, floor) ** 2
    return w / w.mean()


def fit_predictor(kind: str, pairs: list[tuple[ArchSpec | dict[str, Any], float]], meta: dict[str, Any] | None = None,
                  weights: np.ndarray | None = None, space: SearchSpace | None = None) -> Predictor:
    """Fit a ``kind`` predictor on (architecture, measured latency in ms) pairs, each weighted by ``weights``
    (equal by default; ``interval_weights`` trusts precise measurements more). An architecture may also be the
    choices of ``space`` (any registered space), checked and decoded there."""
    if any(not isinstance(a, ArchSpec) for a, _ in pairs):
        if space is None:
            raise ConfigError("architectures given as choices need the space they belong to (space=...)")
        for a, _ in pairs:
            if not isinstance(a, ArchSpec):
                space.check(a)
        pairs = [(a if isinstance(a, ArchSpec) else space.decode(a), ms) for a, ms in pairs]
    fit = PREDICTOR_KINDS.get(kind).fit
    if fit is None:
        raise ConfigError(f"a {kind} predictor is not fitted from measured architectures alone")
    if len(pairs) < MIN_FIT:
        raise ConfigError(f"fitting a predictor needs at least {MIN_FIT} measured architectures, got {len(pairs)}")
    specs = [s for s, _ in pairs]
    y = np.array([ms for _, ms in pairs], dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    meta = {**(meta or {}), "fitted_on": len(pairs), "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "features": list(FEATURE_NAMES), "weighted": weights is not None}
    return Predictor(kind, fit(specs, y, w), meta)


def _flops_inputs(specs: list[ArchSpec]) -> np.ndarray:
    return np.array([[total_mmacs(s), mparams(s), 1.0] for s in specs])


def _fit_flops(specs: list[ArchSpec], y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    root = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(_flops_inputs(specs) * root[:, None], y * root, rcond=None)
    return {"coef": coef.tolist(), "inputs": ["mmacs", "mparams", "1"]}


def fit_lut(specs: list[ArchSpec], y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """The ``lut`` kind's coefficients: non-negative least squares on ``lut_design``, weighted by ``w``."""
    from scipy.optimize import nnls

    root = np.sqrt(w)
    coef, _ = nnls(lut_design(np.array([features(s) for s in specs])) * root[:, None], y * root)
    return {"coef": coef.tolist()}


def _predict_learned(p: Predictor, specs: list[ArchSpec]) -> np.ndarray:
    if "trees" not in p.cache:
        p.cache["trees"] = _tree_arrays(p.params)
    return np.exp(_predict_trees(p.params, p.cache["trees"], p.features(specs)))


PREDICTOR_KINDS.add("flops", PredictorKind(lambda p, specs: _flops_inputs(specs) @ np.asarray(p.params["coef"]),
                                           _fit_flops))
PREDICTOR_KINDS.add("lut", PredictorKind(
    lambda p, specs: lut_design(p.features(specs)) @ np.asarray(p.params["coef"]), fit_lut))
PREDICTOR_KINDS.add("learned", PredictorKind(
    _predict_learned, lambda specs, y, w: _fit_trees(np.array([features(s) for s in specs]), np.log(y), w)))
PREDICTOR_KINDS.add("blocks", PredictorKind(
    lambda p, specs: np.array([_block_table_estimate(p.params, s) for s in specs])))


def block_table_archs(space, reference: dict[str, Any]) -> list[tuple[str | None, Any, ArchSpec]]:
    """(decision, value, network) to profile: the reference, then each decision set to each other value."""
    rows = [(None, None, space.decode(reference))]
    for decision, values in space.choices.items():
        rows += [(decision, v, space.decode({**reference, decision: v})) for v in values if v != reference[decision]]
    return rows


def fit_block_table(
    space, reference: dict[str, Any], profiled_ms: list[float], pairs: list[tuple[ArchSpec, float]],
    meta: dict[str, Any] | None = None,
) -> Predictor:
    """A ``blocks`` predictor from the latencies of ``block_table_archs(space, reference)`` (in that order),
    calibrated (scale and offset) on whole-model measurements ``pairs``."""
    rows = block_table_archs(space, reference)
    base = profiled_ms[0]
    deltas: dict[str, dict[str, float]] = {d: {json.dumps(reference[d]): 0.0} for d in space.choices}
    for (decision, value, _), ms in zip(rows[1:], profiled_ms[1:], strict=True):
        deltas[decision][json.dumps(value)] = ms - base
    params = {"space": space.describe(), "reference": reference, "reference_ms": base, "deltas": deltas,
              "scale": 1.0, "offset": 0.0}
    if pairs:
        raw = np.array([_block_table_estimate(params, s) for s, _ in pairs])
        (scale, offset), *_ = np.linalg.lstsq(np.stack([raw, np.ones_like(raw)], 1), [ms for _, ms in pairs],
                                              rcond=None)
        params |= {"scale": float(scale), "offset": float(offset)}
    meta = {**(meta or {}), "fitted_on": len(pairs), "profiled": len(rows),
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    return Predictor("blocks", params, meta)


def _block_table_estimate(params: dict[str, Any], spec: ArchSpec) -> float:
    from edgekd.spaces import space_of

    choices = space_of(params["space"]).encode(spec)
    raw = params["reference_ms"] + sum(params["deltas"][d][json.dumps(v)] for d, v in choices.items())
    return params["scale"] * raw + params["offset"]


def varying_columns(x: np.ndarray) -> np.ndarray:
    """Which columns of ``x`` vary: a constant one, give or take rounding, would be standardised into noise."""
    return x.std(0) > 1e-9 * np.abs(x).max(0)


def lut_design(x: np.ndarray) -> np.ndarray:
    """Columns: operator counts, operator MMACs (the features without the output size), and 1 (the network
    overhead)."""
    return np.hstack([x[:, :-1], np.ones((len(x), 1))])


def _fit_trees(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8,
                                      random_state=0).fit(x, y, sample_weight=w)
    trees = []
    for est in model.estimators_[:, 0]:
        t = est.tree_
        trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "feature": t.feature.tolist(), "threshold": t.threshold.tolist(),
                      "value": t.value[:, 0, 0].tolist()})
    return {"init": float(model.init_.constant_[0][0]), "learning_rate": model.learning_rate, "trees": trees}


def _tree_arrays(params: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """The trees as padded (n_trees, max_nodes) arrays, so that all of them are walked at once."""
    trees = params["trees"]
    width = max(len(t["left"]) for t in trees)

    def pad(key: str, fill: float) -> np.ndarray:
        return np.array([t[key] + [fill] * (width - len(t[key])) for t in trees])

    return pad("left", -1).astype(int), pad("right", -1).astype(int), pad("feature", 0).astype(int), \
        pad("threshold", 0.0), pad("value", 0.0)


def _predict_trees(params: dict[str, Any], trees: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
    left, right, feat, thr, val = trees
    rows = np.arange(len(left))
    out = np.empty(len(x))
    for i, sample in enumerate(x):
        node = np.zeros(len(left), dtype=int)
        while True:
            child = left[rows, node]
            inner = child != -1
            if not inner.any():
                break
            go_left = sample[feat[rows, node]] <= thr[rows, node]
            node = np.where(inner, np.where(go_left, child, right[rows, node]), node)
        out[i] = params["init"] + params["learning_rate"] * val[rows, node].sum()
    return out


class PredictedLatency:
    """LatencyModel of a ``predictor`` device: latency from a fitted predictor, no device needed."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def latency_ms(self, spec: ArchSpec) -> float:
        return self.predictor.predict(spec)

    def latency_many(self, specs: list[ArchSpec]) -> list[float]:
        return self.predictor.predict_many(specs).tolist()


def _check_file(spec: PredictorDevice) -> CheckRows:
    try:
        p = load_predictor(Path(spec.file))
    except ConfigError as exc:
        return [("predictor file", False, str(exc))]
    return [("predictor file", True, f"{p.kind}, fitted on {p.meta.get('fitted_on')} architectures of "
                                     f"{p.meta.get('device')} ({p.meta.get('runtime')})")]


PREDICTING.add("predictor", PredictingKind(lambda spec: PredictedLatency(load_predictor(Path(spec.file))), _check_file))
