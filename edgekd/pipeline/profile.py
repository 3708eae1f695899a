"""``edgekd profile``: measure a device on random architectures, fit every predictor kind, report on held-out ones.

Measurements go through the device's measured latency model, so they are cached on disk: an interrupted
profile resumes where it stopped, and architectures measured by earlier searches are reused.
"""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from edgekd.core.arch import ArchSpec
from edgekd.core.config import write_json
from edgekd.core.devices import get_device
from edgekd.core.errors import ConfigError
from edgekd.core.measurement import Measurement
from edgekd.core.ui import progress
from edgekd.data import load_data
from edgekd.latency_models.features import features
from edgekd.latency_models.measured import MeasuredLatency
from edgekd.latency_models.predictors import (
    MIN_FIT,
    PREDICTOR_KINDS,
    Predictor,
    block_table_archs,
    fit_block_table,
    fit_kinds,
    fit_predictor,
    interval_weights,
    load_predictor,
    lut_design,
    varying_columns,
)
from edgekd.latency_models.transfer import fit_transfer
from edgekd.pipeline.context import latency_cache
from edgekd.spaces import SearchSpace, make_space

BEST = "best"
"""``--kind best``: the kind most accurate on the held-out architectures is the one the report names."""


def sample_archs(space: SearchSpace, n: int, seed: int) -> list[ArchSpec]:
    """``n`` distinct random architectures of ``space``."""
    rng, seen, specs = random.Random(seed), set(), []
    for _ in range(100 * n):
        spec = space.decode(space.sample(rng))
        if spec.id not in seen:
            seen.add(spec.id)
            specs.append(spec)
        if len(specs) == n:
            return specs
    return specs


def spread_archs(space: SearchSpace, n: int, seed: int, pool: int = 3000) -> list[ArchSpec]:
    """``n`` architectures of ``space`` chosen to make a fitted predictor as good as possible for that budget.
    From ``pool`` random ones, first each next the one a fit on those chosen so far knows least (the largest
    leverage in the standardised per-operator features, greedy D-optimal design): that pins down the per-operator
    costs, reaching the space's extremes and its rare operators, where random sampling piles up in the middle.
    Past two choices per feature the costs are pinned and what a fit still misses is how latency bends between
    the extremes, where the architectures a search meets lie, so the rest are random ones from the pool."""
    candidates = sample_archs(space, max(pool, n), seed)
    x = lut_design(np.array([features(s) for s in candidates]))[:, :-1]
    x = x[:, varying_columns(x)]
    x = (x - x.mean(0)) / x.std(0)
    inverse = np.eye(x.shape[1]) / 1e-3  # a weak prior keeps the first choices well defined
    chosen: list[int] = []
    for _ in range(min(n, 2 * x.shape[1], len(candidates))):
        leverage = np.einsum("ij,jk,ik->i", x, inverse, x)
        leverage[chosen] = -np.inf
        i = int(np.argmax(leverage))
        chosen.append(i)
        v = inverse @ x[i]
        inverse -= np.outer(v, v) / (1 + x[i] @ v)
    taken = set(chosen)
    rest = [i for i in range(len(candidates)) if i not in taken]
    return [candidates[i] for i in chosen + rest[: n - len(chosen)]]


def measure_all(
    latency: MeasuredLatency, specs: list[ArchSpec], what: str, chunk: int = 100
) -> tuple[list[Measurement], float]:
    """The measurement of every spec, in chunks (each cached as it completes, so an interrupted profile
    resumes), and the seconds per fresh measurement including its ONNX export."""
    out: list[Measurement] = []
    fresh, spent = 0, 0.0
    with progress(what, len(specs)) as bar:
        for start in range(0, len(specs), chunk):
            part = specs[start : start + chunk]
            new = sum(latency.cache.get(s.id, latency.device.fingerprint, latency.backend.runtime) is None
                      for s in part)
            t = time.perf_counter()
            out += latency.measure_many(part)
            if new:
                fresh, spent = fresh + new, spent + time.perf_counter() - t
            bar(advance=len(part))
    return out, spent / fresh if fresh else float("nan")


def accuracy_report(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """RMSE (ms), MAPE, share within ±10% (nn-Meter's headline metric) and Kendall tau."""
    rel = np.abs(predicted - measured) / measured
    return {"rmse_ms": float(np.sqrt(np.mean((predicted - measured) ** 2))), "mape": float(rel.mean()),
            "within10": float((rel <= 0.10).mean()), "kendall": float(kendalltau(predicted, measured)[0])}


def evaluate_predictors(
    train: list[tuple[ArchSpec, float]], heldout: list[tuple[ArchSpec, float]], meta: dict[str, Any],
    extra: dict[str, Predictor] | None = None, weights: np.ndarray | None = None,
) -> tuple[dict[str, Predictor], dict[str, dict[str, float]]]:
    """Fit every kind on ``train`` (each pair weighted by ``weights``; plus the ready ``extra`` ones); accuracy
    and prediction cost on ``heldout``."""
    measured = np.array([ms for _, ms in heldout])
    specs = [s for s, _ in heldout]
    fitted = {kind: fit_predictor(kind, train, meta, weights) for kind in fit_kinds()} | (extra or {})
    rows = {}
    for kind, p in fitted.items():
        start = time.perf_counter()
        predicted = np.array([p.predict(s) for s in specs])
        per_arch = (time.perf_counter() - start) / len(specs)
        rows[kind] = {**accuracy_report(predicted, measured), "predict_s_per_arch": per_arch}
    return fitted, rows


STEADY_WITHIN10 = 0.9
"""A device agrees with itself where at least this share of its re-measured architectures lie within ±10% of their
first measurement; below it a predictor's held-out figures measure the device's noise as much as its own error."""


def agrees_with_itself(ceiling: dict[str, float]) -> bool:
    """Whether a device's second measurement (``measurement_ceiling``'s report) agrees with its first one well
    enough for predictors to be judged on it."""
    return ceiling["within10"] >= STEADY_WITHIN10


def measurement_ceiling(latency: MeasuredLatency, specs: list[ArchSpec], first: list[float]) -> dict[str, float]:
    """How well a second measurement of ``specs`` agrees with the first (``first``): no predictor can agree with
    the measurements better than they agree with themselves."""
    second = np.array([m.median_ms for m in latency.remeasure(specs)])
    return accuracy_report(second, np.asarray(first))


def reference_choices(space: SearchSpace) -> dict[str, Any]:
    """The block table's reference network: every decision at its middle value."""
    return {d: values[len(values) // 2] for d, values in space.choices.items()}


def profile_device(
    latency: MeasuredLatency, space: SearchSpace, n_train: int, n_heldout: int, kind: str, out_dir: Path,
    seed: int = 0, blocks: bool = True, spread: bool = False, base: Predictor | None = None,
) -> dict[str, Any]:
    """Measure architectures to fit on (random ones, or with ``spread`` the ``spread_archs`` choice) and random
    held-out ones (and, with ``blocks``, the block table in context), fit every kind (and, given ``base``, a
    predictor of another device, its ``transfer`` to this one), save each kind's file, write
    DEVICE-profile.json; returns the report."""
    if n_train < MIN_FIT or n_heldout < 2:  # refused before minutes of measuring, not after
        raise ConfigError(f"profiling needs at least {MIN_FIT} architectures to fit on and 2 held out, "
                          f"got {n_train} and {n_heldout}")
    if spread:
        train = spread_archs(space, n_train, seed)
        chosen = {s.id for s in train}
        specs = train + [s for s in sample_archs(space, n_train + n_heldout, seed + 1) if s.id not in chosen][
            :n_heldout]
    else:
        specs = sample_archs(space, n_train + n_heldout, seed)
    measurements, measure_s = measure_all(latency, specs, f"profiling {latency.device.name}")
    pairs = [(spec, m.median_ms) for spec, m in zip(specs, measurements, strict=True)]
    meta = {"device": latency.device.name, "device_fingerprint": latency.device.fingerprint,
            "runtime": latency.backend.runtime, "space": space.describe()}
    weights = interval_weights(measurements[:n_train])
    extra = {}
    if blocks:
        reference = reference_choices(space)
        table = [spec for _, _, spec in block_table_archs(space, reference)]
        table_ms, _ = measure_all(latency, table, f"block table on {latency.device.name}")
        extra["blocks"] = fit_block_table(space, reference, [m.median_ms for m in table_ms], pairs[:n_train], meta)
    if base is not None:
        extra["transfer"] = fit_transfer(base, pairs[:n_train], meta, weights)
    fitted, rows = evaluate_predictors(pairs[:n_train], pairs[n_train:], meta, extra, weights)
    ceiling = measurement_ceiling(latency, specs[n_train:], [ms for _, ms in pairs[n_train:]])
    for row in rows.values():
        row["measure_s_per_arch"] = measure_s
        row["speedup"] = measure_s / row["predict_s_per_arch"] if measure_s == measure_s else None
    return save_profile(latency.device.name, fitted, rows, kind, out_dir, {
        "n_train": n_train, "n_heldout": len(pairs) - n_train, "chosen_by": "spread" if spread else "random",
        "protocol": latency.protocol.model_dump(), "measurement_ceiling": ceiling,
        "redone_for_drift": latency.redone})


def most_accurate(rows: dict[str, dict[str, float]]) -> str:
    """The kind with the most held-out architectures within ±10% (then the highest Kendall tau)."""
    return max(rows, key=lambda k: (rows[k]["within10"], rows[k]["kendall"]))


def save_profile(device: str, fitted: dict[str, Predictor], rows: dict[str, dict[str, float]], kind: str,
                 out_dir: Path, facts: dict[str, Any]) -> dict[str, Any]:
    """Save each fitted kind as DEVICE-KIND.json and the report (``facts`` and the held-out ``rows``) as
    DEVICE-profile.json, the chosen kind being ``kind`` or, for ``best``, the most accurate; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {k: str(p.save(out_dir / f"{device}-{k}.json")) for k, p in fitted.items()}
    chosen = most_accurate(rows) if kind == BEST else kind
    report = {"device": device, **facts, "chosen": chosen, "chosen_file": files[chosen], "files": files,
              "predictors": rows}
    write_json(out_dir / f"{device}-profile.json", report)
    return report


def _choice_columns(space: SearchSpace, header: list[str]) -> dict[str, dict[str, Any]]:
    """For each decision of ``space``: its allowed values by their text, as a CSV cell holds them."""
    missing = [d for d in space.choices if d not in header]
    if missing:
        raise ConfigError(f"the CSV needs an `ms` column and either an `arch` column (an ArchSpec as JSON) or one "
                          f"column per decision of space {space.name!r}; missing {', '.join(missing)}")
    return {d: {str(v): v for v in values} for d, values in space.choices.items()}


def _csv_row(row: dict[str, str], space: SearchSpace,
             columns: dict[str, dict[str, Any]] | None) -> tuple[ArchSpec, float]:
    try:
        ms = float(row["ms"])
    except (TypeError, ValueError):
        raise ConfigError(f"ms is {row['ms']!r}, not a number") from None
    if not ms > 0 or ms == float("inf"):
        raise ConfigError(f"ms is {ms:g}; a latency is a positive number of milliseconds")
    if columns is None:
        try:
            return ArchSpec.from_json(row["arch"]), ms
        except (TypeError, ValueError, KeyError) as e:
            raise ConfigError(f"arch is not an ArchSpec as JSON ({e})") from None
    choices = {}
    for decision, allowed in columns.items():
        if row[decision] not in allowed:
            raise ConfigError(f"{decision}={row[decision]!r} is not one of {', '.join(allowed)} in space "
                              f"{space.name!r}")
        choices[decision] = allowed[row[decision]]
    return space.decode(choices), ms


def read_latency_csv(path: Path, space: SearchSpace) -> list[tuple[ArchSpec, float]]:
    """(architecture, ms) pairs from a CSV of latencies measured elsewhere: an ``ms`` column and either an
    ``arch`` column (an ArchSpec as JSON) or one column per decision of ``space``. A bad row is a ConfigError
    that names its line."""
    if not path.is_file():
        raise ConfigError(f"no latency CSV at {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "ms" not in header:
            raise ConfigError(f"{path}: the CSV needs an `ms` column (latency in milliseconds); its header is "
                              f"{', '.join(header) or 'empty'}")
        try:
            columns = None if "arch" in header else _choice_columns(space, header)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        pairs = []
        for row in reader:
            try:
                pairs.append(_csv_row(row, space, columns))
            except ConfigError as e:
                raise ConfigError(f"{path}, line {reader.line_num}: {e}") from None
    return pairs


def import_profile(path: Path, device: str, space: SearchSpace, heldout: int, kind: str, out_dir: Path,
                   seed: int = 0, base: Predictor | None = None) -> dict[str, Any]:
    """``edgekd profile --import``: fit every predictor kind on latencies measured elsewhere (a CSV, see
    ``read_latency_csv``), scored on ``heldout`` of its rows drawn at random (at most a quarter of them); the
    files are named after ``device``."""
    pairs = read_latency_csv(path, space)
    random.Random(seed).shuffle(pairs)
    n_heldout = min(heldout, len(pairs) // 4)
    if len(pairs) - n_heldout < MIN_FIT or n_heldout < 2:
        raise ConfigError(f"{path}: {len(pairs)} rows; fitting needs at least {MIN_FIT} to fit on and 2 held out")
    train, held = pairs[n_heldout:], pairs[:n_heldout]
    meta = {"device": device, "runtime": f"imported from {path.name}", "space": space.describe()}
    extra = {"transfer": fit_transfer(base, train, meta)} if base is not None else None
    fitted, rows = evaluate_predictors(train, held, meta, extra)
    return save_profile(device, fitted, rows, kind, out_dir,
                        {"n_train": len(train), "n_heldout": n_heldout, "imported_from": str(path)})


def profile(device: str, devices_file: Path | None, archs: int, heldout: int, kind: str, blocks: bool, data: str,
            resolution: int | None, space: str, space_width: float, seed: int, out: Path,
            imported: Path | None = None, budget: int | None = None,
            transfer_from: Path | None = None) -> dict[str, Any]:
    """``edgekd profile``: measure the registry's ``device`` on ``archs`` random architectures of ``space``
    (inputs shaped like ``data``'s), or on ``budget`` ones spread over it, fit every predictor (and the transfer
    of the ``transfer_from`` predictor file) and write them and their report to ``out``; with ``imported``, fit
    them on that CSV's latencies instead, measuring nothing (``device`` then only names the files)."""
    if kind != BEST and (kind not in PREDICTOR_KINDS or (kind == "blocks" and (not blocks or imported)) or (
            kind == "transfer" and transfer_from is None)):
        raise ConfigError(f"--kind must be {BEST} or one of {', '.join(PREDICTOR_KINDS.names())} (blocks needs "
                          "--blocks and a device to measure, transfer needs --transfer-from)")
    if budget is not None and imported is not None:
        raise ConfigError("--budget chooses what to measure; with --import nothing is measured")
    try:  # before minutes of measuring: a folder that cannot be made would lose their fit
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the folder {out} for the predictor files: {exc.strerror}") from None
    base = load_predictor(transfer_from) if transfer_from is not None else None
    d = load_data(data, seed, resolution)
    c, res, _ = d.input_shape
    the_space = make_space(space, res, c, d.num_classes, space_width)
    if imported is not None:
        return import_profile(imported, device, the_space, heldout, kind, out, seed, base)
    latency = MeasuredLatency(get_device(device, devices_file), latency_cache())
    return profile_device(latency, the_space, archs if budget is None else budget, heldout, kind, out, seed, blocks,
                          budget is not None, base)
