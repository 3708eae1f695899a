"""Argument types shared by the benchmarks' command lines: bad values end in one line from argparse."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a positive number, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"takes 0 or a positive number, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"takes a number above 0, got {text}")
    return value


def names_of(known: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argument type: comma-separated names, each one of ``known``."""

    def names(text: str) -> tuple[str, ...]:
        chosen = tuple(n.strip() for n in text.split(",") if n.strip())
        if unknown := [n for n in chosen if n not in known]:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}: choose from {', '.join(known)}")
        if not chosen:
            raise argparse.ArgumentTypeError(f"takes some of {', '.join(known)}")
        return chosen

    return names


def teacher_folder(text: str) -> Path:
    """A run's teacher/ folder (one holding teacher.pt), to reuse a teacher trained by an earlier run."""
    path = Path(text)
    if not (path / "teacher.pt").is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a run's teacher/ folder (no teacher.pt in it)")
    return path
