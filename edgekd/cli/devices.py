"""``edgekd devices``: list the device registry, check a device."""

from __future__ import annotations

from typing import Annotated

import typer

from edgekd.cli.app import DevicesFile, app, handles_errors
from edgekd.core.ui import console

devices_app = typer.Typer(help="The device registry: list it, check a device.", invoke_without_command=True)
app.add_typer(devices_app, name="devices")


@devices_app.callback()
@handles_errors
def devices(ctx: typer.Context, devices_file: DevicesFile = None) -> None:
    """List the devices of the registry (`edgekd devices check NAME` checks one)."""
    if ctx.invoked_subcommand:
        return
    from edgekd.core.devices import load_devices, registry_path
    from edgekd.core.ui import summary

    table = {name: f"{d.spec.kind}: {d.spec.description}" for name, d in load_devices(devices_file).items()}
    summary(f"devices in {registry_path(devices_file)}", table)


@devices_app.command("check")
@handles_errors
def devices_check(
    name: Annotated[str, typer.Argument(help="Device name")], devices_file: DevicesFile = None,
    stability: Annotated[bool, typer.Option(help="Also probe the device's timing noise: the reference model timed "
                                                 "against itself for --seconds; exit 4 when it is unfit for a "
                                                 "search at --precision, with what to change")] = False,
    seconds: Annotated[float, typer.Option(min=1, max=3600, help="Length of the stability probe")] = 20.0,
    precision: Annotated[float | None, typer.Option(min=0.001, max=1, help="Relative precision a search needs "
                                                          "(default: the device's protocol precision)")] = None,
    input_shape: Annotated[str, typer.Option("--input", help="Input shape CxHxW of the probe's reference "
                                                             "model")] = "3x32x32",
) -> None:
    """Say whether a device is reachable and ready (runtime present, binary found, GPU present); exit 4 if not."""
    from edgekd.core.devices import get_device
    from edgekd.core.errors import ConfigError, DeviceError
    from edgekd.core.ui import summary
    from edgekd.latency_models import check_device

    device = get_device(name, devices_file)
    rows = check_device(device)
    problems = [f"{what}: {detail}" for what, ok, detail in rows if not ok]
    if stability and not problems:
        if not device.measurable:
            raise ConfigError(f"device {name!r} predicts latency: it has no timing noise to probe")
        from edgekd.latency_models.measured import MeasuredLatency
        from edgekd.latency_models.stability import probe_stability, stability_rows
        from edgekd.pipeline.context import latency_cache

        shape = parse_shape(input_shape)
        found = probe_stability(MeasuredLatency(device, latency_cache()), shape, seconds, precision=precision)
        rows += stability_rows(found)
        problems += [] if found.fit else [f"unfit for a search at ±{found.precision:.1%}: " + "; ".join(found.advice)]
    summary(f"device {name}", {what: ("ok: " if ok else "NOT READY: ") + detail for what, ok, detail in rows})
    if problems:
        raise DeviceError(f"device {name!r} is not ready: {'; '.join(problems)}")
    console.print(f"[green]device {name} is ready[/]")


def parse_shape(text: str) -> tuple[int, int, int]:
    """CxHxW as a tuple; a BadParameter naming the value otherwise."""
    try:
        c, h, w = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected CxHxW such as 3x32x32, got {text!r}", param_hint="--input") from None
    if min(c, h, w) < 1:
        raise typer.BadParameter(f"every dimension must be positive, got {text!r}", param_hint="--input")
    return c, h, w
