"""Benchmark ONNX models in ONNX Runtime, in this process: ``python -m edgekd.runtime.ort_bench``.

The ``local`` device runs it in fresh processes (pinned threads and CPU affinity, nothing left over from
earlier work); on a board reached over ssh it is the ONNX Runtime benchmark a device entry can call. For each
model it prints a human line ``median_ms=... p10_ms=... p90_ms=...`` and then one line of JSON with the
measurement; with ``--reference REF.onnx`` each model is timed interleaved with REF instead (the drift-cancelling
protocol of ``edgekd.runtime.protocol``) and the JSON is the ratio's. Torch is never imported here, so a fresh
process starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from edgekd.runtime.ort import EXECUTION_PROVIDERS, onnxruntime_version, open_onnx, ort_session
from edgekd.runtime.protocol import Sampler, Settings, block_sampler, calls_per_block, interleave
from edgekd.runtime.timing import time_runner


def model_input_shape(path: Path) -> tuple[int, ...]:
    """The model's input shape without the batch axis."""
    shape = ort_session(path).get_inputs()[0].shape[1:]
    if not all(isinstance(d, int) for d in shape):
        raise ValueError(f"{path} has a symbolic non-batch input dimension: {shape}")
    return tuple(shape)


def _sampler(path: Path, args: argparse.Namespace) -> Sampler:
    """A warmed-up block sampler of the model at ``path`` on a fixed random batch."""
    run = open_onnx(path, args.threads, args.provider)
    x = np.random.default_rng(0).standard_normal((args.batch, *model_input_shape(path)), dtype=np.float32)
    return block_sampler(run, x, calls_per_block(run, x, args.warmup))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--provider", choices=sorted(EXECUTION_PROVIDERS), default="cpu",
                        help="ONNX Runtime execution provider (cuda needs onnxruntime-gpu)")
    parser.add_argument("--affinity", default="", help="comma-separated CPU ids to pin this process to")
    parser.add_argument("--reference", type=Path, help="time each model interleaved with this reference model "
                        "(edgekd.runtime.protocol) and print the ratio's JSON instead")
    parser.add_argument("--precision", type=float, default=Settings.precision)
    parser.add_argument("--budget-s", type=float, default=Settings.budget_s)
    args = parser.parse_args(argv)
    affinity = [int(c) for c in args.affinity.split(",") if c.strip()]
    if affinity:
        os.sched_setaffinity(0, affinity)
    if args.reference:
        reference = _sampler(args.reference, args)
        for model in args.models:
            result = interleave(_sampler(model, args), reference, Settings(args.precision, args.budget_s))
            print(f"ratio={result.ratio:.6f} [{result.low:.6f}, {result.high:.6f}] rounds={result.rounds}")
            print(json.dumps(dataclasses.asdict(result)), flush=True)
        return
    for model in args.models:
        m = time_runner(open_onnx(model, args.threads, args.provider), model_input_shape(model), args.warmup,
                        args.repeats, args.threads, onnxruntime_version(args.provider), args.batch)
        m = dataclasses.replace(m, affinity=sorted(os.sched_getaffinity(0)) if affinity else None)
        print(f"median_ms={m.median_ms:.6f} p10_ms={m.p10_ms:.6f} p90_ms={m.p90_ms:.6f}")
        print(json.dumps(dataclasses.asdict(m)), flush=True)


if __name__ == "__main__":
    main()
