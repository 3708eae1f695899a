"""The default `edgekd run` (embedded digits task), timed stage by stage in a fresh directory.

Prints the wall time of each stage, the teacher's and the student's latency on the run's device (both measured
by ONNX Runtime in this run, so their ratio is meaningful even on a noisy machine) and the held-out accuracy of
the PyTorch student and of its ONNX export. Ends with one line of JSON:
{"wall_s", "teacher_ms", "student_ms", "torch_acc", "onnx_acc"}.

    python benchmarks/quickstart.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in DIR and keep it (default: a temporary directory)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="edgekd-quickstart-"))
    # A fresh measurement cache: nothing measured by an earlier run is reused.
    os.environ["EDGEKD_CACHE"] = str(root / "cache")

    from edgekd.core.config import RunConfig, read_json
    from edgekd.pipeline.run import run_all

    start = time.perf_counter()
    result = run_all(RunConfig(), root / "runs")
    wall = time.perf_counter() - start
    report = read_json(result.run_dir / "validation" / "report.json")
    teacher_ms = report["teacher"]["latency_ms"]
    student_ms = report["formats"]["onnx"]["latency_ms"]

    print(f"\n{'stage':<10}{'wall s':>10}")
    for stage, seconds in result.stage_seconds.items():
        print(f"{stage:<10}{seconds:>10.1f}")
    print(f"{'total':<10}{wall:>10.1f}")
    print(f"teacher {teacher_ms:.3f} ms, student {student_ms:.3f} ms: student is {teacher_ms / student_ms:.2f}x faster")
    print(f"held-out accuracy: PyTorch {report['pytorch']['acc']:.4f}, ONNX Runtime "
          f"{report['formats']['onnx']['acc']:.4f}, teacher {report['teacher']['acc']:.4f}")
    print(json.dumps({"wall_s": round(wall, 1), "teacher_ms": teacher_ms, "student_ms": student_ms,
                      "torch_acc": report["pytorch"]["acc"], "onnx_acc": report["formats"]["onnx"]["acc"]}))


if __name__ == "__main__":
    main()
