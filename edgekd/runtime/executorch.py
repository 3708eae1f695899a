"""ExecuTorch programs (``.pte``) in ExecuTorch's Python runtime on this host, XNNPACK-delegated (extra
``executorch``): the `executorch` formats' runtime."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from edgekd.core.errors import DeviceError
from edgekd.runtime.ort import Runner

INSTALL_HINT = "pip install 'edgekd[executorch]'"


def executorch_version() -> str:
    """``executorch-VERSION``; DeviceError when it is not installed."""
    try:
        return f"executorch-{version('executorch')}"
    except PackageNotFoundError as exc:
        raise DeviceError(f"ExecuTorch is not installed: {INSTALL_HINT}") from exc


def open_pte(path: Path, threads: int = 1) -> Runner:
    """A runner of the ExecuTorch program at ``path`` (batch 1: a batch runs image by image); XNNPACK's thread
    pool (one per process) gets ``threads``."""
    try:
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    except ImportError as exc:
        raise DeviceError(f"ExecuTorch is not installed: {INSTALL_HINT}") from exc
    portable_lib._unsafe_reset_threadpool(threads)  # the runtime's only thread setting
    method = Runtime.get().load_program(path).load_method("forward")

    def run(x: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return np.concatenate([method.execute([image[None]])[0].numpy() for image in images])

    return run
