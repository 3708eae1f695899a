"""``edgekd search``: the KD-guided architecture search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.cli.app import CONFIG_OPTIONS, RUNTIME_OPTIONS, Name, RunsDir, command, open_context


@command(CONFIG_OPTIONS, RUNTIME_OPTIONS)
def search(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs")) -> None:
    """KD-guided architecture search (resumable: the same command continues an interrupted search)."""
    from edgekd.pipeline.run import run_search

    run_search(open_context(name, runs_dir, overrides))
