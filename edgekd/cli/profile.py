"""``edgekd profile``: measure a device and fit its latency predictors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgekd.cli.app import DevicesFile, command
from edgekd.core.ui import console


@command()
def profile(
    device: Annotated[str, typer.Option(help="Device to measure (a name in devices.yaml)")] = "host-cpu",
    devices_file: DevicesFile = None,
    archs: Annotated[int, typer.Option(help="Random architectures measured to fit the predictors")] = 300,
    heldout: Annotated[int, typer.Option(help="Further architectures the predictors are scored on")] = 100,
    budget: Annotated[int | None, typer.Option(
        help="Measure this many architectures chosen to spread over the space (the most informative for the "
        "predictors' fit) instead of --archs random ones")] = None,
    transfer_from: Annotated[Path | None, typer.Option(
        help="A predictor file of another device (from `edgekd profile`): also fit its transfer to this device, "
        "which needs far fewer measurements (e.g. --budget 30)")] = None,
    kind: Annotated[str, typer.Option(
        help="Predictor to name as the one to use: best (the most accurate on the held-out architectures) | "
        "flops | lut | learned | blocks | table | transfer")] = "best",
    blocks: Annotated[bool, typer.Option(help="Also profile the block table in context (kind blocks)")] = True,
    data: Annotated[str, typer.Option(help="Data whose input shape the architectures take")] = "digits",
    resolution: Annotated[int | None, typer.Option(
        help=escape("Input resolution [default: the data's own]"))] = None,
    space: Annotated[str, typer.Option(help="Search space preset")] = "mnas",
    space_width: Annotated[float, typer.Option(help="Channel scale of the search space")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the architecture sample")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for the predictor files and the report")] = Path("predictors"),
    imported: Annotated[Path | None, typer.Option(
        "--import", help="Fit on latencies measured elsewhere instead of measuring: a CSV with an `ms` column and "
        "either an `arch` column (ArchSpec JSON) or one column per decision of --space; --device only names the "
        "files, and --heldout of its rows (at most a quarter) are held out")] = None,
) -> None:
    """Measure a device on random architectures (resumable), fit every predictor, report on held-out ones."""
    from edgekd.core.ui import summary
    from edgekd.pipeline.profile import BEST, STEADY_WITHIN10, agrees_with_itself, profile

    report = profile(device, devices_file, archs, heldout, kind, blocks, data, resolution, space, space_width, seed,
                     out, imported, budget, transfer_from)
    rows = {k: f"RMSE {r['rmse_ms']:.4f} ms, MAPE {r['mape']:.1%}, within ±10% {r['within10']:.1%}, Kendall "
               f"{r['kendall']:.3f}, {r['predict_s_per_arch'] * 1e3:.3f} ms per prediction"
               + (f" ({r['speedup']:.0f}x cheaper)" if r.get("speedup") else "")
            for k, r in report["predictors"].items()}
    ceiling = report.get("measurement_ceiling")  # none where the latencies were imported
    if ceiling:
        rows["measurement ceiling"] = (f"a second measurement agrees with the first: within ±10% "
                                       f"{ceiling['within10']:.1%}, Kendall {ceiling['kendall']:.3f} "
                                       f"({report['redone_for_drift']} measurements redone for drift)")
    summary(f"{device}: {report['n_heldout']} held-out architectures", rows)
    if ceiling and not agrees_with_itself(ceiling):
        console.print(f"[yellow]warning[/]: {device} does not agree with itself: a second measurement of the held-out "
                      f"architectures lies within ±10% of the first for {ceiling['within10']:.0%} of them (fewer than "
                      f"{STEADY_WITHIN10:.0%}), so the figures above measure its noise as much as the predictors' "
                      "error. Profile it again when it is quiet, or give its devices.yaml entry more passes "
                      "(`protocol: {kind: interleaved, passes: 3}`; README: Passes).")
    why = ", the most accurate here" if kind == BEST else ""
    console.print(f"saved {report['chosen_file']} ({report['chosen']}{why}); use it with a devices.yaml entry "
                  f"`kind: predictor` and `file: {report['chosen_file']}`")
