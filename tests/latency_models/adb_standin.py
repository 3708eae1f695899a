"""Stands in for ``adb`` with one attached phone whose file system is the folder $ADB_STANDIN_ROOT.

The subset edgekd uses: ``get-state``, ``push LOCAL REMOTE``, ``shell COMMAND`` (and ``-s SERIAL``). A shell command
runs in this host's sh with the phone's absolute paths mapped into the root; the phone's tools are played here,
each printing its own output lines: ``onnxruntime_perf_test`` by ONNX Runtime (``-m times``), LiteRT's
``benchmark_model`` by ai-edge-litert's interpreter, ExecuTorch's ``executor_runner`` by ExecuTorch's runtime.
A ``taskset MASK`` prefix is accepted (and logged). Every call is appended to adb-calls.log in the root. No phone
was ever involved.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(os.environ["ADB_STANDIN_ROOT"])


def local(remote: str) -> Path:
    return ROOT / remote.lstrip("/")


def perf_test(args: list[str]) -> None:
    """onnxruntime_perf_test -I -m times -r N -x T -e cpu MODEL, timed by ONNX Runtime here."""
    repeats = int(args[args.index("-r") + 1])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(args[args.index("-x") + 1])
    session = ort.InferenceSession(str(local(args[-1])), opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {inp.name: x})
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"Session creation time cost: 0.01 s\nTotal inference time cost: {sum(times):.6f} s\n"
          f"Total inference requests: {repeats}\nAverage inference time cost: {1e3 * sum(times) / repeats:.6f} ms")
    for name, q in (("Min", 0.0), ("P50", 0.5), ("P90", 0.9), ("P99", 0.99)):
        print(f"{name} Latency: {times[int(q * (repeats - 1))]:.7f} s")


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.lstrip("-").split("=", 1) for a in args if a.startswith("--") and "=" in a)


def _timed(run, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``run``, in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e6)
    return times


def benchmark_model(args: list[str]) -> None:
    """benchmark_model --graph=M --num_threads=T --num_runs=N --warmup_runs=W, by ai-edge-litert here."""
    from ai_edge_litert.interpreter import Interpreter

    flags = _flags(args)
    interpreter = Interpreter(model_path=str(local(flags["graph"])), num_threads=int(flags["num_threads"]))
    interpreter.allocate_tensors()
    given = interpreter.get_input_details()[0]
    interpreter.set_tensor(given["index"], np.zeros(given["shape"], dtype=given["dtype"]))
    warm = _timed(interpreter.invoke, int(flags["warmup_runs"]) or 1)
    runs = _timed(interpreter.invoke, int(flags["num_runs"]))
    avg = sum(runs) / len(runs)
    print("INFO: Loaded model " + flags["graph"])
    print(f"INFO: Inference timings in us: Init: 1000, First inference: {warm[0]:.0f}, Warmup (avg): "
          f"{sum(warm) / len(warm):.1f}, Inference (avg): {avg:.1f}")
    print(f"INFO: count={len(runs)} first={runs[0]:.0f} curr={runs[-1]:.0f} min={min(runs):.0f} max={max(runs):.0f} "
          f"avg={avg:.1f} std={float(np.std(runs)):.0f}")


def executor_runner(args: list[str]) -> None:
    """executor_runner --model_path=M --num_executions=N --cpu_threads=T, by ExecuTorch's runtime here."""
    import torch
    from executorch.runtime import Runtime

    flags = _flags(args)
    n = int(flags["num_executions"])
    method = Runtime.get().load_program(local(flags["model_path"])).load_method("forward")
    shape = method.metadata.input_tensor_meta(0).sizes()
    x = torch.ones(tuple(shape))
    runs = _timed(lambda: method.execute([x]), n)
    for i, us in enumerate(runs):
        print(f"I 00:00:00.{i:06d} executorch:executor_runner.cpp:781] Iteration {i + 1} of {n}: {us / 1e3:.6f} ms")
    print(f"I 00:00:00.{n:06d} executorch:executor_runner.cpp:790] Model executed successfully {n} time(s) in "
          f"{sum(runs) / 1e3:.6f} ms.")


TOOLS = {"onnxruntime_perf_test": perf_test, "benchmark_model": benchmark_model,
         "executor_runner": executor_runner}


def main(argv: list[str]) -> int:
    with (ROOT / "adb-calls.log").open("a") as log:
        log.write(shlex.join(argv) + "\n")
    if argv[:1] == ["-s"]:
        argv = argv[2:]
    if argv == ["get-state"]:
        print("device")
        return 0
    if argv[0] == "push":
        local(argv[2]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(argv[1], local(argv[2]))
        print(f"{argv[1]}: 1 file pushed")
        return 0
    if argv[0] == "shell":
        command = " ".join(argv[1:])
        words = shlex.split(command)
        if words[:1] == ["taskset"]:
            words = words[2:]
        tool = Path(words[0]).name if words else ""
        if tool in TOOLS:
            if not local(words[0]).is_file():
                print(f"/system/bin/sh: {words[0]}: not found", file=sys.stderr)
                return 127
            TOOLS[tool](words[1:])
            return 0
        mapped = re.sub(r"(?<![\w.])/data/", f"{ROOT}/data/", command)
        return subprocess.run(["sh", "-c", mapped]).returncode
    print(f"adb stand-in: unsupported {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
