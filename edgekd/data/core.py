"""A run's data: an image source, deterministic splits, and the loaders that stream it.

Splits are sets of dataset indices: ``train`` = ``mini_train`` + ``mini_val`` (AKD carves mini-val out of
train) and ``val`` is held out. Images are read in batches through a torch DataLoader (``workers`` processes
decode and augment while the model trains) as uint8 and normalized on the training device. Training order and
augmentation are functions of (seed, epoch, image), never of the worker count or of where a run was resumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from edgekd.core.errors import DataError
from edgekd.data.sources import READERS, ImageSource

SPLITS = ("train", "mini_train", "mini_val", "val", "all")
Augment = Literal["none", "standard"]


@dataclass
class Data:
    """Images (through ``source``), labels and the index of every split.

    Dataset index i is the source's image ``order[i]``: training images first, then the held-out ones, as the
    teacher's cached logits are addressed.
    """

    name: str
    source: ImageSource
    order: np.ndarray
    labels: Tensor
    splits: dict[str, Tensor]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    source_note: str = ""
    _norm: dict[torch.device, tuple[Tensor, Tensor]] = field(default_factory=dict, init=False, repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.source.shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def preprocessing(self) -> dict:
        """What a deployment must do to a raw image before feeding the model."""
        _, h, w = self.input_shape
        return {
            "layout": "NCHW",
            "resize": [h, w],
            "channel_order": self.channel_order,
            "scale": 1 / 255,
            "mean": list(self.mean),
            "std": list(self.std),
            "formula": "x = (pixel_uint8 * scale - mean) / std",
            "source": self.source_note,
        }

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images -> normalized float32, on the images' device."""
        if images.device not in self._norm:
            shape = (1, -1, 1, 1)
            self._norm[images.device] = (torch.tensor(self.mean, device=images.device).view(shape),
                                         torch.tensor(self.std, device=images.device).view(shape))
        mean, std = self._norm[images.device]
        return (images.float() / 255.0 - mean) / std

    def index(self, split: str) -> Tensor:
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; available: {list(self.splits)}")
        return self.splits[split]

    def images(self, indices: Tensor | Sequence[int]) -> Tensor:
        """uint8 images of the given dataset indices."""
        return self.source.read(self.order[np.asarray(indices, dtype=np.int64)])

    def tensors(self, split: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``limit`` (default: all) normalized images of ``split`` and their labels, in memory."""
        idx = self.index(split)[:limit]
        return self.normalize(self.images(idx)), self.labels[idx]

    def array(self, split: str) -> SplitArray:
        """The normalized images of ``split`` as a read-only array that reads only the rows sliced from it."""
        return SplitArray(self, self.index(split))

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
               augment: Augment = "none", rank: int = 0, world: int = 1, start_batch: int = 0, workers: int = 0,
               pin_memory: bool = False) -> DataLoader:
        """Batches (uint8 images, labels, dataset indices) of ``split`` for process ``rank`` of ``world``.

        Shuffled, every rank draws the same permutation (seeded by ``seed + epoch``, DistributedSampler's rule) and
        takes every ``world``-th image of it, so the ranks' batches together are the batch one process would draw
        with ``batch_size * world``. Unshuffled, rank r reads every ``world``-th image, none twice. The first
        ``start_batch`` batches are skipped (a resumed epoch).
        """
        idx = self.index(split)
        if shuffle:
            sampler = DistributedSampler(range(len(idx)), num_replicas=world, rank=rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
            positions = list(sampler)
        else:
            positions = list(range(rank, len(idx), world))
        batches = [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)][start_batch:]
        transform = standard_augmentation(self.input_shape[1]) if augment == "standard" else None
        dataset = SplitDataset(self, idx, transform, seed * 1_000_003 + epoch)
        return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_as_is,
                          pin_memory=pin_memory, prefetch_factor=4 if workers else None)

    def batches(self, split: str, batch_size: int, rank: int = 0, world: int = 1, workers: int = 0,
                device: torch.device | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """(normalized images, labels, dataset indices) of ``split`` in order (rank ``rank``'s share)."""
        for x, y, i in self.loader(split, batch_size, rank=rank, world=world, workers=workers):
            yield self.normalize(x.to(device) if device else x), y, i

    def steps_per_epoch(self, split: str, batch_size: int) -> int:
        return math.ceil(len(self.index(split)) / batch_size)


class SplitArray:
    """A split's normalized images, N x C x H x W float32, read from the source when sliced (``a[i:j]``), so that
    code written for an in-memory array (ONNX validation, in batches) streams a split of any size."""

    def __init__(self, data: Data, indices: Tensor) -> None:
        self.data, self.indices = data, indices
        self.shape = (len(indices), *data.input_shape)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.data.normalize(self.data.images(self.indices[rows])).numpy()


def _as_is(batch):
    return batch


class SplitDataset(Dataset):
    """The images of one split, read a whole batch at a time (``__getitems__``), each optionally augmented with
    its own seed."""

    def __init__(self, data: Data, indices: Tensor, transform, seed: int) -> None:
        self.data, self.indices, self.transform, self.seed = data, indices, transform, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        idx = self.indices[positions]
        x = self.data.images(idx)
        if self.transform is not None:
            x = torch.stack([self._augment(img, int(i)) for img, i in zip(x, idx, strict=True)])
        return x, self.data.labels[idx], idx

    def _augment(self, image: Tensor, index: int) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 10_000_019 + index)
            return self.transform(image)


def standard_augmentation(resolution: int):
    """torchvision's usual training augmentation: random-resized crop and flip at 64 px and above, a crop of
    the image padded by an eighth of its size and flip below (CIFAR's pad-4 crop at 32 px)."""
    from torchvision.transforms import v2

    if resolution >= 64:
        crop = v2.RandomResizedCrop(resolution, antialias=True)
    else:
        crop = v2.RandomCrop(resolution, padding=max(1, resolution // 8))
    return v2.Compose([crop, v2.RandomHorizontalFlip()])


def load_data(
    spec: str, seed: int = 0, resolution: int | None = None, mini_val_fraction: float = 0.2, val_fraction: float = 0.2
) -> Data:
    """Read the data spec ``NAME[:PATH]`` and carve deterministic, stratified splits.

    The held-out ``val`` split is fixed; ``seed`` draws the mini-train / mini-val split of ``train``.
    """
    name, _, path = spec.partition(":")
    if name not in READERS:
        raise DataError(f"unknown data source {name!r} in {spec!r}; available: {READERS.names()} (e.g. cifar10:PATH)")
    for frac, label in ((mini_val_fraction, "mini_val_fraction"), (val_fraction, "val_fraction")):
        if not 0 < frac < 1:
            raise DataError(f"{label} must lie in (0, 1), got {frac}")
    read = READERS.get(name)(path, resolution)
    classes = read.meta.get("classes") or []
    if len(classes) < 2 or len(np.unique(read.labels)) < 2:
        raise DataError(f"{spec}: a classifier needs images of at least 2 classes, found {len(classes)} "
                        f"({', '.join(map(str, classes[:5]))})")
    n = len(read.labels)
    if read.n_val:
        order = np.arange(n)
    else:
        # The held-out split does not move with the run's seed, so final figures of runs compare.
        keep, held = _split(read.labels, val_fraction, 0, spec)
        order = np.concatenate([keep, held])
    labels = read.labels[order]
    n_tr = n - (read.n_val or len(held))
    mini_train, mini_val = _split(labels[:n_tr], mini_val_fraction, seed, spec)
    splits = {
        "train": torch.arange(n_tr),
        "mini_train": torch.from_numpy(np.sort(mini_train)),
        "mini_val": torch.from_numpy(np.sort(mini_val)),
        "val": torch.arange(n_tr, n),
        "all": torch.arange(n),
    }
    return Data(name=spec, source=read.source, order=order, labels=torch.from_numpy(labels.astype(np.int64)),
                splits=splits, **read.meta)


def _split(y: np.ndarray, fraction: float, seed: int, spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a (1 - fraction, fraction) split of the images labelled ``y``, stratified where every class
    has images enough to be on both sides."""
    for stratify in (y, None):
        try:
            return train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=stratify)
        except ValueError:
            continue
    raise DataError(f"{spec}: too few images ({len(y)}) to split into training, mini-val and held-out images")
