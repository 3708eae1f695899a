"""The ``edgekd`` command line: parse, call a pipeline function, print. No logic lives here; one module per
command, registered on ``app`` when imported (in the order ``--help`` lists them)."""

import importlib

from edgekd.cli.app import app

COMMANDS = ("run", "search", "ablate", "distill", "export", "validate", "verify", "report", "keygen", "devices",
            "profile")
for _command in COMMANDS:
    importlib.import_module(f"edgekd.cli.{_command}")

__all__ = ["app"]
