"""Data sources and deterministic splits.

A data spec names a registered source: ``digits`` (scikit-learn's bundled handwritten digits, the embedded
default), ``synthetic`` (class prototypes plus noise, for smoke tests), ``cifar10:PATH`` (an extracted
``cifar-10-batches-py`` folder) or ``imagefolder:PATH`` (class-per-folder image trees). Nothing is downloaded.

Images are held in memory as uint8 NCHW at the model's resolution and normalized per batch, so splits are
index sets and a teacher's logits can be computed once per split and looked up by index.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from edgekd.errors import DataError

SPLITS = ("train", "mini_train", "mini_val", "val", "all")
"""``train`` = ``mini_train`` + ``mini_val`` (AKD carves mini-val out of train); ``val`` is held out."""


@dataclass
class Data:
    """Images (uint8, N x C x H x W), labels and the index of every split."""

    name: str
    images: Tensor
    labels: Tensor
    splits: dict[str, Tensor]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    source_note: str = ""
    _norm: tuple[Tensor, Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._norm = (torch.tensor(self.mean).view(1, -1, 1, 1), torch.tensor(self.std).view(1, -1, 1, 1))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

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
        mean, std = self._norm
        return (images.float() / 255.0 - mean) / std

    def tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """All normalized images and labels of ``split``."""
        idx = self.index(split)
        return self.normalize(self.images[idx]), self.labels[idx]

    def index(self, split: str) -> Tensor:
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; available: {list(self.splits)}")
        return self.splits[split]

    def batches(
        self, split: str, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yield (normalized images, labels, dataset indices) batches; indices address per-image caches."""
        idx = self.index(split)
        order = torch.randperm(len(idx), generator=generator) if shuffle else torch.arange(len(idx))
        for start in range(0, len(idx), batch_size):
            sel = idx[order[start : start + batch_size]]
            yield self.normalize(self.images[sel]), self.labels[sel], sel


SOURCES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict]]] = {}


def register_source(name: str) -> Callable:
    """Decorator registering a reader ``(path, resolution) -> (x_train, y_train, x_val|None, y_val|None, meta)``."""

    def deco(fn: Callable) -> Callable:
        SOURCES[name] = fn
        return fn

    return deco


def load_data(
    spec: str, seed: int = 0, resolution: int | None = None, mini_val_fraction: float = 0.2, val_fraction: float = 0.2
) -> Data:
    """Read the data spec ``NAME[:PATH]`` and carve deterministic, stratified splits.

    The held-out ``val`` split is fixed; ``seed`` draws the mini-train / mini-val split of ``train``.
    """
    name, _, path = spec.partition(":")
    if name not in SOURCES:
        raise DataError(f"unknown data source {name!r} in {spec!r}; available: {sorted(SOURCES)} (e.g. cifar10:PATH)")
    for frac, label in ((mini_val_fraction, "mini_val_fraction"), (val_fraction, "val_fraction")):
        if not 0 < frac < 1:
            raise DataError(f"{label} must lie in (0, 1), got {frac}")
    x_tr, y_tr, x_val, y_val, meta = SOURCES[name](path, resolution)
    if x_val is None:
        # The held-out split does not move with the run's seed, so final figures of runs compare.
        keep, held = _split(y_tr, val_fraction, 0, spec)
        x_tr, x_val, y_tr, y_val = x_tr[keep], x_tr[held], y_tr[keep], y_tr[held]
    mini_train, mini_val = _split(y_tr, mini_val_fraction, seed, spec)
    n_tr = len(y_tr)
    images = torch.from_numpy(np.ascontiguousarray(np.concatenate([x_tr, x_val])))
    labels = torch.from_numpy(np.concatenate([y_tr, y_val]).astype(np.int64))
    splits = {
        "train": torch.arange(n_tr),
        "mini_train": torch.from_numpy(np.sort(mini_train)),
        "mini_val": torch.from_numpy(np.sort(mini_val)),
        "val": torch.arange(n_tr, n_tr + len(y_val)),
        "all": torch.arange(n_tr + len(y_val)),
    }
    return Data(name=spec, images=images, labels=labels, splits=splits, **meta)


def _split(y: np.ndarray, fraction: float, seed: int, spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a (1 - fraction, fraction) split of the images labelled ``y``, stratified where every class
    has images enough to be on both sides."""
    for stratify in (y, None):
        try:
            return train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=stratify)
        except ValueError:
            continue
    raise DataError(f"{spec}: too few images ({len(y)}) to split into training, mini-val and held-out images")


def _resize(x: np.ndarray, resolution: int | None) -> np.ndarray:
    """Bilinear resize of uint8 NCHW images to ``resolution`` (no-op when unset or equal)."""
    if resolution is None or x.shape[-1] == resolution == x.shape[-2]:
        return x
    t = torch.nn.functional.interpolate(torch.from_numpy(x).float(), size=(resolution, resolution), mode="bilinear")
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


@register_source("digits")
def _digits(path: str, resolution: int | None):
    from sklearn.datasets import load_digits

    if path:
        raise DataError(f"the digits source takes no path, got digits:{path}")
    bunch = load_digits()
    x = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
    # 16x16 by default: at 8x8 every network is dominated by per-operator overhead, not by its compute.
    meta = dict(classes=[str(c) for c in bunch.target_names], mean=(0.3,), std=(0.38,), channel_order="gray",
                source_note="scikit-learn load_digits: 8x8 grey levels 0..16 scaled to 0..255, resized bilinear")
    return _resize(x, resolution or 16), bunch.target.astype(np.int64), None, None, meta


@register_source("synthetic")
def _synthetic(path: str, resolution: int | None):
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
    return x, y, None, None, meta


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc


@register_source("cifar10")
def _cifar10(path: str, resolution: int | None):
    """The python-pickle CIFAR-10 release: data_batch_1..5, test_batch, batches.meta."""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise DataError(f"cifar10 folder not found: {path!r}; pass cifar10:PATH to an extracted cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    if not (root / names[0]).is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"  # the folder the release archive was extracted into
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataError(f"{root} is not a cifar-10-batches-py folder: missing {', '.join(missing)}")

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        d = _unpickle(root / name)
        if b"data" not in d or b"labels" not in d:
            raise DataError(f"{root / name} lacks the b'data' / b'labels' entries of a CIFAR-10 batch")
        return np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[b"labels"], np.int64)

    parts = [read(n) for n in names[:5]]
    x_val, y_val = read("test_batch")
    classes = [c.decode() for c in _unpickle(root / "batches.meta")[b"label_names"]]
    meta = dict(classes=classes, mean=CIFAR_MEAN, std=CIFAR_STD, channel_order="RGB", source_note=f"CIFAR-10 at {root}")
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    return _resize(x_tr, resolution), y_tr, _resize(x_val, resolution), y_val, meta


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _read_tree(
    root: Path, resolution: int, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = classes or found
    if not classes:
        raise DataError(f"{root} has no class sub-folders (expected ROOT/CLASS/IMAGE.png, like ImageFolder)")
    unknown = set(found) - set(classes)
    if unknown:
        raise DataError(f"{root} has class folders {sorted(unknown)} that the training tree lacks")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*")):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except (OSError, UnidentifiedImageError) as exc:
                raise DataError(f"cannot read image {f}: {exc}") from exc
            ys.append(label)
    if not xs:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root}")
    return np.stack(xs), np.asarray(ys, np.int64), classes


@register_source("imagefolder")
def _imagefolder(path: str, resolution: int | None):
    """ROOT/CLASS/*.png; with ROOT/train and ROOT/val sub-trees those are the train and held-out splits."""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise DataError(f"imagefolder root not found: {path!r}; pass imagefolder:PATH to a ROOT/CLASS/IMAGE tree")
    res = resolution or 32
    if (root / "train").is_dir() and (root / "val").is_dir():
        x_tr, y_tr, classes = _read_tree(root / "train", res)
        x_val, y_val, _ = _read_tree(root / "val", res, classes)
    else:
        (x_tr, y_tr, classes), x_val, y_val = _read_tree(root, res), None, None
    meta = dict(classes=classes, mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="RGB",
                source_note=f"ImageFolder at {root}, resized bilinear")
    return x_tr, y_tr, x_val, y_val, meta
