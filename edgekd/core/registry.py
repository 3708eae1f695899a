"""One kind of registry for every extension point: search spaces, strategies, evaluators, export formats, data
sources, teachers, device kinds, measuring backends, latency models and predictor kinds.

A registry maps a name to a member (a class, a function or a small record). edgekd's own members register
themselves when their module is imported; another installed package adds members without editing edgekd by
declaring entry points in the group ``edgekd.<registry name>``, for example in its pyproject.toml::

    [project.entry-points."edgekd.formats"]
    coreml = "mypkg.coreml:COREML_FORMAT"

The entry point's name is the member's name and the object it points at is the member.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from edgekd.core.errors import ConfigError, EdgeKDError

T = TypeVar("T")

ENTRY_POINT_PREFIX = "edgekd."
ALL: dict[str, Registry] = {}
"""Every registry by name, for the contract tests and ``edgekd plugins``-style listings."""


class Registry(Generic[T]):
    """Named members of one extension point, completed from entry points on first lookup."""

    def __init__(self, name: str, what: str, builtin_modules: tuple[str, ...] = (),
                 error: type[EdgeKDError] = ConfigError) -> None:
        """``what`` names a member in messages ("export format"); ``builtin_modules`` register the built-in
        members when imported (imported on first lookup, so that importing a registry stays cheap); ``error``
        is raised for an unknown name."""
        self.name, self.what, self.error = name, what, error
        self._builtin_modules = builtin_modules
        self._members: dict[str, T] = {}
        self._loaded = False
        ALL[name] = self

    @property
    def group(self) -> str:
        """The entry-point group other packages declare members in."""
        return ENTRY_POINT_PREFIX + self.name

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object as member ``name``."""

        def deco(member: T) -> T:
            self.add(name, member)
            return member

        return deco

    def add(self, name: str, member: T) -> None:
        """Add ``member`` as ``name``; a second, different member under one name is a ConfigError."""
        if name in self._members and self._members[name] is not member:
            raise ConfigError(f"two {self.what}s are registered as {name!r}: {self._members[name]!r} and {member!r}")
        self._members[name] = member

    def get(self, name: str) -> T:
        """The member ``name``; ConfigError listing the available names otherwise."""
        self._load()
        if name not in self._members:
            raise self.error(f"unknown {self.what} {name!r}; available: {', '.join(sorted(self._members))}")
        return self._members[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._members

    def names(self) -> list[str]:
        """Every member's name, sorted."""
        self._load()
        return sorted(self._members)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, member) for every member, sorted by name."""
        return ((name, self._members[name]) for name in self.names())

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: a built-in module may look members up while it is imported
        for module in self._builtin_modules:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            try:
                member = ep.load()
            except Exception as exc:  # a broken plugin names itself instead of breaking edgekd with a traceback
                raise ConfigError(f"the {self.what} {ep.name!r} declared by entry point {ep.value!r} "
                                  f"({self.group}) cannot be loaded: {type(exc).__name__}: {exc}") from exc
            self.add(ep.name, member)
