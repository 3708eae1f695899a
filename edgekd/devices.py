"""The device registry: devices.yaml entries validated on load (pydantic).

Lookup order for the registry file: an explicit path, ``./devices.yaml`` in the working directory, then the
registry shipped inside the package (the host CPU).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekd.errors import ConfigError

SHIPPED_REGISTRY = Path(__file__).with_name("devices.yaml")


class LocalDevice(BaseModel):
    """ONNX Runtime's CPU provider on this host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local"] = "local"
    description: str = ""
    threads: Annotated[int, Field(ge=1, le=256)] = 1
    warmup: Annotated[int, Field(ge=0)] = 20
    repeats: Annotated[int, Field(ge=3)] = 100
    batch_size: Annotated[int, Field(ge=1)] = 1


Device = LocalDevice
"""One registry entry; more kinds (ssh, adb, tensorrt, predictor) join this union as they are built."""


class NamedDevice(BaseModel):
    """A device entry with the name it has in the registry."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec: Device

    @property
    def fingerprint(self) -> str:
        """Name plus a hash of every setting: a changed entry never reuses another entry's measurements."""
        blob = json.dumps(self.spec.model_dump(), sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


class _Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: dict[str, Device]


def registry_path(path: Path | None = None) -> Path:
    """The registry file that applies: ``path``, else ./devices.yaml, else the shipped one."""
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"devices file not found: {path}")
        return path
    local = Path("devices.yaml")
    return local if local.is_file() else SHIPPED_REGISTRY


def load_devices(path: Path | None = None) -> dict[str, NamedDevice]:
    """Every device of the registry, validated; errors name the file, the device and the field."""
    path = registry_path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        registry = _Registry.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(err['loc'])}: {err['msg']}" + (f" (got {err['input']!r})" if "input" in err else "")
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    return {name: NamedDevice(name=name, spec=spec) for name, spec in registry.devices.items()}


def _where(loc: tuple) -> str:
    if len(loc) >= 2 and loc[0] == "devices":
        device, field = loc[1], ".".join(str(p) for p in loc[2:] if p != "local")
        return f"device {device!r}" + (f", field {field!r}" if field else "")
    return "field " + ".".join(map(str, loc))


def get_device(name: str, path: Path | None = None) -> NamedDevice:
    """The device ``name`` from the registry."""
    devices = load_devices(path)
    if name not in devices:
        raise ConfigError(f"unknown device {name!r} in {registry_path(path)}; known: {sorted(devices)}")
    return devices[name]
