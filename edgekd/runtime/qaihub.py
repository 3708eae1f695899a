"""``qaihub`` devices: phones in Qualcomm AI Hub's cloud, through the ``qai-hub`` client (extra ``qaihub``).

Written to the client's documented API: ``submit_compile_job(model, device, name, options)`` compiles the ONNX
model for the entry's target runtime, ``submit_profile_job(model, device, name, options)`` runs the result on a
phone of the named kind, and the profile job's ``download_profile()`` gives its execution summary (every
inference time, in microseconds) and the compute unit (NPU, GPU, CPU) each layer ran on. The models of one call
are submitted together, as AI Hub runs jobs in parallel, and waited for together. Without the package, a token
(the user's own qai-hub configuration) or a network, a DeviceError says which.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.core.devices import QaiHubDevice
from edgekd.core.errors import DeviceError
from edgekd.core.measurement import Measurement
from edgekd.runtime import BACKENDS

INSTALL_HINT = "pip install 'edgekd[qaihub]'"
TOKEN_HINT = "configure your API token with `qai-hub configure --api_token TOKEN` (see https://aihub.qualcomm.com)"


def _hub() -> Any:
    try:
        import qai_hub
    except ImportError as exc:
        raise DeviceError(f"the qai-hub client is not installed: {INSTALL_HINT}") from exc
    return qai_hub


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, the client's errors (no configuration, authentication, network) made DeviceErrors
    that say what failed."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # the client raises its own UserError, requests' errors and more
        message = " ".join(re.sub(r"[┌┐└┘─│|]+", " ", str(exc)).split())[:600]  # the client draws boxes
        hint = f"; {TOKEN_HINT}" if any(w in message.lower() for w in ("configuration", "authenticat", "token")) \
            else ""
        raise DeviceError(f"AI Hub {what} failed: {type(exc).__name__}: {message}{hint}") from exc


def profile_measurement(profile: dict[str, Any], spec: QaiHubDevice, runtime: str, job_url: str) -> Measurement:
    """The Measurement of a profile job's ``download_profile()``: the median of every inference time (its
    ``estimated_inference_time`` is the fastest run, not a typical one), their 10th/90th percentiles, and the
    compute unit of each layer in the conditions."""
    summary = profile.get("execution_summary") or {}
    runs = [t for t in summary.get("all_inference_times") or [] if isinstance(t, int | float) and t > 0]
    if not runs:
        estimated = summary.get("estimated_inference_time")
        if not isinstance(estimated, int | float) or estimated <= 0:
            raise DeviceError(f"AI Hub's profile ({job_url}) has no inference time")
        runs = [estimated]
    median, p10, p90 = np.percentile(np.asarray(runs, dtype=float) / 1e3, [50, 10, 90])
    layers = [(str(layer.get("name", "")), str(layer.get("compute_unit", "?")))
              for layer in profile.get("execution_detail") or []]
    units = Counter(unit for _, unit in layers)
    conditions = {"device": spec.device, "profile_job": job_url,
                  "compute_units": ", ".join(f"{unit} {n}" for unit, n in units.most_common()) or "unknown",
                  "layer_compute_units": json.dumps(layers)}
    return Measurement(float(median), float(p10), float(p90), len(runs), spec.threads, spec.batch_size, runtime,
                       conditions=conditions)


@BACKENDS.register("qaihub")
class QaiHubBackend:
    def __init__(self, spec: QaiHubDevice) -> None:
        self.spec = spec
        self.runtime = f"qaihub:{spec.target_runtime}"

    def _wait(self, job: Any, what: str, path: Path) -> None:
        status = _call(f"{what} job", job.wait, int(self.spec.timeout_s))
        if not status.success:
            raise DeviceError(f"AI Hub's {what} job of {path.name} on {self.spec.device} did not succeed: "
                              f"{status.message or status.code} ({job.url})")

    def measure_many(self, paths: list[Path]) -> list[Measurement]:
        """Compile and profile every model on the entry's device, all jobs submitted before any is waited for."""
        hub, s = _hub(), self.spec
        device = hub.Device(s.device)
        compiles = [_call("compile job submission", hub.submit_compile_job, model=str(p), device=device,
                          name=f"edgekd {p.stem}", options=f"--target_runtime {s.target_runtime} {s.compile_options}"
                          .strip()) for p in paths]
        profiles = []
        for path, job in zip(paths, compiles, strict=True):
            self._wait(job, "compile", path)
            profiles.append(_call("profile job submission", hub.submit_profile_job, model=job.get_target_model(),
                                  device=device, name=f"edgekd {path.stem}",
                                  options=f"--max_profiler_iterations {s.repeats} {s.profile_options}".strip()))
        out = []
        for path, job in zip(paths, profiles, strict=True):
            self._wait(job, "profile", path)
            out.append(profile_measurement(_call("profile download", job.download_profile), s, self.runtime,
                                           job.url))
        return out

    def measure_onnx(self, path: Path, input_shape: tuple[int, ...]) -> Measurement:
        return self.measure_many([path])[0]

    def check(self) -> list[tuple[str, bool, str]]:
        """The client is installed and configured, and AI Hub has a device of the entry's name."""
        try:
            hub = _hub()
        except DeviceError as exc:
            return [("qai-hub client", False, str(exc))]
        rows = [("qai-hub client", True, f"qai-hub {getattr(hub, '__version__', '(version unknown)')}")]
        try:
            found = _call("device lookup", hub.get_devices, name=self.spec.device)
        except DeviceError as exc:
            return [*rows, ("AI Hub", False, str(exc))]
        return [*rows, ("device", bool(found), f"{self.spec.device}: {len(found)} on AI Hub" if found else
                        f"AI Hub has no device named {self.spec.device!r}; `qai-hub list-devices` lists them")]
