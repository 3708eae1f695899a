"""The device registry: devices.yaml entries validated on load (pydantic).

Lookup order for the registry file: an explicit path, ``./devices.yaml`` in the working directory, then the
registry shipped inside the package (the host CPU).
"""

from __future__ import annotations

import hashlib
import json
import reprlib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from edgekd.core.errors import ConfigError
from edgekd.core.registry import Registry
from edgekd.core.yamlfile import read_yaml

SHIPPED_REGISTRY = Path(__file__).parent.parent / "devices.yaml"


class MeasurementProtocol(BaseModel):
    """How a measured device times a model (``edgekd.runtime.protocol``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["interleaved", "median"] = "interleaved"
    """interleaved: timed alternately with a fixed reference model, latency = ratio x the reference's calibrated
    latency, repeated until ``precision`` (drift-cancelling); median: the median of ``repeats`` runs alone."""
    precision: Annotated[float, Field(gt=0, le=1)] = 0.03
    """interleaved: target relative half-width of the latency's 95% interval."""
    budget_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    """interleaved: seconds per model after which it stops at the precision it reached."""
    drift_bound: Annotated[float, Field(gt=0, le=10)] = 0.15
    """interleaved: a measurement during which the reference moved more than this (coefficient of variation, or
    its median away from the session's) is redone."""
    passes: Annotated[int, Field(ge=1, le=20)] = 1
    """interleaved: each model measured in this many passes over the models measured together (every other pass
    in reverse order), its ratio the geometric mean of the passes': on a shared host a model's ratio to the
    reference moves by several percent over minutes (contention slows models unequally), which no precision
    within one pass averages away."""


class DeviceEntry(BaseModel):
    """The settings every device kind has; a kind adds its own fields and a literal ``kind``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    measurable: ClassVar[bool] = True
    """False for kinds that predict latency without a device (predictor files, nn-Meter)."""

    kind: str

    description: str = ""
    warmup: Annotated[int, Field(ge=0)] = 20
    repeats: Annotated[int, Field(ge=3)] = 100
    batch_size: Annotated[int, Field(ge=1)] = 1
    threads: Annotated[int, Field(ge=1, le=256)] = 1
    protocol: MeasurementProtocol = MeasurementProtocol()

    def resolved(self, folder: Path) -> DeviceEntry:
        """This entry with paths made absolute against ``folder``, the devices.yaml's folder."""
        return self


DEVICE_KINDS: Registry[type[DeviceEntry]] = Registry("device_kinds", "device kind")
"""The schema of each device kind (the ``kind`` field of a devices.yaml entry)."""


@DEVICE_KINDS.register("local")
class LocalDevice(DeviceEntry):
    """ONNX Runtime on this host (its CPU, or its NVIDIA GPU through the CUDA provider), measured in fresh processes."""

    kind: Literal["local"] = "local"
    provider: Literal["cpu", "cuda"] = "cpu"
    """ONNX Runtime execution provider: ``cuda`` runs and times the models on this host's NVIDIA GPU (needs
    onnxruntime-gpu); the latency then includes the copies between host and GPU memory."""
    affinity: list[Annotated[int, Field(ge=0)]] | None = None
    """CPU ids the measuring process is pinned to (Linux); None: no pinning."""
    variant: Literal["fp32", "fp16", "int8"] = "fp32"
    """Which model is timed: the fp32 export, its fp16 conversion or its static int8 quantization."""
    processes: Annotated[int, Field(ge=1)] = 3
    """Fresh processes per measurement, run at different moments; the latency is the lowest of their medians
    (on a shared machine the level moves by up to 2x over seconds)."""


@DEVICE_KINDS.register("ssh")
class SshDevice(DeviceEntry):
    """A board reached with the system OpenSSH client; ``command`` benchmarks the copied model there."""

    kind: Literal["ssh"]
    host: str
    """ssh destination: a host name, user@host, or an alias from ~/.ssh/config (keys, ProxyJump...)."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    identity_file: str | None = None
    ssh_options: list[str] = []
    """Extra ``-o`` options, e.g. ["StrictHostKeyChecking=accept-new"]."""
    remote_dir: str = "/tmp/edgekd"
    command: str
    """Run on the device; {model}, {warmup}, {repeats}, {threads}, {batch} and {shape} (e.g. 1x3x32x32) are
    filled in, e.g. ``trtexec --onnx={model} --iterations={repeats}`` or an ONNX Runtime benchmark."""
    pattern: str
    """Regular expression on the command's output whose first group is the latency (median where it has one)."""
    unit: Literal["ms", "us", "s"] = "ms"
    timeout_s: Annotated[float, Field(gt=0)] = 300
    trtexec: str = "trtexec"
    """TensorRT's trtexec on the device (e.g. /usr/src/tensorrt/bin/trtexec on a Jetson): the ``tensorrt``
    export formats build their engines there, since an engine only runs on the GPU that built it."""


AdbTool = Literal["onnxruntime_perf_test", "benchmark_model", "executor_runner"]
ADB_TOOL_FORMATS: dict[str, tuple[str, str]] = {
    "onnxruntime_perf_test": ("onnx", "onnx-int8"), "benchmark_model": ("tflite", "tflite-int8"),
    "executor_runner": ("executorch", "executorch-int8")}
"""The formats each phone tool times, (fp32, int8): ONNX Runtime's perf test, LiteRT's benchmark_model and
ExecuTorch's executor_runner (built with the XNNPACK delegate)."""


@DEVICE_KINDS.register("adb")
class AdbDevice(DeviceEntry):
    """An Android phone over adb: the model is pushed and a benchmark binary on the phone runs it."""

    kind: Literal["adb"]
    serial: str | None = None
    """adb serial (``adb devices``); needed when several phones are attached."""
    tool: AdbTool
    """The tool that times the searched candidates (in its format: ADB_TOOL_FORMATS)."""
    binary: str
    """Path of the tool on the phone, e.g. /data/local/tmp/onnxruntime_perf_test."""
    variant: Literal["fp32", "int8"] = "fp32"
    """Which model of the tool's format the search times: fp32, or its static int8 quantization."""
    tools: dict[AdbTool, str] = {}
    """Other tools on the phone by path: validation times each exported format with the tool that runs it."""
    affinity_mask: Annotated[str, Field(pattern=r"^(0x)?[0-9a-fA-F]+$")] | None = None
    """Hexadecimal CPU mask the tools run under (``taskset``), e.g. f0 for the big cores 4-7 of many phones."""
    cooldown_s: Annotated[float, Field(ge=0, le=600)] = 0.0
    """Seconds the phone idles before each model is timed: a hot phone throttles (the top source of bad phone
    numbers); its temperature and governor are recorded with every measurement."""
    remote_dir: str = "/data/local/tmp/edgekd"
    timeout_s: Annotated[float, Field(gt=0)] = 300

    @property
    def timed_format(self) -> str:
        """The export format the search times on the phone."""
        return ADB_TOOL_FORMATS[self.tool][self.variant == "int8"]

    @property
    def binaries(self) -> dict[str, str]:
        """Every tool of the entry, by name: its path on the phone."""
        return {**self.tools, self.tool: self.binary}


@DEVICE_KINDS.register("qaihub")
class QaiHubDevice(DeviceEntry):
    """A phone in Qualcomm AI Hub's cloud, through the ``qai-hub`` client (extra ``qaihub``): each model is
    compiled for ``target_runtime`` and profiled on the named device by AI Hub's jobs. The API token is the
    user's own qai-hub configuration (``qai-hub configure --api_token ...``); edgekd never reads or stores it."""

    kind: Literal["qaihub"]
    device: str
    """AI Hub's device name, exactly as ``qai-hub list-devices`` prints it, e.g. "Samsung Galaxy S24 (Family)"."""
    target_runtime: Literal["tflite", "qnn_dlc", "qnn_context_binary", "onnx", "precompiled_qnn_onnx"] = "tflite"
    """What AI Hub compiles the ONNX model to (its compile option ``--target_runtime``)."""
    compile_options: str = ""
    """Further compile job options, e.g. "--quantize_io"."""
    profile_options: str = ""
    """Further profile job options, e.g. "--compute_unit npu" (``repeats`` sets --max_profiler_iterations)."""
    protocol: MeasurementProtocol = MeasurementProtocol(kind="median")
    """Only ``median``: a cloud job per sample cannot be interleaved with a reference."""
    timeout_s: Annotated[float, Field(gt=0)] = 3600
    """Longest wait for a model's compile and profile jobs (they queue for a free phone)."""

    @field_validator("protocol")
    @classmethod
    def _median_only(cls, protocol: MeasurementProtocol) -> MeasurementProtocol:
        if protocol.kind != "median":
            raise ValueError("a qaihub device is timed by AI Hub's profile jobs: protocol kind must be median")
        return protocol


@DEVICE_KINDS.register("tensorrt")
class TensorRTDevice(DeviceEntry):
    """The local NVIDIA GPU through TensorRT's Python API (extra ``tensorrt``)."""

    kind: Literal["tensorrt"]
    precision: Literal["fp32", "fp16"] = "fp16"


@DEVICE_KINDS.register("predictor")
class PredictorDevice(DeviceEntry):
    """A latency predictor file (``edgekd profile`` writes one) standing in for a device that is not at hand.

    The timing settings apply where edgekd still runs a model on this host (validating exported files)."""

    measurable: ClassVar[bool] = False

    kind: Literal["predictor"]
    file: str
    """Predictor file, relative to the devices.yaml that names it."""

    def resolved(self, folder: Path) -> PredictorDevice:
        return self.model_copy(update={"file": str((folder / self.file).resolve())})


@DEVICE_KINDS.register("nnmeter")
class NnMeterDevice(DeviceEntry):
    """An nn-Meter predictor registered with nn-Meter on this machine (extra ``nnmeter``); never downloaded.

    The timing settings apply where edgekd still runs a model on this host (validating exported files)."""

    measurable: ClassVar[bool] = False

    kind: Literal["nnmeter"]
    predictor: str
    """Its name as registered, e.g. cortexA76cpu_tflite21 (whose files must already be here) or your own."""
    version: float | None = None




class NamedDevice(BaseModel):
    """A device entry with the name it has in the registry."""

    model_config = ConfigDict(frozen=True)

    name: str
    spec: SerializeAsAny[DeviceEntry]
    """The entry, an instance of its kind's schema."""

    @property
    def measurable(self) -> bool:
        """False for the predicted kinds (predictor files, nn-Meter), which give latency without a device."""
        return self.spec.measurable

    @property
    def fingerprint(self) -> str:
        """Name plus a hash of every setting: a changed entry never reuses another entry's measurements."""
        settings = self.spec.model_dump()
        if settings.get("protocol", {}).get("passes") == 1:  # an entry from before passes keeps its measurements
            del settings["protocol"]["passes"]
        blob = json.dumps(settings, sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


class _Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: dict[str, dict[str, Any]]


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
    raw = read_yaml(path, "a device registry") or {}
    try:
        entries = _Registry.model_validate(raw).devices
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_problems(exc, ())}") from None
    devices, problems = {}, []
    for name, entry in entries.items():
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in DEVICE_KINDS:
            problems.append(f"device {name!r}, field 'kind': {_SHORT.repr(kind)} is not a device kind "
                            f"({', '.join(DEVICE_KINDS.names())})")
            continue
        try:
            spec = DEVICE_KINDS.get(kind).model_validate(entry)
        except ValidationError as exc:
            problems.append(_problems(exc, ("devices", name)))
            continue
        devices[name] = NamedDevice(name=name, spec=spec.resolved(path.parent))
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")
    return devices


def _problems(exc: ValidationError, prefix: tuple) -> str:
    return "; ".join(
        f"{_where(prefix + err['loc'])}: {err['msg']}"
        + (f" (got {_SHORT.repr(err['input'])})" if "input" in err else "") for err in exc.errors()
    )


_SHORT = reprlib.Repr()  # values in error messages, shortened (an alias bomb's would never end)
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 3, 4, 4, 80, 80


def _where(loc: tuple) -> str:
    if len(loc) >= 2 and loc[0] == "devices":
        device, field = loc[1], ".".join(str(p) for p in loc[2:])
        return f"device {device!r}" + (f", field {field!r}" if field else "")
    return "field " + ".".join(map(str, loc))


def get_device(name: str, path: Path | None = None) -> NamedDevice:
    """The device ``name`` from the registry."""
    devices = load_devices(path)
    if name not in devices:
        raise ConfigError(f"unknown device {name!r} in {registry_path(path)}; known: {sorted(devices)}")
    return devices[name]
