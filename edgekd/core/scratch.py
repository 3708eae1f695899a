"""Temporary folders for one piece of work (a measurement, a quantization, an engine build, a verification).

Each is named ``edgekd-KIND-PID-XXXX`` in the system temp directory. A process killed mid-work cannot remove its
own; the next edgekd process, when it makes its first one, sweeps away those of this user's processes that are
gone.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(root: Path | None = None) -> int:
    """Remove the scratch folders under ``root`` (default: the temp directory) left by dead processes of this
    user; returns how many."""
    removed = 0
    for folder in (root or Path(tempfile.gettempdir())).glob("edgekd-*-*-*"):
        pid = folder.name.split("-")[-2]
        try:
            mine = folder.is_dir() and folder.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


@functools.cache
def _sweep_once() -> int:
    return sweep()


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A fresh temporary folder, removed on exit (and by a later process's :func:`sweep` if this one is killed)."""
    _sweep_once()
    with tempfile.TemporaryDirectory(prefix=f"edgekd-{kind}-{os.getpid()}-") as tmp:
        yield Path(tmp)
