"""Stands in for TensorRT's trtexec on the tests' ssh "board", which has no GPU: the subset of trtexec's
command line edgekd uses, with its output formats, computed by ONNX Runtime.

TensorRT cannot be installed on the machines these tests run on, so this is what checks edgekd's side of the
contract (the flags it passes, the files it ships and fetches, the outputs it parses); real trtexec is not
exercised. An "engine" here is a header line (the precision flags it was built with) followed by the ONNX
model. Every call appends its arguments to trtexec-calls.log beside the files it was given. As with trtexec's
logger, "[E]" errors go to stderr and everything else to stdout.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

MAGIC = b"EMULATED-TRT-ENGINE"


def _shape(spec: str) -> tuple[str, tuple[int, ...]]:
    name, dims = spec.split(":")
    return name, tuple(int(d) for d in dims.split("x"))


def _session(engine: Path) -> ort.InferenceSession:
    header, model = engine.read_bytes().split(b"\n", 1)
    if not header.startswith(MAGIC):
        sys.exit(f"[E] Error: {engine} is not a serialized engine")
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def main() -> None:
    p = argparse.ArgumentParser(prog="trtexec")
    for flag in ("--onnx", "--saveEngine", "--loadEngine", "--loadInputs", "--exportOutput", "--shapes",
                 "--minShapes", "--optShapes", "--maxShapes"):
        p.add_argument(flag)
    for flag in ("--iterations", "--warmUp", "--duration"):
        p.add_argument(flag, type=int, default={"--iterations": 10, "--warmUp": 200, "--duration": 3}[flag])
    for flag in ("--fp16", "--int8", "--noTF32", "--skipInference"):
        p.add_argument(flag, action="store_true")
    args, unknown = p.parse_known_args()
    if unknown:
        sys.exit(f"[E] Unknown option: {unknown[0]}")
    given = next(Path(f) for f in (args.onnx, args.loadEngine) if f)
    with (given.parent / "trtexec-calls.log").open("a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\n")
    print("[I] TensorRT version: 0.0-emulator")

    if args.onnx:
        model = Path(args.onnx).read_bytes()
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # the parser's check
        flags = " ".join(f for f in ("--fp16", "--int8", "--noTF32") if getattr(args, f[2:]))
        Path(args.saveEngine).write_bytes(MAGIC + b" " + flags.encode() + b"\n" + model)
        print(f"[I] Engine built and saved to {args.saveEngine}")
        return

    session = _session(Path(args.loadEngine))
    name, shape = _shape(args.shapes)
    if args.loadInputs:
        x = np.fromfile(args.loadInputs.split(":", 1)[1], dtype="<f4").reshape(shape)
    else:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    times = []
    for _ in range(max(args.iterations, 1)):
        start = time.perf_counter()
        out = session.run(None, {name: x})[0]
        times.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(times, n=100) if len(times) > 1 else times * 99
    print(f"[I] Latency: min = {min(times):.5f} ms, max = {max(times):.5f} ms, mean = {statistics.mean(times):.5f}"
          f" ms, median = {statistics.median(times):.5f} ms, percentile(90%) = {q[89]:.5f} ms, "
          f"percentile(95%) = {q[94]:.5f} ms, percentile(99%) = {q[98]:.5f} ms")
    if args.exportOutput:
        output = session.get_outputs()[0].name
        values = ", ".join(repr(float(v)) for v in out.ravel())
        Path(args.exportOutput).write_text(
            f'[\n  {{ "name" : "{output}"\n  , "dimensions" : "{"x".join(map(str, out.shape))}"\n'
            f"  , \"values\" : [ {values} ]\n  }}\n]\n")


if __name__ == "__main__":
    main()
