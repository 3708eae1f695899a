"""``edgekd validate``: validate the exported models again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.cli.app import EXPORT_OPTIONS, Name, RunsDir, command, open_context


@command(EXPORT_OPTIONS)
def validate(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs")) -> None:
    """Validate the run's exported models again (exit 5 if one breaks a limit)."""
    from edgekd.pipeline.run import run_validate

    run_validate(open_context(name, runs_dir, overrides))
