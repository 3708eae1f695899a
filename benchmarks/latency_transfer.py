"""Predictors that need few measurements, with this host's runtimes taken as different devices.

Devices, all on this host, each timed with the interleaved protocol against the reference model in its own
runtime (±3% or 10 s per model):
  ort-1t    ONNX Runtime fp32, one thread (the shipped `host-cpu`): the device with many measurements
  ort-2t    ONNX Runtime fp32, two threads
  ort-int8  ONNX Runtime static int8 (QDQ), one thread
  litert    LiteRT fp32 with XNNPACK, one thread, in this process (each conversion takes 10-20 s here, so they
            are cached in --convert-cache; --convert-only makes them and stops, as they need no quiet machine)
Architectures: the quick-start space (mnas, 16x16 digits, width 0.25); --heldout random ones, the same on every
device. A device's architectures (to fit and held out) are timed in one shuffled order: this host's timings drift
by 10-20% over minutes, which would otherwise shift the ones measured first against the ones measured later.

1. Table: on ort-1t, the position-aware `table` fitted on --table-budget architectures chosen by `spread_archs`
   (what `edgekd profile --budget` measures), scored on the held-out ones; beside it `lut` on the same data.
2. Transfer: on each other device, ort-1t's table adapted (`fit_transfer`) from --transfer-budget of that
   device's measurements, chosen by `spread_archs`, scored on the held-out ones measured there. Baselines from
   the same run: `lut` and `table` fitted on those measurements alone, ort-1t's table merely rescaled (a x
   table + b), and the transfer from as many random architectures instead of spread ones.
3. Ceiling: --ceiling of the held-out architectures measured a second time on every device, at the end of the
   run; how well the two agree (drift over the run included) is the most any predictor can reach there.
--passes N: every device's protocol takes N passes, so each architecture's one measurement is the geometric mean
of N timings at different moments (a shared host's contention moves a model's ratio to the reference over
minutes, which one pass cannot average away; N times the timing, the same architectures).
Bar: on every device whose measurements agree with themselves (>= 90% within ±10%), the transfer has >= 90%
within ±10% and Kendall >= 0.85 from <= 30 measurements; the table >= 99% within ±10% from <= 300 (judged where
ort-1t agrees with itself).
Ends with one line of JSON: {"transfer_within10", "transfer_kendall" (the worst such device's),
"transfer_measurements", "transfer_devices", "table_within10", "table_kendall", "table_measurements",
"n_heldout", "passes", "ceiling": {device: {...}}, "devices": {device: {...}}}.

    python benchmarks/latency_transfer.py [--table-budget 300] [--transfer-budget 30] [--heldout 200]
        [--ceiling 40] [--convert-cache DIR] [--convert-only] [--save FILE] [--targets ort-2t,ort-int8,litert]
        [--passes 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from arguments import names_of, positive_int

SPACE = ("mnas", 16, 1, 10, 0.25)
SEEDS = {"heldout": 1000, "transfer": 2}
TARGETS = ("ort-2t", "ort-int8", "litert")


def tflite_file(spec, cache: Path) -> Path:
    """``spec`` converted to LiteRT fp32 by edgekd's exporter, cached by its id."""
    from edgekd.core.arch import build
    from edgekd.exporters import get_format

    # not the conversions from before 7x7 depthwise bands (tflite/), nor before BatchNorms were folded (tflite-bands/)
    target = cache / "tflite-bands-folded" / f"{spec.id}.tflite"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            made = get_format("tflite").export(build(spec).eval(), spec, Path(tmp) / spec.id, {})
            part = target.with_suffix(f".{os.getpid()}.part")  # whole or absent, whoever else converts it
            shutil.move(made, part)
            os.replace(part, target)
    return target


class LiteRTDevice:
    """LiteRT fp32 with XNNPACK, one thread, in this process: each model timed against the reference model's
    LiteRT conversion with the interleaved protocol (edgekd.runtime.protocol), in ``passes`` passes."""

    def __init__(self, cache: Path, passes: int) -> None:
        from edgekd.latency_models.measured import reference_arch
        from edgekd.runtime.litert import open_tflite
        from edgekd.runtime.timing import time_runner

        self.cache, self.passes = cache, passes
        self.again = self  # nothing is cached: measuring again is measuring
        reference = reference_arch((1, 16, 16))
        self.reference_run = open_tflite(tflite_file(reference, cache), 1)
        self.reference_ms = time_runner(self.reference_run, reference.input_shape, 50, 300, 1, "litert").median_ms

    def __call__(self, specs: list) -> np.ndarray:
        from edgekd.core.ui import progress
        from edgekd.runtime.litert import open_tflite
        from edgekd.runtime.protocol import (
            Settings,
            block_sampler,
            calls_per_block,
            combine_passes,
            interleave,
            pass_order,
        )

        x = np.random.default_rng(0).standard_normal((1, 1, 16, 16), dtype=np.float32)
        reference = block_sampler(self.reference_run, x, calls_per_block(self.reference_run, x, 20))
        samplers: dict[int, object] = {}
        results: list[list] = [[] for _ in specs]
        with progress("timing on litert", len(specs) * self.passes) as bar:
            for p in range(self.passes):
                for i in pass_order(len(specs), p):
                    if i not in samplers:
                        run = open_tflite(tflite_file(specs[i], self.cache), 1)
                        samplers[i] = block_sampler(run, x, calls_per_block(run, x, 20))
                    results[i].append(interleave(samplers[i], reference, Settings()))
                    bar(advance=1)
        return np.array([combine_passes(r).ratio * self.reference_ms for r in results])


def ort_device(name: str, cache: Path, passes: int, **fields):
    """A MeasuredLatency of ONNX Runtime on this host with ``fields`` (threads, variant), in ``passes`` passes."""
    from edgekd.core.devices import LocalDevice, MeasurementProtocol, NamedDevice
    from edgekd.latency_models.measured import MeasuredLatency

    protocol = MeasurementProtocol(passes=passes)
    latency = MeasuredLatency(NamedDevice(name=name, spec=LocalDevice(**fields, protocol=protocol)), cache)

    def measure(specs: list) -> np.ndarray:
        from edgekd.pipeline.profile import measure_all

        return np.array([m.median_ms for m in measure_all(latency, specs, f"timing on {name}")[0]])

    measure.again = lambda specs: np.array([m.median_ms for m in latency.remeasure(specs)])
    return measure


def shuffled(measure, groups: list[list]) -> list[np.ndarray]:
    """``measure`` of every group's architectures, all timed in one shuffled order and returned per group, so
    that a device drifting during the run blurs every group alike rather than shifting one against another."""
    specs = [s for group in groups for s in group]
    order = np.random.default_rng(0).permutation(len(specs))
    ms = np.empty(len(specs))
    ms[order] = measure([specs[i] for i in order])
    return np.split(ms, np.cumsum([len(g) for g in groups])[:-1])


def score(predicted: np.ndarray, measured: np.ndarray) -> dict:
    from edgekd.pipeline.profile import accuracy_report

    return {k: round(v, 4) for k, v in accuracy_report(predicted, measured).items()}


def rescaled(base, pairs: list, specs: list) -> np.ndarray:
    """Predictions of ``specs`` by ``base`` merely rescaled to the new device (least squares a x base + b)."""
    a, b = np.polyfit(base.predict_many([s for s, _ in pairs]), [ms for _, ms in pairs], 1)
    return a * base.predict_many(specs) + b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-budget", type=int, default=300)
    parser.add_argument("--transfer-budget", type=int, default=30)
    parser.add_argument("--heldout", type=int, default=200)
    parser.add_argument("--ceiling", type=int, default=40, help="held-out architectures measured a second time")
    parser.add_argument("--convert-cache", type=Path, help="LiteRT conversions (default: a fresh temporary folder)")
    parser.add_argument("--convert-only", action="store_true", help="make the LiteRT conversions and stop")
    parser.add_argument("--save", type=Path, help='write every measurement here, {device: {arch id: ms}, '
                        '"fitted": {device: {"spread" or "random": {arch id: ms}}}}')
    parser.add_argument("--passes", type=positive_int, default=1, help="the protocol's passes on every device: each "
                        "architecture's measurement the geometric mean of this many timings at different moments")
    parser.add_argument("--targets", type=names_of(TARGETS), default=TARGETS,
                        help=f"the devices to transfer to, of {', '.join(TARGETS)} (comma-separated)")
    args = parser.parse_args()
    targets = args.targets
    root = Path(tempfile.mkdtemp(prefix="edgekd-transfer-"))
    os.environ.setdefault("EDGEKD_CACHE", str(root / "cache"))

    from edgekd.core.ui import progress
    from edgekd.latency_models.measured import reference_arch
    from edgekd.latency_models.predictors import fit_predictor
    from edgekd.latency_models.transfer import fit_transfer
    from edgekd.pipeline.context import latency_cache
    from edgekd.pipeline.profile import STEADY_WITHIN10, agrees_with_itself, sample_archs, spread_archs
    from edgekd.spaces import make_space

    space = make_space(SPACE[0], *SPACE[1:4], width=SPACE[4])
    heldout = sample_archs(space, args.heldout, SEEDS["heldout"])
    few = {"spread": spread_archs(space, args.transfer_budget, SEEDS["transfer"]),
           "random": sample_archs(space, args.transfer_budget, SEEDS["transfer"])}
    convert_cache = args.convert_cache or root / "converted"
    if args.convert_only:
        todo = [reference_arch((1, 16, 16)), *few["spread"], *few["random"], *heldout]
        with progress("converting to LiteRT", len(todo)) as bar:
            for spec in todo:
                tflite_file(spec, convert_cache)
                bar(advance=1)
        return

    cache = latency_cache()
    source = ort_device("ort-1t", cache, args.passes, threads=1)
    table_specs = spread_archs(space, args.table_budget, 0)
    table_ms, heldout_ms = shuffled(source, [table_specs, heldout])
    saved = {"ort-1t": {s.id: float(ms) for s, ms in zip(table_specs + heldout, [*table_ms, *heldout_ms],
                                                           strict=True)}}
    pairs = list(zip(table_specs, table_ms, strict=True))
    table = fit_predictor("table", pairs, {"device": "ort-1t"})
    table_row = {kind: score(p.predict_many(heldout), heldout_ms)
                 for kind, p in (("table", table), ("lut", fit_predictor("lut", pairs)))}
    remeasure = {"ort-1t": (source.again, heldout_ms)}
    print(f"\nort-1t, {len(pairs)} spread architectures to fit, {len(heldout)} random held out:")
    for kind, r in table_row.items():
        print(f"  {kind:<6} within ±10% {r['within10']:.1%}  Kendall {r['kendall']:.3f}  MAPE {r['mape']:.1%}")

    devices = {"ort-2t": lambda: ort_device("ort-2t", cache, args.passes, threads=2),
               "ort-int8": lambda: ort_device("ort-int8", cache, args.passes, threads=1, variant="int8"),
               "litert": lambda: LiteRTDevice(convert_cache, args.passes)}
    rows = {}
    for name in targets:
        measure = devices[name]()
        truth, *few_ms = shuffled(measure, [heldout, *few.values()])
        fitted = {how: list(zip(specs, ms, strict=True)) for (how, specs), ms in zip(few.items(), few_ms, strict=True)}
        saved[name] = {s.id: float(ms) for s, ms in [*zip(heldout, truth, strict=True), *fitted["spread"],
                                                     *fitted["random"]]}
        # an architecture both spread and random was timed twice: each fit's own timings, to re-fit it offline
        saved.setdefault("fitted", {})[name] = {how: {s.id: float(ms) for s, ms in pairs}
                                                for how, pairs in fitted.items()}
        predictions = {
            "transfer": fit_transfer(table, fitted["spread"]).predict_many(heldout),
            "transfer_from_random": fit_transfer(table, fitted["random"]).predict_many(heldout),
            "rescaled_only": rescaled(table, fitted["spread"], heldout),
            "lut_alone": fit_predictor("lut", fitted["spread"]).predict_many(heldout),
            "table_alone": fit_predictor("table", fitted["spread"]).predict_many(heldout)}
        rows[name] = {k: score(v, truth) for k, v in predictions.items()}
        rows[name]["vs_ort_1t"] = round(float(np.median(truth / heldout_ms)), 3)
        remeasure[name] = (measure.again, truth)
    # measured again at the end, so that the ceiling shows how far the device drifted over the whole run
    ceiling = {name: score(again(heldout[:args.ceiling]), first[:args.ceiling])
               for name, (again, first) in remeasure.items()}
    print(f"\ntransfer from ort-1t's table with {args.transfer_budget} measurements of each device, "
          f"{len(heldout)} held out (within ±10% / Kendall):")
    print(f"{'device':<10}{'x ort-1t':>9}" + "".join(f"{k:>22}" for k in rows[targets[0]] if k != "vs_ort_1t"))
    for name, row in rows.items():
        print(f"{name:<10}{row['vs_ort_1t']:>9.2f}" + "".join(
            f"{r['within10']:>14.1%} / {r['kendall']:.3f}" for k, r in row.items() if k != "vs_ort_1t"))
    if args.save:
        args.save.write_text(json.dumps(saved))
    print(f"\nmeasurement ceiling: {args.ceiling} held-out architectures measured a second time agree with the "
          "first (within ±10% / Kendall):")
    for name, c in ceiling.items():
        print(f"  {name:<9} {c['within10']:.1%} / {c['kendall']:.3f}")
    # no predictor can agree with a device better than the device agrees with itself
    steady = [d for d in rows if agrees_with_itself(ceiling[d])]
    print(f"devices whose measurements agree with themselves (>= {STEADY_WITHIN10:.0%} within ±10%): "
          f"{', '.join(steady) or 'none'}")
    worst = min(steady or rows, key=lambda d: (rows[d]["transfer"]["within10"], rows[d]["transfer"]["kendall"]))
    t = rows[worst]["transfer"]
    transfer_met = bool(steady) and all(
        rows[d]["transfer"]["within10"] >= 0.9 and rows[d]["transfer"]["kendall"] >= 0.85 for d in steady)
    table_met = table_row["table"]["within10"] >= 0.99
    unsteady = " (not judgeable: its measurements do not agree with themselves)"
    print(f"bar: transfer >= 90% within ±10% and Kendall >= 0.85 from {args.transfer_budget} measurements on every "
          f"such device: {'met' if transfer_met else 'NOT met'} (worst {worst}{'' if steady else unsteady}); table "
          f">= 99% within ±10% from {args.table_budget}: {'met' if table_met else 'NOT met'}"
          f"{'' if agrees_with_itself(ceiling['ort-1t']) else unsteady}")
    print(json.dumps({"transfer_within10": t["within10"], "transfer_kendall": min(
        rows[d]["transfer"]["kendall"] for d in steady or rows), "transfer_measurements": args.transfer_budget,
        "transfer_devices": steady, "table_within10": table_row["table"]["within10"],
        "table_kendall": table_row["table"]["kendall"], "table_measurements": args.table_budget,
        "n_heldout": len(heldout), "passes": args.passes, "ceiling": ceiling, "devices": rows}))


if __name__ == "__main__":
    main()
