"""Data-parallel training under ``torchrun``: the process group, collective sums, and which rank writes.

``torchrun --nproc-per-node N -m edgekd distill ...`` starts N processes with RANK, WORLD_SIZE and LOCAL_RANK
set; each joins one process group (NCCL on GPUs, gloo on CPUs), trains its share of every batch, and rank 0
alone writes artifacts. A plain ``edgekd`` process is a world of one, and nothing here communicates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from edgekd.core.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes artifacts and prints (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_sum(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` summed over the ranks (every rank must pass the same keys)."""
        if not self.active or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        return bool(self.all_sum({"flag": float(flag)})["flag"]) if self.active else flag


SINGLE = DistEnv()
_current = SINGLE


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process's rank on its host (0 outside torchrun): which of the host's GPUs it trains on."""
    return int(os.environ.get("LOCAL_RANK", 0))


def setup(device_kind: str) -> DistEnv:
    """Join the process group torchrun describes (once per process) and return this process's place in it."""
    global _current
    if not launched_by_torchrun():
        return SINGLE
    if _current.active:
        return _current
    env = DistEnv(rank=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]),
                  local_rank=local_rank(),
                  local_world=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])))
    if device_kind not in ("cpu", "cuda"):
        raise ConfigError(f"torchrun trains on CPUs (gloo) or CUDA GPUs (NCCL), not on {device_kind}")
    if device_kind == "cuda":
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())  # NCCL's device for this rank
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo", timeout=timedelta(minutes=30))
    _current = env
    return env


def current() -> DistEnv:
    """This process's place in the process group (a world of one outside torchrun)."""
    return _current
