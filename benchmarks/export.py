"""PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8 on this host, for two students, measured in one run.

Students: the quick-start student (from a finished default run given by --run, else a fresh default run in a
temporary directory, which takes a few minutes) and torchvision's mobilenet_v3_small (one-channel stem),
trained on the spot on the digits data at 32x32. For each: batch-1 latency with one thread in each runtime
(warm-up 20, median of 200) and held-out top-1. Bar: ONNX Runtime fp32 at most 0.5x eager latency; int8
faster than fp32 with at most 1 point of accuracy drop on the quick-start student.
Ends with one line of JSON: {"ort_vs_eager", "int8_vs_fp32", "int8_acc_drop"} for the quick-start student.

    python benchmarks/export.py [--run runs/quickstart] [--mobilenet-epochs 15] [--provider cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

WARMUP, REPEATS = 20, 200


def quickstart_student(run: Path | None):
    """(student model, data) of a finished default run, running one first if ``run`` is None."""
    from edgekd.core.config import RunConfig, read_json
    from edgekd.data import load_data
    from edgekd.pipeline.distill import load_student
    from edgekd.pipeline.run import run_all

    if run is None:
        root = Path(tempfile.mkdtemp(prefix="edgekd-export-bench-"))
        os.environ["EDGEKD_CACHE"] = str(root / "cache")
        run = run_all(RunConfig(), root / "runs").run_dir
    cfg = RunConfig.model_validate(read_json(run / "config.json"))
    data = load_data(cfg.data, cfg.seed, cfg.resolution, cfg.mini_val_fraction, cfg.val_fraction)
    return load_student(run / "student").model, data


def mobilenet_student(epochs: int):
    """torchvision's mobilenet_v3_small with a one-channel stem, trained on digits at 32x32 with hard labels."""
    import torchvision

    from edgekd.core.config import TrainConfig
    from edgekd.data import load_data
    from edgekd.train import train

    data = load_data("digits", resolution=32)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=data.num_classes)
    model.features[0][0] = nn.Conv2d(1, 16, 3, 2, 1, bias=False)
    for m in model.modules():  # torchvision's BN momentum 0.01 leaves running stats unsettled after a short run
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    train(model, data, TrainConfig(epochs=epochs, lr=3e-3))
    return model.eval(), data


def compare_runtimes(name: str, model: nn.Module, data, out_dir: Path, provider: str = "cpu") -> dict:
    """Latency and held-out accuracy of ``model`` in PyTorch eager, ONNX Runtime fp32 and int8.

    ``provider`` cuda: eager PyTorch on the GPU against ONNX Runtime's CUDA provider (copies in and out
    included on both sides)."""
    from edgekd.exporters.onnx import export_onnx
    from edgekd.exporters.onnx_int8 import quantize_int8
    from edgekd.pipeline.validate import run_batched
    from edgekd.runtime.ort import open_onnx
    from edgekd.runtime.timing import time_runner

    torch.set_num_threads(1)  # the same single thread ONNX Runtime gets
    images, labels = (t.numpy() for t in data.tensors("val"))
    calibration = data.tensors("train")[0][:256].numpy()

    fp32 = export_onnx(model, data.input_shape, out_dir / f"{name}.onnx", simplify=True)  # as `onnx` exports
    int8 = quantize_int8(fp32, out_dir / f"{name}-int8.onnx", calibration)  # as `onnx-int8` exports
    device = "cuda" if provider == "cuda" else "cpu"
    model = model.to(device)

    @torch.inference_mode()
    def eager(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(device)).cpu().numpy()

    runners = {"eager": eager, "onnx": open_onnx(fp32, provider=provider),
               "onnx-int8": open_onnx(int8, provider=provider)}
    rows = {}
    for key, run in runners.items():
        m = time_runner(run, data.input_shape, WARMUP, REPEATS, 1, key)
        rows[key] = {"latency_ms": m.median_ms, "p10_ms": m.p10_ms, "p90_ms": m.p90_ms,
                     "acc": float((run_batched(run, images).argmax(1) == labels).mean())}
    return rows


def student_options(parser: argparse.ArgumentParser) -> None:
    """The options that pick the two students (--run, --mobilenet-epochs)."""
    parser.add_argument("--run", type=Path, help="a finished default run (default: make one, a few minutes)")
    parser.add_argument("--mobilenet-epochs", type=int, default=15)


def for_both_students(args: argparse.Namespace, measure) -> dict[str, dict]:
    """``measure(name, model, data, out_dir)`` of the quick-start student and of mobilenet_v3_small."""
    out = Path(tempfile.mkdtemp(prefix="edgekd-bench-models-"))
    return {"quick-start student": measure("student", *quickstart_student(args.run), out),
            "mobilenet_v3_small": measure("mobilenet", *mobilenet_student(args.mobilenet_epochs), out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    student_options(parser)
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: eager PyTorch on this host's GPU against ONNX Runtime's CUDA provider")
    args = parser.parse_args()
    results = for_both_students(args, lambda *a: compare_runtimes(*a, args.provider))
    print(f"\n{'model':<22}{'runtime':<11}{'latency ms':>11}{'p10-p90':>17}{'top-1':>8}{'vs eager':>10}{'vs fp32':>9}")
    for model, rows in results.items():
        for key, r in rows.items():
            print(f"{model:<22}{key:<11}{r['latency_ms']:>11.4f}{r['p10_ms']:>8.4f}-{r['p90_ms']:<8.4f}"
                  f"{r['acc']:>8.4f}{r['latency_ms'] / rows['eager']['latency_ms']:>9.3f}x"
                  f"{r['latency_ms'] / rows['onnx']['latency_ms']:>8.3f}x")
    s = results["quick-start student"]
    summary = {
        "ort_vs_eager": s["onnx"]["latency_ms"] / s["eager"]["latency_ms"],
        "int8_vs_fp32": s["onnx-int8"]["latency_ms"] / s["onnx"]["latency_ms"],
        "int8_acc_drop": (s["onnx"]["acc"] - s["onnx-int8"]["acc"]) * 100,
    }
    print(f"bar: ORT fp32 <= 0.5x eager: {'met' if summary['ort_vs_eager'] <= 0.5 else 'NOT met'}; "
          f"int8 faster than fp32: {'met' if summary['int8_vs_fp32'] < 1 else 'NOT met'}; "
          f"int8 drop <= 1 point: {'met' if summary['int8_acc_drop'] <= 1 else 'NOT met'}")
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}))


if __name__ == "__main__":
    main()
