"""edgekd: hardware-aware, KD-guided search, distillation, export and packaging of edge student models."""

from importlib.metadata import version

__version__ = version("edgekd")
