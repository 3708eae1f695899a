"""The ``glyphs`` data source: characters rendered from the font files already on the machine.

A harder embedded task than ``digits``: 47 classes (digits, capitals and eleven lower-case letters whose shapes
differ from their capitals), confusable pairs included (O/0, I/1/l, S/5, Z/2, B/8, g/q/9, b/6), each rendered
in every text font found in matplotlib's bundled fonts and in the system's font folders (Debian's font
packages add more), ``glyphs:N`` times (default 10), with seeded affine jitter, stroke width, contrast,
polarity, gradient backgrounds, clutter strokes and pixel noise. The held-out split is every font whose name
hashes to 0 mod 4, so held-out images come from fonts the model never saw. Nothing is downloaded; rendering
takes a few seconds and is cached per process.

Figures from two machines compare only when their font lists match: the source's note names the fonts and a
fingerprint of the list.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from pathlib import Path

import numpy as np

from edgekd.core.errors import DataError
from edgekd.data.sources import ArraySource, Read, register_source

GLYPH_CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abdeghlnqrt"
"""Class i is the character GLYPH_CLASSES[i]."""
NOT_TEXT = ("LastResort", "cmsy", "cmex", "STIXNonUni", "STIXSiz", "Display", "Math")
"""Font files that map letters to symbols, boxes or nothing (matplotlib's math fonts among them)."""
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")
VARIANTS = 10
"""Images per (font, character)."""
CANVAS, SIZE = 64, 32
"""Glyphs are drawn at twice the stored size and downsampled, which anti-aliases them."""
HELD_OUT_EVERY = 4


def _font_files() -> list[Path]:
    import matplotlib

    dirs = [Path(matplotlib.get_data_path()) / "fonts" / "ttf", *FONT_DIRS]
    return sorted({f for d in dirs if d.is_dir() for f in d.rglob("*") if f.suffix.lower() in (".ttf", ".otf")})


@functools.cache
def text_fonts() -> tuple[Path, ...]:
    """Font files that draw every class as a distinct glyph, one file per (family, style), sorted by name."""
    from matplotlib.ft2font import FT2Font

    found: dict[tuple[str, str], Path] = {}
    for path in _font_files():
        if any(tag in path.name for tag in NOT_TEXT):
            continue
        try:
            font = FT2Font(str(path))
        except (OSError, RuntimeError, ValueError):
            continue  # a file FreeType cannot open is not ours to complain about
        cmap = font.get_charmap()
        key = (font.family_name, font.style_name)
        if all(ord(c) in cmap for c in GLYPH_CLASSES) and key not in found and _distinct(path):
            found[key] = path
    return tuple(sorted(found.values(), key=lambda p: p.name))


def _distinct(path: Path) -> bool:
    """Whether the font draws the classes as (nearly all) different bitmaps, not one box for every code."""
    shapes = {_mask(path, c, 0, np.eye(2), (0.0, 0.0)).tobytes() for c in GLYPH_CLASSES}
    return len(shapes) >= len(GLYPH_CLASSES) - 2


def fonts_fingerprint(fonts: tuple[Path, ...]) -> str:
    """12 hex digits naming the font list (file names), equal on two machines with the same fonts."""
    return hashlib.sha256("\n".join(f.name for f in fonts).encode()).hexdigest()[:12]


def is_held_out(font: Path) -> bool:
    return zlib.crc32(font.name.encode()) % HELD_OUT_EVERY == 0


@functools.cache
def _font(path: Path, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size)


def _mask(path: Path, char: str, stroke: int, linear: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """The glyph's coverage, CANVAS x CANVAS uint8, drawn centred and then warped by ``linear`` and ``shift``."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(img).text((CANVAS / 2, CANVAS / 2), char, fill=255, font=_font(path, int(CANVAS * 0.62)),
                             anchor="mm", stroke_width=stroke, stroke_fill=255)
    # PIL's affine maps output to input coordinates, around the origin: conjugate by the centre
    inv = np.linalg.inv(linear)
    c = np.array([CANVAS / 2, CANVAS / 2])
    offset = c - inv @ (c + np.asarray(shift))
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    return np.asarray(img.transform(img.size, Image.AFFINE, coeffs, resample=Image.BILINEAR))


def _render(path: Path, char: str, rng: np.random.Generator) -> np.ndarray:
    """One SIZE x SIZE uint8 image of ``char`` in the font at ``path``, with this draw's jitter."""
    angle, shear = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(-0.25, 0.25)
    scale = rng.uniform(0.8, 1.15) * np.array([rng.uniform(0.9, 1.1), 1.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    shift = tuple(rng.uniform(-5, 5, size=2))
    mask = _mask(path, char, int(rng.integers(0, 3)), linear, shift).astype(np.float32) / 255.0
    mask = mask.reshape(SIZE, 2, SIZE, 2).mean(axis=(1, 3))  # 2x2 box filter to SIZE
    # background: a linear gradient between two grey levels, plus a few faint clutter strokes
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(direction) * xx + np.sin(direction) * yy
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    lo, hi = sorted(rng.uniform(0, 255, size=2))
    background = lo + (hi - lo) * rng.uniform(0, 0.6) * ramp
    for _ in range(int(rng.integers(0, 3))):
        a, b = rng.uniform(-1, 1, size=2), rng.uniform(0, 1)
        line = np.abs(a[0] * (xx - 0.5) + a[1] * (yy - 0.5) - (b - 0.5) * 0.5) < 0.02
        background = np.where(line, background + rng.uniform(-60, 60), background)
    contrast = rng.uniform(60, 180) * rng.choice([-1.0, 1.0])
    if not 0 <= background.mean() + contrast <= 255:
        contrast = -contrast  # the other polarity keeps the glyph visible
    foreground = np.clip(background.mean() + contrast, 0, 255)
    image = background * (1 - mask) + foreground * mask + rng.normal(0, rng.uniform(0, 18), size=mask.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


@functools.cache
def render_glyphs(fonts: tuple[Path, ...], variants: int = VARIANTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images N x 1 x SIZE x SIZE uint8, labels, font index per image): every font x class x variant, each
    image seeded by (font name, class, variant) alone, so adding a font changes no other image."""
    images, labels, font_of = [], [], []
    for f, path in enumerate(fonts):
        seed = zlib.crc32(path.name.encode())
        for label, char in enumerate(GLYPH_CLASSES):
            for v in range(variants):
                rng = np.random.default_rng([seed, label, v])
                images.append(_render(path, char, rng))
                labels.append(label)
                font_of.append(f)
    return np.stack(images)[:, None], np.asarray(labels, np.int64), np.asarray(font_of, np.int64)


@register_source("glyphs")
def _glyphs(path: str, resolution: int | None) -> Read:
    """47 characters in every text font installed (``glyphs:N``: N renderings of each, default VARIANTS); the
    held-out split is a quarter of the fonts."""
    if path and not (path.isdigit() and 1 <= int(path) <= 1000):
        raise DataError(f"glyphs:N takes the renderings per font and character, 1 to 1000; got glyphs:{path}")
    variants = int(path) if path else VARIANTS
    fonts = text_fonts()
    held = [f for f in fonts if is_held_out(f)]
    if len(held) < 2 or len(fonts) - len(held) < 4:
        raise DataError(f"the glyphs source needs at least 4 training and 2 held-out text fonts; found "
                        f"{len(fonts)} ({', '.join(f.name for f in fonts) or 'none'}): matplotlib's bundled fonts "
                        "are missing, or install a font package (Debian: fonts-dejavu, fonts-liberation)")
    images, labels, font_of = render_glyphs(fonts, variants)
    order = np.argsort(np.isin(font_of, [fonts.index(f) for f in held]), kind="stable")  # training fonts first
    train_names = [f.name for f in fonts if f not in held]
    note = (f"glyphs: {len(GLYPH_CLASSES)} characters x {variants} jittered renderings, {SIZE} px; fonts "
            f"{fonts_fingerprint(fonts)} (train: {', '.join(train_names)}; held out: "
            f"{', '.join(f.name for f in held)})")
    meta = dict(classes=list(GLYPH_CLASSES), mean=(0.45,), std=(0.25,), channel_order="gray", source_note=note)
    n_val = int(np.isin(font_of, [fonts.index(f) for f in held]).sum())
    return Read(ArraySource(images[order], resolution), labels[order], n_val, meta)
