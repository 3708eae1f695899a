"""Terminal output: one rich console on stderr and progress bars that nest (search trials over epochs)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True, quiet=bool(os.environ.get("EDGEKD_QUIET")))
error_console = Console(stderr=True)
"""Errors and interruptions: printed even with EDGEKD_QUIET, which only hides progress and summaries."""
_progress: Progress | None = None
_open_tasks = 0


@contextmanager
def progress(description: str, total: int, completed: int = 0) -> Iterator[Callable[..., None]]:
    """A progress bar; yields ``update(advance=1, **fields)``. Bars opened inside another share its display."""
    global _progress, _open_tasks
    if _progress is None:
        _progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        _progress.start()
    task = _progress.add_task(description, total=total, completed=completed, info="")
    _open_tasks += 1
    bar = _progress

    def update(advance: int = 1, info: str | None = None) -> None:
        bar.update(task, advance=advance, **({"info": info} if info is not None else {}))

    try:
        yield update
    finally:
        _open_tasks -= 1
        if _open_tasks:
            bar.remove_task(task)
        else:
            bar.stop()
            _progress = None


def summary(title: str, rows: dict[str, object]) -> None:
    """A two-column table closing a stage."""
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
