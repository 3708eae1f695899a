"""``edgekd export``: export, validate and package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgekd.cli.app import CONFIG_OPTIONS, EXPORT_OPTIONS, Name, RunsDir, SignKey, command, open_context


@command(CONFIG_OPTIONS, EXPORT_OPTIONS)
def export(
    overrides: dict[str, Any],
    name: Name = "quickstart",
    runs_dir: RunsDir = Path("runs"),
    checkpoint: Annotated[Path | None, typer.Option(
        help="Export this checkpoint instead of the run's distilled student (search-free packaging): an edgekd "
             "checkpoint, or a state_dict with arch.json beside it")] = None,
    sign_key: SignKey = None,
) -> None:
    """Export the student to every format, validate each on the device, package the bundle (its sha256 printed and
    written beside it; signed with --sign-key)."""
    from edgekd.pipeline.run import run_export

    run_export(open_context(name, runs_dir, overrides), checkpoint, sign_key)
