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
def devices_check(name: Annotated[str, typer.Argument(help="Device name")], devices_file: DevicesFile = None) -> None:
    """Say whether a device is reachable and ready (runtime present, binary found, GPU present); exit 4 if not."""
    from edgekd.core.devices import get_device
    from edgekd.core.errors import DeviceError
    from edgekd.core.ui import summary
    from edgekd.latency_models import check_device

    rows = check_device(get_device(name, devices_file))
    summary(f"device {name}", {what: ("ok: " if ok else "NOT READY: ") + detail for what, ok, detail in rows})
    problems = [f"{what}: {detail}" for what, ok, detail in rows if not ok]
    if problems:
        raise DeviceError(f"device {name!r} is not ready: {'; '.join(problems)}")
    console.print(f"[green]device {name} is ready[/]")
