"""Every export format on this host, fp32 against int8 per runtime, for two students, measured in one run.

Students as in export.py: the quick-start student (from a finished default run given by --run, else a fresh
default run, a few minutes) and torchvision's mobilenet_v3_small trained on the spot on digits at 32x32. Each
is exported by edgekd's own exporters to every installed format (ONNX Runtime: onnx, onnx-fp16, onnx-int8,
ort; LiteRT with XNNPACK: tflite, tflite-int8; ExecuTorch with XNNPACK: executorch, executorch-int8,
executorch-int8-pointwise), each file opened in its own runtime and timed there at batch 1 with one thread
(warm-up 20, median of 200, the formats timed in turn in --rounds rounds, each format's figure the median of its
rounds), and its held-out top-1 measured. The baseline of each runtime's int8 formats is its own fp32 format.
Bar: at least one runtime's int8 is faster than its fp32 with at most a 1-point top-1 drop, for the quick-start
student.
Ends with one line of JSON: {"best_int8_vs_fp32", "best_int8_runtime", "best_int8_format", "int8_acc_drop",
"formats"}.

    python benchmarks/phone_formats.py [--run runs/quickstart] [--mobilenet-epochs 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from export import REPEATS, WARMUP, for_both_students, student_options

# runtime: (fp32 format, int8 formats, other formats of that runtime)
RUNTIMES = {"onnxruntime": ("onnx", ("onnx-int8",), ("onnx-fp16", "ort")),
            "litert-xnnpack": ("tflite", ("tflite-int8",), ()),
            "executorch-xnnpack": ("executorch", ("executorch-int8", "executorch-int8-pointwise"), ())}


def measure_formats(name: str, model: nn.Module, data, out_dir: Path, rounds: int) -> dict:
    """Latency (median of ``rounds`` rounds) and held-out top-1 of ``model`` in every installed format."""
    from edgekd.core.devices import LocalDevice, NamedDevice
    from edgekd.exporters import available_formats, get_format
    from edgekd.pipeline.validate import run_batched
    from edgekd.runtime.timing import time_runner

    torch.set_num_threads(1)
    device = NamedDevice(name="host", spec=LocalDevice(threads=1))
    images, labels = (t.numpy() for t in data.tensors("val"))
    options = {"calibration": data.tensors("train")[0][:256].numpy(), "device": device}
    shape = SimpleNamespace(input_shape=data.input_shape)  # exporters read only the input shape
    runners, rows, here = {}, {}, available_formats()
    for fp32, int8, others in RUNTIMES.values():
        for fmt in (fp32, *int8, *others):
            if fmt not in here:
                print(f"{fmt}: skipped, its extra is not installed")
            else:
                folder = out_dir / name / fmt
                folder.mkdir(parents=True)
                path = get_format(fmt).export(model, shape, folder, options)
                runners[fmt] = get_format(fmt).open(path, device)
                rows[fmt] = {"acc": float((run_batched(runners[fmt], images).argmax(1) == labels).mean()),
                             "size_bytes": path.stat().st_size, "runtime": get_format(fmt).runtime()}
    times = {fmt: [] for fmt in runners}
    for _ in range(rounds):  # in turn, so that a slow spell of the host spreads over every format
        for fmt, run in runners.items():
            times[fmt].append(time_runner(run, data.input_shape, WARMUP, REPEATS, 1, fmt).median_ms)
    for fmt, ms in times.items():
        rows[fmt] |= {"latency_ms": float(np.median(ms)), "rounds_ms": [round(t, 4) for t in ms]}
    return rows


def int8_gains(rows: dict) -> dict[str, dict]:
    """Per int8 format measured beside its runtime's fp32 one: its runtime, its latency over fp32's, and its
    top-1 drop in points."""
    return {fmt: {"runtime": runtime, "int8_vs_fp32": rows[fmt]["latency_ms"] / rows[fp32]["latency_ms"],
                  "acc_drop": (rows[fp32]["acc"] - rows[fmt]["acc"]) * 100}
            for runtime, (fp32, int8, _) in RUNTIMES.items() for fmt in int8 if fp32 in rows and fmt in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    student_options(parser)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = for_both_students(args, lambda *a: measure_formats(*a, args.rounds))
    print(f"\n{'model':<22}{'format':<27}{'runtime':<28}{'latency ms':>11}{'top-1':>8}{'KiB':>8}")
    for model, rows in results.items():
        for fmt, r in rows.items():
            print(f"{model:<22}{fmt:<27}{r['runtime'][:27]:<28}{r['latency_ms']:>11.4f}{r['acc']:>8.4f}"
                  f"{r['size_bytes'] / 1024:>8.0f}")
    print(f"\n{'model':<22}{'runtime':<20}{'int8 format':<27}{'int8 / fp32 latency':>20}{'top-1 drop (pts)':>18}")
    gains = {model: int8_gains(rows) for model, rows in results.items()}
    for model, by_format in gains.items():
        for fmt, g in by_format.items():
            print(f"{model:<22}{g['runtime']:<20}{fmt:<27}{g['int8_vs_fp32']:>19.3f}x{g['acc_drop']:>18.2f}")
    student = gains["quick-start student"]
    fair = {fmt: g for fmt, g in student.items() if g["acc_drop"] <= 1} or student
    best = min(fair, key=lambda fmt: fair[fmt]["int8_vs_fp32"])
    met = fair[best]["int8_vs_fp32"] < 1 and fair[best]["acc_drop"] <= 1
    print(f"bar: a runtime's int8 faster than its fp32 with at most 1 point of top-1 drop: "
          f"{'met' if met else 'NOT met'} ({best}, {fair[best]['runtime']}: {fair[best]['int8_vs_fp32']:.3f}x, "
          f"{fair[best]['acc_drop']:.2f} pts)")
    formats = {fmt: {"latency_ms": round(r["latency_ms"], 4), "acc": round(r["acc"], 4)}
               for fmt, r in results["quick-start student"].items()}
    print(json.dumps({"best_int8_vs_fp32": round(fair[best]["int8_vs_fp32"], 4),
                      "best_int8_runtime": fair[best]["runtime"], "best_int8_format": best,
                      "int8_acc_drop": round(fair[best]["acc_drop"], 4), "formats": formats}))


if __name__ == "__main__":
    main()
