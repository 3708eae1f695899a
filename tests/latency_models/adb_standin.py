"""Stands in for ``adb`` with one attached phone whose file system is the folder $ADB_STANDIN_ROOT.

The subset edgekd uses: ``get-state``, ``push LOCAL REMOTE``, ``shell COMMAND`` (and ``-s SERIAL``). A shell command
runs in this host's sh with the phone's absolute paths mapped into the root; the phone's
``onnxruntime_perf_test`` is played by ONNX Runtime here, printing the tool's own summary lines (``-m times``).
Every call is appended to adb-calls.log in the root. No phone was ever involved.
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
        if words and words[0].endswith("onnxruntime_perf_test"):
            if not local(words[0]).is_file():
                print(f"/system/bin/sh: {words[0]}: not found", file=sys.stderr)
                return 127
            perf_test(words[1:])
            return 0
        mapped = re.sub(r"(?<![\w.])/data/", f"{ROOT}/data/", command)
        return subprocess.run(["sh", "-c", mapped]).returncode
    print(f"adb stand-in: unsupported {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
