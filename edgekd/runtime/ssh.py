"""``ssh`` devices: a board reached with the system OpenSSH client (so ~/.ssh/config, keys and ProxyJump apply).

The model is copied with scp, the entry's benchmark command runs there, and its output is parsed with the
entry's pattern. ``upload``/``download``/``ssh`` are also the transport of TensorRT engines built on the board
(edgekd.runtime.trtexec).
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import uuid
from pathlib import Path

from edgekd.core.devices import SshDevice
from edgekd.core.errors import DeviceError
from edgekd.core.measurement import Measurement
from edgekd.runtime import BACKENDS
from edgekd.runtime.conditions import CONDITIONS_SCRIPT, parse_conditions
from edgekd.runtime.protocol import Sampler

UNIT_MS = {"ms": 1.0, "us": 1e-3, "s": 1e3}


@BACKENDS.register("ssh")
class SshBackend:
    def __init__(self, spec: SshDevice) -> None:
        self.spec = spec
        self.runtime = f"ssh:{shlex.split(spec.command)[0]}"

    def _options(self, port_flag: str) -> list[str]:
        s = self.spec
        opts = ["-o", "BatchMode=yes"]
        if s.port:
            opts += [port_flag, str(s.port)]
        if s.identity_file:
            opts += ["-i", str(Path(s.identity_file).expanduser())]
        for o in s.ssh_options:
            opts += ["-o", o]
        return opts

    def _run(self, argv: list[str], what: str) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.spec.timeout_s)
        except FileNotFoundError as exc:
            raise DeviceError(f"{argv[0]} not found: install the OpenSSH client") from exc
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"{what} on {self.spec.host} timed out after {self.spec.timeout_s:g} s") from exc
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DeviceError(f"{what} on {self.spec.host} failed (exit {proc.returncode}): {' | '.join(detail)}")
        return proc.stdout

    def ssh(self, command: str, what: str) -> str:
        return self._run(["ssh", *self._options("-p"), self.spec.host, command], what)

    def upload(self, path: Path) -> str:
        """Copy ``path`` into the device's remote_dir, named by its content hash; returns the remote path.

        A file already there under that name is not copied again (an engine is validated, then timed). Each copy
        lands under a temporary name of its own first, so an interrupted one never passes for the whole file and
        two processes copying the same file do not write into one.
        """
        s = self.spec
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        remote = f"{s.remote_dir.rstrip('/')}/{digest}{path.suffix}"
        quoted, partial = shlex.quote(remote), f"{remote}.{uuid.uuid4().hex[:12]}.partial"
        present = self.ssh(f"mkdir -p {shlex.quote(s.remote_dir)} && if test -f {quoted}; then echo present; fi",
                           "creating the remote folder")
        if "present" not in present.split():
            self._run(["scp", "-q", *self._options("-P"), str(path), f"{s.host}:{partial}"], f"copying {path.name}")
            self.ssh(f"mv -f {shlex.quote(partial)} {quoted}", f"copying {path.name}")
        return remote

    def download(self, remote: str, local: Path) -> Path:
        """Copy the device's file ``remote`` to ``local``."""
        self._run(["scp", "-q", *self._options("-P"), f"{self.spec.host}:{remote}", str(local)],
                  f"fetching {remote}")
        return local

    def sampler(self, path: Path, input_shape: tuple[int, ...]) -> Sampler:
        """Copy the model over; each call runs the entry's command on it and parses its latency."""
        s = self.spec
        remote = self.upload(path)
        shape = "x".join(map(str, (s.batch_size, *input_shape)))
        command = s.command.format(model=shlex.quote(remote), warmup=s.warmup, repeats=s.repeats,
                                   threads=s.threads, batch=s.batch_size, shape=shape)
        return lambda: parse_latency(self.ssh(command, "the benchmark command"), s.pattern, s.unit)

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        """One run of the entry's command on the model."""
        s = self.spec
        ms = self.sampler(path, input_shape)()
        return Measurement(ms, ms, ms, s.repeats, s.threads, s.batch_size, self.runtime)

    def conditions(self) -> dict[str, str]:
        return parse_conditions(self.ssh(CONDITIONS_SCRIPT, "reading the board's state"))

    def check(self) -> list[tuple[str, bool, str]]:
        """Whether the board answers and has the entry's benchmark binary (and its trtexec, where the entry
        names one)."""
        try:
            uname = self.ssh("uname -srm", "connecting").strip()
        except DeviceError as exc:
            return [("ssh", False, str(exc))]
        tools = [("benchmark binary", self.spec.command)]
        if "trtexec" in self.spec.model_fields_set:
            tools.append(("trtexec", self.spec.trtexec))
        return [("ssh", True, uname), *[(row, *self._find(shlex.split(command)[0])) for row, command in tools]]

    def _find(self, tool: str) -> tuple[bool, str]:
        try:
            found = self.ssh(f"command -v {shlex.quote(tool)}", f"looking for {tool}").strip()
        except DeviceError:
            found = ""
        return bool(found), found or f"{tool} not found on the device"


def parse_latency(output: str, pattern: str, unit: str = "ms") -> float:
    """The latency in ms: the first group of ``pattern`` in ``output``, in ``unit``."""
    match = re.search(pattern, output)
    if not match:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise DeviceError(f"the benchmark output does not match pattern {pattern!r}; it ended with: {tail}")
    return float(match.group(1)) * UNIT_MS[unit]
