"""``edgekd distill``: the final distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.cli.app import DISTILL_OPTIONS, RUNTIME_OPTIONS, Name, RunsDir, command, open_context


@command(DISTILL_OPTIONS, RUNTIME_OPTIONS)
def distill(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs")) -> None:
    """Distill the best searched architecture from the teacher (resumable per epoch, and inside long epochs).

    Data-parallel on several GPUs or processes: torchrun --nproc-per-node N -m edgekd distill --name NAME."""
    from edgekd.pipeline.run import run_distill

    run_distill(open_context(name, runs_dir, overrides))
