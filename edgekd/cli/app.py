"""The ``edgekd`` typer app and what its commands share: the run-configuration options, error handling and the
run context. Each command lives in a module of its own beside this one."""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from edgekd.core.config import RunConfig, resolve_config
from edgekd.core.errors import EdgeKDError
from edgekd.core.ui import error_console

if TYPE_CHECKING:
    from edgekd.pipeline.context import RunContext

app = typer.Typer(
    help="Search, distill, export and package edge student models that learn well from your teacher.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Folder holding run directories.")]
SignKey = Annotated[Path | None, typer.Option(
    help="Sign the bundle with this ed25519 private key (PEM; edgekd keygen makes one): writes BUNDLE.sig")]
Name = Annotated[str, typer.Option("--name", help="Run name: artifacts go to RUNS_DIR/NAME/.")]

Option = tuple[str, str, type, str]
Command = Callable[..., Any]

# (CLI parameter, dotted RunConfig field, type, help). Every config option defaults to None: "not given",
# so a resumed run keeps its saved settings and only what the user passes is checked against them.
CONFIG_OPTIONS: list[Option] = [
    ("data", "data", str, "digits | glyphs[:N] | synthetic | cifar10:PATH | imagefolder:PATH"),
    ("resolution", "resolution", int, "Input resolution (images are resized) [default: the source's own]"),
    ("seed", "seed", int, "Seed of splits, sampling and training"),
    ("augment", "augment", str, "Training augmentation: none | standard (random-resized crop + flip at 64 px and "
     "above, pad-crop + flip below; the teacher then runs on every augmented batch)"),
    ("teacher", "teacher", str, "train | torchvision:NAME | PATH to an edgekd or TorchScript checkpoint"),
    ("teacher_weights", "teacher_weights", str, "Local state_dict for a torchvision:NAME teacher"),
    ("teacher_epochs", "teacher_train.epochs", int, "Epochs for a teacher trained on the spot"),
    ("device", "device", str, "Device name in devices.yaml"),
    ("devices_file", "devices_file", str, "devices.yaml to use [default: ./devices.yaml, else the shipped one]"),
    ("space", "search.space", str, "Search space: mnas (AKD) | mbv2 (EnNAS) | fbnet (FBNet) | family (AutoKD's "
     "random-graph families), or a layer-wise space file (.yaml; see README)"),
    ("space_width", "search.space_width", float, "Channel scale of the search space"),
    ("strategy", "search.strategy", str, "Search strategy: random | evolution (regularized) | nsga2 (accuracy/"
     "latency Pareto front) | rl (AKD's PPO controller) | bohb (AutoKD's TPE + Hyperband) | gp (Bayesian "
     "optimisation with a Gaussian process)"),
    ("trials", "search.trials", int, "Finished trials to reach (raise it to extend a search)"),
    ("search_kd", "search.search_kd", bool, "AutoKD: search the KD temperature and weight with the architecture"),
    ("reward_training", "search.reward_training", str, "Proxy training of candidates: kd (AKD's KD-guided "
     "search) | ce (hard labels, conventional NAS)"),
    ("jobs", "search.jobs", int, "Local worker processes evaluating candidates"),
    ("storage", "search.storage", str, "Optuna RDB URL shared by several machines (postgresql://USER:PW@HOST/DB) "
     "[default: SQLite in the run directory]"),
    ("study", "search.study", str, "Study name in the storage [default: the run's name]"),
    ("proxy_epochs", "search.proxy.epochs", int, "KD proxy-training epochs per candidate"),
    ("evaluator", "search.evaluator", str, "How candidates are rated: proxy (KD proxy training, AKD/AutoKD) | ennas "
     "(supernet trained with EnNAS's ensemble KD; space mbv2) | spos (plain single-path supernet) | dna (DNA: "
     "block-wise distillation from the teacher, exact pick under the target) | pamkd (PAMKD: learners that are "
     "differentiable supernets teach each other only when better; space mbv2)"),
    ("supernet_epochs", "search.oneshot.train.epochs", int, "Supernet training epochs (ennas, spos, dna, pamkd)"),
    ("subnets", "search.oneshot.subnets", int, "EnNAS: paths per batch forming the ensemble teacher"),
    ("diversity", "search.oneshot.diversity", bool, "EnNAS: diversity-based path sampling (--no-diversity: "
     "uniform, the paper's w/o DS)"),
    ("learners", "search.oneshot.pamkd.learners", int, "PAMKD: learners in the group"),
    ("scrutiny", "search.oneshot.pamkd.scrutiny", bool, "PAMKD: a learner teaches another only if better on mini-val "
     "(--no-scrutiny: plain mutual KD, every learner teaches every other)"),
    ("relaxation", "search.oneshot.pamkd.relaxation", str, "PAMKD: gdas (one operator per layer drawn by hard "
     "Gumbel-softmax per step) | darts (the softmax mixture of every operator; ~8x slower)"),
    ("grs_weight", "search.oneshot.pamkd.grs_weight", float, "PAMKD: weight of the group-wise relative similarity "
     "loss beside the KL term"),
    ("cost_weight", "search.oneshot.pamkd.cost_weight", float, "PAMKD: weight of max(0, log(E[cost] / target)) in "
     "the operator logits' loss"),
    ("reward", "search.reward", str, "MnasNet constraint: soft (w=-0.07) | hard (0 / -1)"),
    ("target_ms", "search.target_ms", float, "Latency target T in ms [default: a fraction of the teacher's]"),
    ("target_mmacs", "search.target_mmacs", float, "MACs target in millions, instead of latency"),
    ("target_fraction", "search.target_fraction_of_teacher", float, "Without a target: T = this x teacher latency"),
    ("kd_tau", "kd.tau", float, "KD temperature (AKD: 1)"),
    ("kd_alpha", "kd.alpha", float, "KD weight alpha, 0 = hard labels only (AKD: 0.9)"),
    ("distill_epochs", "distill.epochs", int, "Epochs of the final distillation"),
    ("batch_size", "distill.batch_size", int, "Global batch of the final distillation (split among torchrun's "
     "processes)"),
]
DISTILL_OPTIONS: list[Option] = [
    ("family_samples", "search.family_samples", int, "AutoKD (--space family): students drawn from the best family "
     "and each distilled; the report gives their mean and spread"),
]
RUNTIME_OPTIONS: list[Option] = [
    ("train_device", "runtime.train_device", str, "Where training runs: auto (a CUDA GPU, else Apple MPS, else the "
     "CPU) | cpu | cuda | mps; a GPU asked for and missing is an error"),
    ("amp", "runtime.amp", bool, "Mixed precision on CUDA: bf16 where the GPU has it, else fp16 with a loss scaler"),
    ("workers", "runtime.workers", int, "DataLoader processes decoding and augmenting images [default: 0 for "
     "in-memory data, else min(4, cores)]"),
    ("threads", "runtime.threads", int, "torch CPU threads [default: the cores this process may use, split "
     "among torchrun's processes and --jobs workers]"),
    ("checkpoint_steps", "runtime.checkpoint_steps", int, "Also save the training state every N steps inside "
     "an epoch"),
    ("checkpoint_minutes", "runtime.checkpoint_minutes", float, "Also save the training state inside an epoch "
     "every M minutes"),
]
EXPORT_OPTIONS: list[Option] = [
    ("formats", "export.formats", str, "Comma-separated formats: onnx, onnx-fp16, onnx-int8, ort (ONNX Runtime's "
     "mobile format), tflite, tflite-int8 (LiteRT, extra litert), executorch, executorch-int8, "
     "executorch-int8-pointwise (XNNPACK-delegated .pte, extra executorch; -pointwise keeps convolutions larger "
     "than 1x1 in fp32), tensorrt, tensorrt-fp16, tensorrt-int8 (TensorRT engines: on this host's GPU, or "
     "with an ssh --device built and run on the board by its trtexec); or auto: every format whose runtime is "
     "installed, the bundle keeping those that pass and that no other beats (faster, as accurate) on the device"),
    ("opset", "export.opset", int, "ONNX opset"),
    ("calibration_images", "export.calibration_images", int, "Training images calibrating int8 formats"),
    ("max_accuracy_drop", "export.max_accuracy_drop", dict, "FORMAT=POINTS: largest top-1 drop from PyTorch "
     "allowed for FORMAT (repeatable) [defaults: 0 for fp32 ONNX, ort, tflite, executorch; 0.5 for fp16 and "
     "TensorRT; 1 for int8]"),
    ("max_latency_drift", "export.max_latency_drift", float, "Largest relative drift of the fp32 model's "
     "latency from the latency model's figure, e.g. 0.25 [default: not checked]"),
]


def _help_with_default(field: str, typ: type, help_: str) -> str:
    """``help_`` plus RunConfig's default for ``field`` (so help never drifts from the config)."""
    value: Any = RunConfig()
    for part in field.split("."):
        value = getattr(value, part)
    if isinstance(value, tuple):
        value = ",".join(map(str, value))  # as the option is typed
    text = help_ if value is None or typ is dict else f"{help_} [default: {value}]"
    return escape(text)  # rich would read "[default: ...]" as markup


def pairs(values: list[str]) -> dict[str, float]:
    """Repeated FORMAT=NUMBER option values as a dict."""
    pairs = {}
    for item in values:
        key, sep, number = item.partition("=")
        try:
            pairs[key.strip()] = float(number)
        except ValueError:
            raise typer.BadParameter(f"expected FORMAT=NUMBER, got {item!r}") from None
        if not sep:
            raise typer.BadParameter(f"expected FORMAT=NUMBER, got {item!r}")
    return pairs


def _override(field: str, typ: type, value: Any) -> dict[str, Any]:
    """Dotted config overrides from one option; ``dict`` options take repeated KEY=VALUE pairs."""
    if value is None or typ is not dict:
        return {field: value}
    return {f"{field}.{key}": number for key, number in pairs(value).items()}


def with_config_options(*groups: list[Option]) -> Callable[[Command], Command]:
    """Add the options of ``groups`` to a command; the wrapped function gets them as dotted ``overrides``."""
    options = [o for group in groups for o in group]

    def deco(fn: Command) -> Command:
        # The module's annotations are strings (PEP 563): resolved here, or typer would lose their Option help.
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(fn).parameters.values()
               if p.name != "overrides"]
        extra = [
            inspect.Parameter(
                param, inspect.Parameter.KEYWORD_ONLY, default=None,
                annotation=Annotated[
                    (list[str] if typ is dict else typ) | None,
                    typer.Option(help=_help_with_default(field, typ, help_), rich_help_panel="Run configuration"),
                ],
            )
            for param, field, typ, help_ in options
        ]

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            overrides: dict[str, Any] = {}
            for param, field, typ, _ in options:
                overrides |= _override(field, typ, kwargs.pop(param))
            return fn(overrides=overrides, **kwargs)

        wrapper.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
        return wrapper

    return deco


def _message(exc: EdgeKDError) -> str:
    """The error's own message; for one raised in a DataLoader worker, which torch re-raises with the worker's
    traceback as its message, that traceback's last line without the exception's name."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith(type(exc).__module__) else last


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgeKDError into one line and its exit code, Ctrl-C into exit 130 (tracebacks with EDGEKD_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeKDError as exc:
            if os.environ.get("EDGEKD_DEBUG"):
                raise
            error_console.print(f"[bold red]error:[/] {escape(_message(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]: finished trials and epochs are kept; rerun to resume")
            raise typer.Exit(130) from None

    return wrapper


def command(*groups: list[Option]) -> Callable[[Command], Command]:
    """Register the decorated function as a command of ``app``: one-line errors, and the options of ``groups``
    passed to it as dotted ``overrides`` (where any are given)."""

    def deco(fn: Command) -> Command:
        return app.command()(handles_errors(with_config_options(*groups)(fn) if groups else fn))

    return deco


def open_context(name: str, runs_dir: Path, overrides: dict[str, Any]) -> RunContext:
    """The run ``name``'s context, its saved config updated with the command line's ``overrides``."""
    from edgekd.pipeline.opening import check_names, open_run

    cfg: RunConfig = resolve_config(runs_dir / name, {"name": name, **overrides}, check_names)
    return open_run(cfg, runs_dir)
DevicesFile = Annotated[Path | None, typer.Option(
    help=escape("devices.yaml to read [default: ./devices.yaml, else the shipped one]"))]
