"""``python -m edgekd``: the command line, for environments without the console script on PATH."""

from edgekd.cli import app

app(prog_name="edgekd")
