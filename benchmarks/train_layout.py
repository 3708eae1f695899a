"""CPU training in the channels-last memory layout against the default (contiguous NCHW) one.

edgekd trains on the CPU in channels-last tensors (``edgekd.train.devices.TrainDevice``): there, the backward
pass of a depthwise convolution, most of a mobile student's convolutions, runs several times faster. This times
one epoch of real training (the trainer, hard labels, the embedded digits data at 16 px) of --students students
of the `mnas` space in both layouts, interleaved (A B B A per student, so that a drift of the host's speed hits
both alike), and prints per student the seconds in each layout, their ratio, and the difference of the epoch's
mean training loss (the same computation but for float rounding, whose differences grow over an epoch's steps).

    python benchmarks/train_layout.py [--students 4] [--threads 2] [--width 0.5]

Ends with one line of JSON: {"median_speedup", "speedups", "max_loss_diff", "threads"}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass

import torch
from arguments import positive_float, positive_int

from edgekd.core.arch import build
from edgekd.core.config import TrainConfig
from edgekd.data import load_data
from edgekd.spaces import make_space
from edgekd.train import train
from edgekd.train.devices import TrainDevice
from edgekd.train.loop import Runtime


@dataclass(frozen=True)
class ContiguousCPU(TrainDevice):
    """The CPU in the default layout: the baseline."""

    def memory_format(self, module: torch.nn.Module) -> torch.memory_format:
        return torch.contiguous_format


def one_epoch(spec, data, device: TrainDevice) -> tuple[float, float]:
    """(seconds, mean training loss) of one epoch from the same initial weights."""
    torch.manual_seed(0)
    model = build(spec)
    start = time.perf_counter()
    history = train(model, data, TrainConfig(epochs=1), runtime=Runtime(device=device))
    return time.perf_counter() - start, history[-1].loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=positive_int, default=4)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--width", type=positive_float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("digits", resolution=16)
    space = make_space("mnas", 16, data.input_shape[0], data.num_classes, width=args.width)
    layouts = {"nchw": ContiguousCPU(torch.device("cpu")), "channels_last": TrainDevice(torch.device("cpu"))}
    speedups, loss_diffs = [], []
    one_epoch(space.decode(space.sample(random.Random(1000))), data, layouts["nchw"])  # warm-up, not reported
    for seed in range(args.students):
        spec = space.decode(space.sample(random.Random(seed)))
        times: dict[str, list[float]] = {name: [] for name in layouts}
        losses: dict[str, float] = {}
        for name in ("nchw", "channels_last", "channels_last", "nchw"):
            seconds, losses[name] = one_epoch(spec, data, layouts[name])
            times[name].append(seconds)
        mean = {name: statistics.fmean(t) for name, t in times.items()}
        speedups.append(mean["nchw"] / mean["channels_last"])
        loss_diffs.append(abs(losses["nchw"] - losses["channels_last"]))
        print(f"student {seed} ({spec.id[:8]}): nchw {mean['nchw']:.2f} s, channels-last {mean['channels_last']:.2f} s"
              f" per epoch, speed-up x{speedups[-1]:.2f}, loss difference {loss_diffs[-1]:.2e}", flush=True)
    print(json.dumps({"median_speedup": round(statistics.median(speedups), 3),
                      "speedups": [round(s, 3) for s in speedups], "max_loss_diff": max(loss_diffs),
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
