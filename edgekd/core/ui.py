"""Terminal output: one rich console on stderr and progress bars that nest (search trials over epochs), with
an optional live table under them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True, quiet=bool(os.environ.get("EDGEKD_QUIET")))
error_console = Console(stderr=True)
"""Errors and interruptions: printed even with EDGEKD_QUIET, which only hides progress and summaries."""


class _ProgressWithTable(Progress):
    """Progress bars with an optional table below them (a search's best trials), refreshed with the bars."""

    table: RenderableType | None = None

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        if self.table is not None:
            yield self.table


_progress: _ProgressWithTable | None = None
_open_tasks = 0


@contextmanager
def progress(description: str, total: int, completed: int = 0) -> Iterator[Callable[..., None]]:
    """A progress bar; yields ``update(advance=1, **fields)``. Bars opened inside another share its display."""
    global _progress, _open_tasks
    if _progress is None:
        _progress = _ProgressWithTable(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        _progress.start()
    task = _progress.add_task(description, total=total, completed=completed, info="")
    _open_tasks += 1
    bar = _progress

    def update(advance: int = 1, info: str | None = None, table: RenderableType | None = None) -> None:
        bar.update(task, advance=advance, **({"info": info} if info is not None else {}))
        if table is not None:
            bar.table = table

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
