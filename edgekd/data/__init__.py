"""Data sources, splits and the loaders that stream them (see ``core`` and ``sources``)."""

from edgekd.data import glyphs as _glyphs  # noqa: F401  (registers the glyphs source)
from edgekd.data.core import SPLITS, Augment, Data, SplitArray, load_data
from edgekd.data.sources import READERS, register_source

__all__ = ["READERS", "SPLITS", "Augment", "Data", "SplitArray", "load_data", "register_source"]
