"""``edgekd run``: every stage in one go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.cli.app import (
    CONFIG_OPTIONS,
    DISTILL_OPTIONS,
    EXPORT_OPTIONS,
    RUNTIME_OPTIONS,
    Name,
    RunsDir,
    SignKey,
    command,
)
from edgekd.core.config import resolve_config
from edgekd.core.ui import console


@command(CONFIG_OPTIONS, DISTILL_OPTIONS, RUNTIME_OPTIONS, EXPORT_OPTIONS)
def run(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs"),
        sign_key: SignKey = None) -> None:
    """All stages: teacher, search, distill, export, validate, package. No arguments: the embedded digits task."""
    from edgekd.pipeline.opening import check_names
    from edgekd.pipeline.run import run_all

    cfg = resolve_config(runs_dir / name, {"name": name, **overrides}, check_names)
    result = run_all(cfg, runs_dir, sign_key)
    times = ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
    console.print(f"[green]done[/] in {sum(result.stage_seconds.values()):.1f}s ({times}); bundle: {result.bundle}; "
                  f"report: {result.report}")
