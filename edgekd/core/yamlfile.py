"""Reading a user's YAML file (devices.yaml, a space file): every way it can be wrong is one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgekd.core.errors import ConfigError

MAX_NODES = 100_000
"""Values a file may hold once its aliases are expanded: far more than any real one, far fewer than an alias
bomb ("billion laughs") expands to."""


def read_yaml(path: Path, what: str) -> Any:
    """The YAML data in ``path`` (``what`` names the file's kind in errors, e.g. "a device registry")."""
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (not UTF-8 at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if _nodes(raw) > MAX_NODES:
        raise ConfigError(f"{path}: more than {MAX_NODES} values once its aliases are expanded; {what} is far "
                          "smaller (an alias bomb?)")
    return raw


def _nodes(value: object) -> int:
    """The number of values in ``value`` as YAML aliases expand it, counted up to just past MAX_NODES."""
    count, stack = 0, [value]
    while stack and count <= MAX_NODES:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count
