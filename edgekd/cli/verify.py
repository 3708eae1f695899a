"""``edgekd verify``: the CI gate on a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgekd.cli.app import command, pairs
from edgekd.core.ui import console


@command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="NAME-VERSION.tar.gz made by `edgekd export`")],
    device: Annotated[str, typer.Option(help="Device in the registry to run the models on")] = "host-cpu",
    devices_file: Annotated[Path | None, typer.Option(help="devices.yaml to read")] = None,
    max_latency_drift: Annotated[float | None, typer.Option(
        max=1000, help="Fail if the fp32 model's latency drifts more than this fraction from the bundle's figure "
        "(only on the device the bundle was made on)")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the verification report here as JSON")] = None,
    sha256: Annotated[str | None, typer.Option(
        "--sha256", help="The bundle's sha256 as printed when it was packaged: any other archive is refused")] = None,
    public_key: Annotated[Path | None, typer.Option(
        help="ed25519 public key (PEM) whose signature the bundle must carry")] = None,
    signature: Annotated[Path | None, typer.Option(
        help=escape("The signature file [default: BUNDLE.sig beside the bundle]"))] = None,
    max_accuracy_drop: Annotated[list[str] | None, typer.Option(
        help="FORMAT=POINTS: the CI's largest top-1 drop for FORMAT (repeatable); given, these replace the "
             "bundle's own limits, and formats not named get edgekd's defaults")] = None,
) -> None:
    """Re-check a bundle's checksums and manifest and re-run its models (exit 7 tampered, 5 regressed).

    A CI gate should pass --sha256 or --public-key (nothing inside a bundle can vouch for the bundle) and its
    own --max-accuracy-drop limits."""
    from edgekd.core.config import write_json
    from edgekd.core.devices import get_device
    from edgekd.core.ui import summary
    from edgekd.pipeline.verify import verify as verify_bundle

    if max_latency_drift is not None and max_latency_drift <= 0:
        raise typer.BadParameter(f"a fraction above 0, got {max_latency_drift:g}", param_hint="--max-latency-drift")
    result = verify_bundle(bundle, get_device(device, devices_file), max_latency_drift, expected_sha256=sha256,
                           public_key=public_key, signature=signature,
                           max_accuracy_drop=pairs(max_accuracy_drop) if max_accuracy_drop else None)
    if report:
        write_json(report, result)
    summary(f"verified {result['name']} {result['version']} on {result['device']}", {
        fmt: f"top-1 {m['acc']:.4f} on {result['reference_n']} reference images, agreement "
             f"{m['top1_agreement']:.4f}, max |logit diff| {m['max_abs_logit_diff']:.2e}, {m['latency_ms']:.4f} ms"
        for fmt, m in result["models"].items()
    })
    if not result["authenticated_by"]:
        console.print("[yellow]note[/]: not authenticated (no --sha256 or --public-key): a rewritten bundle with "
                      "consistent checksums would pass too")
    console.print(f"[green]bundle verified[/] (sha256 {result['sha256']}; limits from the "
                  f"{'CI' if result['limits_from'] == 'ci' else 'bundle'})")
