"""Data sources: where images come from and how one is read.

A data spec names a registered reader: ``digits`` (scikit-learn's bundled handwritten digits, the embedded
default), ``glyphs[:N]`` (characters rendered from the installed fonts, in ``edgekd.data.glyphs``),
``synthetic`` (class prototypes plus noise, for smoke tests), ``cifar10:PATH`` (an extracted
``cifar-10-batches-py`` folder) or ``imagefolder:PATH`` (class-per-folder image trees). Nothing is downloaded.

A reader returns an :class:`ImageSource` over every image (training images first, then the held-out ones when
the source has its own), their labels and the number of held-out images. Small sources stay in memory
(:class:`ArraySource`); image trees are decoded on the fly, one file per read (:class:`FileSource`), so memory
does not grow with the number of images.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from edgekd.core.errors import DataError
from edgekd.core.registry import Registry


class ImageSource(Protocol):
    """Images addressed by position, read as uint8 N x C x H x W at the model's resolution."""

    shape: tuple[int, int, int]
    in_memory: bool

    def __len__(self) -> int: ...

    def read(self, positions: Sequence[int] | np.ndarray) -> Tensor: ...


def resize(x: Tensor, resolution: int | None) -> Tensor:
    """Bilinear resize of uint8 NCHW images to ``resolution`` (no-op when unset or equal)."""
    if resolution is None or x.shape[-1] == resolution == x.shape[-2]:
        return x
    t = torch.nn.functional.interpolate(x.float(), size=(resolution, resolution), mode="bilinear")
    return t.round().clamp(0, 255).to(torch.uint8)


class ArraySource:
    """Images held in memory at their stored size, resized on every read (so a 224 px run of CIFAR-10 keeps
    32 px images in memory)."""

    in_memory = True

    def __init__(self, images: np.ndarray, resolution: int | None = None) -> None:
        self.images, self.resolution = np.ascontiguousarray(images), resolution
        c, h, w = images.shape[1:]
        self.shape = (c, resolution, resolution) if resolution else (c, h, w)

    def __len__(self) -> int:
        return len(self.images)

    def read(self, positions: Sequence[int] | np.ndarray) -> Tensor:
        return resize(torch.from_numpy(self.images[np.asarray(positions, dtype=np.int64)]), self.resolution)


class FileSource:
    """Image files decoded (RGB) and resized on every read; the paths are one NumPy string array, which
    DataLoader worker processes share without copying."""

    in_memory = False

    def __init__(self, files: Sequence[str], resolution: int) -> None:
        self.files = np.asarray(files, dtype=np.str_)
        self.shape = (3, resolution, resolution)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, positions: Sequence[int] | np.ndarray) -> Tensor:
        return torch.from_numpy(np.stack([self._decode(str(self.files[p])) for p in np.asarray(positions)]))

    def _decode(self, path: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        res = self.shape[1]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((res, res), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from exc


@dataclass
class Read:
    """What a reader found: every image, its label, how many of the last ones are the held-out split (0: none,
    carve one out), and the source's description (classes, normalization, channel order, note)."""

    source: ImageSource
    labels: np.ndarray
    n_val: int
    meta: dict


READERS: Registry[Callable[[str, int | None], Read]] = Registry("sources", "data source", error=DataError)
"""Readers ``(path, resolution) -> Read`` by source name."""
register_source = READERS.register


@register_source("digits")
def _digits(path: str, resolution: int | None) -> Read:
    from sklearn.datasets import load_digits

    if path:
        raise DataError(f"the digits source takes no path, got digits:{path}")
    bunch = load_digits()
    x = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None])
    # 16x16 by default: at 8x8 every network is dominated by per-operator overhead, not by its compute.
    meta = dict(classes=[str(c) for c in bunch.target_names], mean=(0.3,), std=(0.38,), channel_order="gray",
                source_note="scikit-learn load_digits: 8x8 grey levels 0..16 scaled to 0..255, resized bilinear")
    return Read(ArraySource(resize(x, resolution or 16).numpy()), bunch.target.astype(np.int64), 0, meta)


@register_source("synthetic")
def _synthetic(path: str, resolution: int | None) -> Read:
    """Ten learnable classes: a fixed random prototype per class plus Gaussian noise (seeded, 600 images)."""
    if path:
        raise DataError(f"the synthetic source takes no path, got synthetic:{path}")
    rng = np.random.default_rng(1234)
    res = resolution or 16
    prototypes = rng.uniform(0, 255, size=(10, 3, res, res))
    y = np.repeat(np.arange(10), 60)
    x = np.clip(prototypes[y] + rng.normal(0, 60, size=(len(y), 3, res, res)), 0, 255).astype(np.uint8)
    meta = dict(classes=[f"class_{i}" for i in range(10)], mean=(0.5,) * 3, std=(0.3,) * 3, channel_order="RGB",
                source_note="synthetic prototypes + noise")
    return Read(ArraySource(x), y, 0, meta)


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


NUMPY_GLOBALS = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                 for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}
"""What a CIFAR-10 batch may name: numpy's array reconstruction. Anything else (a function to call) is refused."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never does "
                                         "(refused: unpickling it could run code)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A CIFAR-10 batch (Python pickles, the published format), read without running anything it names."""
    try:
        with path.open("rb") as f:
            return _ArraysOnly(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc


@register_source("cifar10")
def _cifar10(path: str, resolution: int | None) -> Read:
    """The python-pickle CIFAR-10 release: data_batch_1..5, test_batch, batches.meta (kept at 32 px in memory,
    150 MB, and resized per read)."""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise DataError(f"cifar10 folder not found: {path!r}; pass cifar10:PATH to an extracted cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    if not (root / names[0]).is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"  # the folder the release archive was extracted into
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataError(f"{root} is not a cifar-10-batches-py folder: missing {', '.join(missing)}")

    def entry(name: str, key: bytes) -> Any:
        d = _unpickle(root / name)
        if not isinstance(d, dict) or key not in d:
            raise DataError(f"{root / name} lacks the {key!r} entry of a CIFAR-10 file")
        return d[key]

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            images = np.asarray(entry(name, b"data"), dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry(name, b"labels"), np.int64)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{root / name} is not a CIFAR-10 batch of 32x32 RGB images: {exc}") from None
        if len(images) != len(labels) or not ((labels >= 0) & (labels < 10)).all():
            raise DataError(f"{root / name}: {len(images)} images and {len(labels)} labels in 0..9 expected")
        return images, labels

    parts = [read(n) for n in names[:6]]
    label_names = entry("batches.meta", b"label_names")
    named = isinstance(label_names, list) and len(label_names) == 10
    if not named or not all(isinstance(c, bytes) for c in label_names):
        raise DataError(f"{root / 'batches.meta'}: label_names is not a list of the 10 class names")
    classes = [c.decode(errors="replace") for c in label_names]
    meta = dict(classes=classes, mean=CIFAR_MEAN, std=CIFAR_STD, channel_order="RGB", source_note=f"CIFAR-10 at {root}")
    images = np.concatenate([p[0] for p in parts])
    return Read(ArraySource(images, resolution), np.concatenate([p[1] for p in parts]), len(parts[-1][1]), meta)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _list_tree(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """Every image file under ROOT/CLASS/ (sorted), its label and the classes. Each file's header is read, so a
    file that is not an image is found here rather than in the middle of training."""
    from PIL import Image, UnidentifiedImageError

    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = classes or found
    if not classes:
        raise DataError(f"{root} has no class sub-folders (expected ROOT/CLASS/IMAGE.png, like ImageFolder)")
    unknown = set(found) - set(classes)
    if unknown:
        raise DataError(f"{root} has class folders {sorted(unknown)} that the training tree lacks")
    files, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*")):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f):
                    pass
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"cannot read image {f}: {exc}") from exc
            files.append(str(f))
            labels.append(label)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root}")
    return files, labels, classes


@register_source("imagefolder")
def _imagefolder(path: str, resolution: int | None) -> Read:
    """ROOT/CLASS/*.png; with ROOT/train and ROOT/val sub-trees those are the train and held-out splits."""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise DataError(f"imagefolder root not found: {path!r}; pass imagefolder:PATH to a ROOT/CLASS/IMAGE tree")
    if (root / "train").is_dir() and (root / "val").is_dir():
        files, labels, classes = _list_tree(root / "train")
        val_files, val_labels, _ = _list_tree(root / "val", classes)
        files, labels, n_val = files + val_files, labels + val_labels, len(val_files)
    else:
        (files, labels, classes), n_val = _list_tree(root), 0
    meta = dict(classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="RGB",
                source_note=f"ImageFolder at {root}, resized bilinear")
    return Read(FileSource(files, resolution or 32), np.asarray(labels, np.int64), n_val, meta)
