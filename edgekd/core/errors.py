"""The one error family edgekd raises for anything a user can fix, with documented exit codes."""

from __future__ import annotations


class EdgeKDError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with ``exit_code``."""

    exit_code = 2


class ConfigError(EdgeKDError):
    """Bad configuration: a run config, devices.yaml entry or command-line value."""

    exit_code = 2


class DataError(EdgeKDError):
    """A data or teacher source that is missing or not in the expected format."""

    exit_code = 3


class DeviceError(EdgeKDError):
    """A device that cannot be reached or measured (missing runtime, binary, GPU)."""

    exit_code = 4


class ValidationFailed(EdgeKDError):
    """An exported model whose accuracy, agreement or latency regressed beyond the allowed limits."""

    exit_code = 5


class RunStateError(EdgeKDError):
    """A run directory that lacks the artifact a stage needs (run the earlier stage first)."""

    exit_code = 6


class BundleError(EdgeKDError):
    """A bundle that is unreadable, incomplete or tampered with (a checksum or the manifest does not match)."""

    exit_code = 7
