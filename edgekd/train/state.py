"""Training state on disk: written atomically, read without executing code, the previous one kept.

A state holds the trained module's weights, the optimiser and schedule, the history of finished epochs and,
for a state written in the middle of an epoch, where in the epoch it was (``progress``). Each save first moves
the last good state to ``NAME.prev``, so a state file found truncated or corrupt falls back to the one before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from edgekd.core.errors import RunStateError
from edgekd.core.ui import console

KEYS = ("model", "schedule", "history")


def previous(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) atomically, keeping the last one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    if path.is_file():
        path.replace(previous(path))
    tmp.replace(path)


def _read(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or any(k not in state for k in KEYS):
        raise ValueError(f"not a training state (it lacks {', '.join(k for k in KEYS if k not in state)})")
    return state


def load_state(path: Path | None) -> dict[str, Any] | None:
    """The training state at ``path`` (None when there is none yet); a state that does not load falls back to
    ``NAME.prev``, and when neither loads the error names the file."""
    if path is None or not (path.is_file() or previous(path).is_file()):
        return None
    errors = []
    for candidate in (path, previous(path)):
        if not candidate.is_file():
            continue
        try:
            state = _read(candidate)
        except Exception as exc:
            errors.append(f"{candidate}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        if errors:
            console.print(f"[yellow]note[/]: {errors[0]}; resuming from the previous state {candidate}")
        return state
    raise RunStateError(f"cannot resume from the training state: {'; '.join(errors)}; delete it to start over")


def read_run_file(path: Path, remedy: str) -> Any:
    """A tensor file of a run directory (weights, cached logits), read without executing code; one that does not
    load is a RunStateError naming it and ``remedy``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip raise many types for a damaged or planted file
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise RunStateError(f"cannot read {path} ({type(exc).__name__}: {detail}); {remedy}") from None


def saved_epochs(path: Path) -> int:
    """Epochs recorded in the training state at ``path`` (0 when there is none yet)."""
    state = load_state(path)
    return len(state["history"]) if state else 0
