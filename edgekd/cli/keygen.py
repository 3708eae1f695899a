"""``edgekd keygen``: a key pair for signing bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.app import command
from edgekd.core.ui import console


@command()
def keygen(
    name: Annotated[Path, typer.Argument(help="Writes NAME.pem (private, mode 600) and NAME.pub.pem (public)")],
) -> None:
    """Make an ed25519 key pair for signing bundles (export --sign-key NAME.pem; verify --public-key NAME.pub.pem)."""
    from edgekd.pipeline.trust import generate_keypair

    private, public = generate_keypair(name)
    console.print(f"private key {private} (keep it secret), public key {public}")
