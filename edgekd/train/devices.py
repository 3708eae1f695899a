"""Where training runs: the torch device, its mixed precision and memory format, and the CPU thread count."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Literal

import torch

from edgekd.core.errors import DeviceError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


@dataclass(frozen=True)
class TrainDevice:
    """A resolved training device. On CUDA: mixed precision (bf16 where the GPU has it, else fp16 with a loss
    scaler) unless ``amp`` is off. Tensors channels-last where :meth:`memory_format` says so."""

    device: torch.device
    amp: bool = False

    @property
    def kind(self) -> str:
        return self.device.type

    @property
    def amp_dtype(self) -> torch.dtype | None:
        if not self.amp or self.kind != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def memory_format(self, module: torch.nn.Module) -> torch.memory_format:
        """The layout ``module`` trains in: channels-last on CUDA, and on the CPU (where a depthwise convolution's
        backward pass takes several times longer in the default layout: a student's epoch 1.3-1.4x) unless
        ``module`` holds a strided 1x1 convolution. oneDNN's channels-last backward pass of one with fewer input
        channels than its register block writes out of bounds or returns wrong weight gradients
        (uxlfoundation/oneDNN#6035; it crashed torch 2.14 on this project's AVX2 host)."""
        if self.kind == "cuda" or (self.kind == "cpu" and not _has_strided_pointwise(module)):
            return torch.channels_last
        return torch.contiguous_format

    @property
    def precision(self) -> str:
        """What a report says: fp32, bf16 or fp16."""
        dtype = self.amp_dtype
        return "fp32" if dtype is None else str(dtype).removeprefix("torch.").replace("bfloat16", "bf16").replace(
            "float16", "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.amp_dtype
        return torch.autocast(self.kind, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.kind) if self.amp_dtype == torch.float16 else None

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` moved to this device, in its :meth:`memory_format`."""
        return module.to(self.device).to(memory_format=self.memory_format(module))


def memory_format_of(module: torch.nn.Module) -> torch.memory_format:
    """channels-last if ``module``'s first convolution weight is laid out so, else the default format."""
    weight = next((p for p in module.parameters() if p.dim() == 4), None)
    if weight is not None and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _has_strided_pointwise(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
               for m in module.modules())


CPU = TrainDevice(torch.device("cpu"))


def to_cpu(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` back on the CPU in the default memory format, as export and latency measurement take it."""
    return module.cpu().to(memory_format=torch.contiguous_format)


def resolve_device(name: DeviceName, amp: bool = True, index: int | None = None) -> TrainDevice:
    """``name`` as a device: ``auto`` is CUDA, else Apple's MPS, else the CPU; asking for a GPU that is not
    there is an error, never a fall-back. ``index`` picks one of several CUDA GPUs (default: the current one)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--train-device cuda: no CUDA GPU is visible to torch (torch "
                              f"{torch.__version__}, CUDA build {torch.version.cuda}); check nvidia-smi and "
                              "CUDA_VISIBLE_DEVICES, or use --train-device cpu")
        gpu = torch.cuda.current_device() if index is None else index % torch.cuda.device_count()
        return TrainDevice(torch.device("cuda", gpu), amp)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("--train-device mps: Apple's Metal backend is not available (macOS on Apple silicon "
                              "with an MPS build of torch is needed), or use --train-device cpu")
        return TrainDevice(torch.device("mps"), amp=False)
    if name != "cpu":
        raise DeviceError(f"unknown training device {name!r}; expected auto, cpu, cuda or mps")
    return CPU


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int | None, share: int = 1) -> int:
    """Set torch's intra-op threads to ``threads``, by default the usable cores split over ``share`` processes
    (torchrun ranks or search workers on this host); returns the number set."""
    n = threads or max(1, usable_cores() // share)
    torch.set_num_threads(n)
    return n
