"""``edgekd ablate``: AKD's searched-by x trained-by table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgekd.cli.app import RunsDir, command
from edgekd.core.ui import console


@command()
def ablate(
    runs: Annotated[list[str], typer.Argument(help="Names of finished searches (e.g. one with --reward-training kd, "
                                                   "one with ce) on the same data and teacher")],
    top: Annotated[int, typer.Option(min=1, max=1000, help="Best students taken from each search")] = 3,
    epochs: Annotated[int | None, typer.Option(
        min=1, max=10_000, help=escape("Training epochs [default: the run's distill epochs]"))] = None,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Training seeds per student (the run's seed and the "
                                                             "next ones): the table gives 95% intervals")] = 1,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """AKD's "searched by x trained by" table: each search's top students trained with hard labels and with KD."""
    from edgekd.core.ui import summary
    from edgekd.pipeline.ablate import TRAININGS
    from edgekd.pipeline.ablate import ablate as run_ablation

    if len(set(runs)) < 2:
        raise typer.BadParameter("give at least two different runs to compare")
    out = runs_dir / ("ablate-" + "-".join(runs))
    table = run_ablation([runs_dir / r for r in runs], out, top, epochs, seeds)
    summary(f"held-out top-1 (mean of top {top}): trained by {' | '.join(TRAININGS)}",
            {row: " | ".join(f"{accs[t] * 100:.2f}%" for t in TRAININGS) for row, accs in table.items()})
    console.print(f"written to {out}/ablation.md and ablation.json")
