"""``edgekd report``: a run's findings as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgekd.cli.app import RunsDir, command
from edgekd.core.ui import console


@command()
def report(
    runs: Annotated[list[str], typer.Argument(help="A run's name; two or more: compared side by side")],
    out: Annotated[Path | None, typer.Option(
        help=escape("Where to write the page [default: RUNS_DIR/RUN/report.html, or RUNS_DIR/report-A-vs-B.html]"))]
    = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write one HTML page (no network needed to view it) with the search, the latency model, the distillation
    curves, the validation per format and the bundle's identity; `edgekd run` writes it at the end."""
    from edgekd.pipeline.report import write_report

    page = write_report([runs_dir / r for r in runs], out)
    console.print(f"report: {page}")
