"""The ``edgekd`` command line: parse, call a pipeline function, print. No logic lives here."""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from edgekd.config import RunConfig, resolve_config
from edgekd.errors import EdgeKDError
from edgekd.ui import console, error_console

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
    ("data", "data", str, "digits | synthetic | cifar10:PATH | imagefolder:PATH"),
    ("resolution", "resolution", int, "Input resolution (images are resized) [default: the source's own]"),
    ("seed", "seed", int, "Seed of splits, sampling and training"),
    ("augment", "augment", str, "Training augmentation: none | standard (random-resized crop + flip at 64 px and "
     "above, pad-crop + flip below; the teacher then runs on every augmented batch)"),
    ("teacher", "teacher", str, "train | torchvision:NAME | PATH to an edgekd or TorchScript checkpoint"),
    ("teacher_weights", "teacher_weights", str, "Local state_dict for a torchvision:NAME teacher"),
    ("teacher_epochs", "teacher_train.epochs", int, "Epochs for a teacher trained on the spot"),
    ("device", "device", str, "Device name in devices.yaml"),
    ("devices_file", "devices_file", str, "devices.yaml to use [default: ./devices.yaml, else the shipped one]"),
    ("space", "search.space", str, "Search space preset"),
    ("space_width", "search.space_width", float, "Channel scale of the search space"),
    ("strategy", "search.strategy", str, "Search strategy: random | evolution (regularized) | nsga2 (accuracy/"
     "latency Pareto front) | rl (AKD's PPO controller) | bohb (AutoKD's TPE + Hyperband)"),
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
     "block-wise distillation from the teacher, exact pick under the target)"),
    ("supernet_epochs", "search.oneshot.train.epochs", int, "Supernet training epochs (ennas, spos, dna)"),
    ("subnets", "search.oneshot.subnets", int, "EnNAS: paths per batch forming the ensemble teacher"),
    ("diversity", "search.oneshot.diversity", bool, "EnNAS: diversity-based path sampling (--no-diversity: "
     "uniform, the paper's w/o DS)"),
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
    ("formats", "export.formats", str, "Comma-separated formats: onnx, onnx-fp16, onnx-int8, tensorrt, "
     "tensorrt-fp16, tensorrt-int8 (TensorRT engines: on this host's GPU, or with an ssh --device built and run "
     "on the board by its trtexec)"),
    ("opset", "export.opset", int, "ONNX opset"),
    ("calibration_images", "export.calibration_images", int, "Training images calibrating int8 formats"),
    ("max_accuracy_drop", "export.max_accuracy_drop", dict, "FORMAT=POINTS: largest top-1 drop from PyTorch "
     "allowed for FORMAT (repeatable) [defaults: onnx=0, onnx-fp16=0.5, onnx-int8=1]"),
    ("max_latency_drift", "export.max_latency_drift", float, "Largest relative drift of the fp32 model's "
     "latency from the latency model's figure, e.g. 0.25 [default: not checked]"),
]


def _help_with_default(field: str, typ: type, help_: str) -> str:
    """``help_`` plus RunConfig's default for ``field`` (so help never drifts from the config)."""
    value: Any = RunConfig()
    for part in field.split("."):
        value = getattr(value, part)
    text = help_ if value is None or typ is dict else f"{help_} [default: {value}]"
    return escape(text)  # rich would read "[default: ...]" as markup


def _pairs(values: list[str]) -> dict[str, float]:
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
    return {f"{field}.{key}": number for key, number in _pairs(value).items()}


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


def handles_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgeKDError into one line and its exit code, Ctrl-C into exit 130 (tracebacks with EDGEKD_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeKDError as exc:
            if os.environ.get("EDGEKD_DEBUG"):
                raise
            error_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]: finished trials and epochs are kept; rerun to resume")
            raise typer.Exit(130) from None

    return wrapper


def _context(name: str, runs_dir: Path, overrides: dict[str, Any]):
    from edgekd.pipeline.context import open_run

    cfg: RunConfig = resolve_config(runs_dir / name, {"name": name, **overrides})
    return open_run(cfg, runs_dir)


@app.command()
@handles_errors
@with_config_options(CONFIG_OPTIONS, RUNTIME_OPTIONS, EXPORT_OPTIONS)
def run(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs"),
        sign_key: SignKey = None) -> None:
    """All stages: teacher, search, distill, export, validate, package. No arguments: the embedded digits task."""
    from edgekd.pipeline.run import run_all

    cfg = resolve_config(runs_dir / name, {"name": name, **overrides})
    result = run_all(cfg, runs_dir, sign_key)
    times = ", ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
    console.print(f"[green]done[/] in {sum(result.stage_seconds.values()):.1f}s ({times}); bundle: {result.bundle}")


@app.command()
@handles_errors
@with_config_options(CONFIG_OPTIONS, RUNTIME_OPTIONS)
def search(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs")) -> None:
    """KD-guided architecture search (resumable: the same command continues an interrupted search)."""
    from edgekd.pipeline.run import run_search

    run_search(_context(name, runs_dir, overrides))


@app.command()
@handles_errors
def ablate(
    runs: Annotated[list[str], typer.Argument(help="Names of finished searches (e.g. one with --reward-training kd, "
                                                   "one with ce) on the same data and teacher")],
    top: Annotated[int, typer.Option(help="Best students taken from each search")] = 3,
    epochs: Annotated[int | None, typer.Option(
        help=escape("Training epochs [default: the run's distill epochs]"))] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """AKD's "searched by x trained by" table: each search's top students trained with hard labels and with KD."""
    from edgekd.pipeline.ablate import TRAININGS
    from edgekd.pipeline.ablate import ablate as run_ablation
    from edgekd.ui import summary

    if len(runs) < 2:
        raise typer.BadParameter("give at least two runs to compare")
    out = runs_dir / ("ablate-" + "-".join(runs))
    table = run_ablation([runs_dir / r for r in runs], out, top, epochs)
    summary(f"held-out top-1 (mean of top {top}): trained by {' | '.join(TRAININGS)}",
            {row: " | ".join(f"{accs[t] * 100:.2f}%" for t in TRAININGS) for row, accs in table.items()})
    console.print(f"written to {out}/ablation.md and ablation.json")


@app.command()
@handles_errors
@with_config_options(RUNTIME_OPTIONS)
def distill(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs")) -> None:
    """Distill the best searched architecture from the teacher (resumable per epoch, and inside long epochs).

    Data-parallel on several GPUs or processes: torchrun --nproc-per-node N -m edgekd distill --name NAME."""
    from edgekd.pipeline.run import run_distill

    run_distill(_context(name, runs_dir, overrides))


@app.command()
@handles_errors
@with_config_options(CONFIG_OPTIONS, EXPORT_OPTIONS)
def export(
    overrides: dict[str, Any],
    name: Name = "quickstart",
    runs_dir: RunsDir = Path("runs"),
    checkpoint: Annotated[Path | None, typer.Option(
        help="Export this checkpoint instead of the run's distilled student (search-free packaging): an edgekd "
             "checkpoint, or a state_dict with arch.json beside it")] = None,
    sign_key: SignKey = None,
) -> None:
    """Export the student to every format, validate each on the device, package the bundle (its sha256 printed and
    written beside it; signed with --sign-key)."""
    from edgekd.pipeline.run import run_export

    run_export(_context(name, runs_dir, overrides), checkpoint, sign_key)


@app.command()
@handles_errors
@with_config_options(EXPORT_OPTIONS)
def validate(overrides: dict[str, Any], name: Name = "quickstart", runs_dir: RunsDir = Path("runs")) -> None:
    """Validate the run's exported models again (exit 5 if one breaks a limit)."""
    from edgekd.pipeline.run import run_validate

    run_validate(_context(name, runs_dir, overrides))


@app.command()
@handles_errors
def verify(
    bundle: Annotated[Path, typer.Argument(help="NAME-VERSION.tar.gz made by `edgekd export`")],
    device: Annotated[str, typer.Option(help="Device in the registry to run the models on")] = "host-cpu",
    devices_file: Annotated[Path | None, typer.Option(help="devices.yaml to read")] = None,
    max_latency_drift: Annotated[float | None, typer.Option(
        help="Fail if the fp32 model's latency drifts more than this fraction from the bundle's figure "
             "(only on the device the bundle was made on)")] = None,
    report: Annotated[Path | None, typer.Option(help="Write the verification report here as JSON")] = None,
    sha256: Annotated[str | None, typer.Option(
        "--sha256", help="The bundle's sha256 as printed when it was packaged: any other archive is refused")] = None,
    public_key: Annotated[Path | None, typer.Option(
        help="ed25519 public key (PEM) whose signature the bundle must carry")] = None,
    signature: Annotated[Path | None, typer.Option(
        help=escape("The signature file [default: BUNDLE.sig beside the bundle]"))] = None,
    max_accuracy_drop: Annotated[list[str] | None, typer.Option(
        help="FORMAT=POINTS: the CI's largest top-1 drop for FORMAT (repeatable); given, these replace the "
             "bundle's own limits, and formats not named get edgekd's defaults")] = None,
) -> None:
    """Re-check a bundle's checksums and manifest and re-run its models (exit 7 tampered, 5 regressed).

    A CI gate should pass --sha256 or --public-key (nothing inside a bundle can vouch for the bundle) and its
    own --max-accuracy-drop limits."""
    from edgekd.config import write_json
    from edgekd.devices import get_device
    from edgekd.pipeline.verify import verify as verify_bundle
    from edgekd.ui import summary

    result = verify_bundle(bundle, get_device(device, devices_file), max_latency_drift, expected_sha256=sha256,
                           public_key=public_key, signature=signature,
                           max_accuracy_drop=_pairs(max_accuracy_drop) if max_accuracy_drop else None)
    if report:
        write_json(report, result)
    summary(f"verified {result['name']} {result['version']} on {result['device']}", {
        fmt: f"top-1 {m['acc']:.4f} on {result['reference_n']} reference images, agreement "
             f"{m['top1_agreement']:.4f}, max |logit diff| {m['max_abs_logit_diff']:.2e}, {m['latency_ms']:.4f} ms"
        for fmt, m in result["models"].items()
    })
    if not result["authenticated_by"]:
        console.print("[yellow]note[/]: not authenticated (no --sha256 or --public-key): a rewritten bundle with "
                      "consistent checksums would pass too")
    console.print(f"[green]bundle verified[/] (sha256 {result['sha256']}; limits from the "
                  f"{'CI' if result['limits_from'] == 'ci' else 'bundle'})")


@app.command()
@handles_errors
def keygen(
    name: Annotated[Path, typer.Argument(help="Writes NAME.pem (private, mode 600) and NAME.pub.pem (public)")],
) -> None:
    """Make an ed25519 key pair for signing bundles (export --sign-key NAME.pem; verify --public-key NAME.pub.pem)."""
    from edgekd.pipeline.trust import generate_keypair

    private, public = generate_keypair(name)
    console.print(f"private key {private} (keep it secret), public key {public}")


devices_app = typer.Typer(help="The device registry: list it, check a device.", invoke_without_command=True)
app.add_typer(devices_app, name="devices")
DevicesFile = Annotated[Path | None, typer.Option(
    help=escape("devices.yaml to read [default: ./devices.yaml, else the shipped one]"))]


@devices_app.callback()
@handles_errors
def devices(ctx: typer.Context, devices_file: DevicesFile = None) -> None:
    """List the devices of the registry (`edgekd devices check NAME` checks one)."""
    if ctx.invoked_subcommand:
        return
    from edgekd.devices import load_devices, registry_path
    from edgekd.ui import summary

    table = {name: f"{d.spec.kind}: {d.spec.description}" for name, d in load_devices(devices_file).items()}
    summary(f"devices in {registry_path(devices_file)}", table)


@devices_app.command("check")
@handles_errors
def devices_check(name: Annotated[str, typer.Argument(help="Device name")], devices_file: DevicesFile = None) -> None:
    """Say whether a device is reachable and ready (runtime present, binary found, GPU present); exit 4 if not."""
    from edgekd.devices import get_device
    from edgekd.errors import DeviceError
    from edgekd.pipeline.profile import check_device
    from edgekd.ui import summary

    rows = check_device(get_device(name, devices_file))
    summary(f"device {name}", {what: ("ok: " if ok else "NOT READY: ") + detail for what, ok, detail in rows})
    problems = [f"{what}: {detail}" for what, ok, detail in rows if not ok]
    if problems:
        raise DeviceError(f"device {name!r} is not ready: {'; '.join(problems)}")
    console.print(f"[green]device {name} is ready[/]")


@app.command()
@handles_errors
def profile(
    device: Annotated[str, typer.Option(help="Device to measure (a name in devices.yaml)")] = "host-cpu",
    devices_file: DevicesFile = None,
    archs: Annotated[int, typer.Option(help="Random architectures measured to fit the predictors")] = 300,
    heldout: Annotated[int, typer.Option(help="Further architectures the predictors are scored on")] = 100,
    kind: Annotated[str, typer.Option(help="Predictor to choose: flops | lut | learned | blocks")] = "lut",
    blocks: Annotated[bool, typer.Option(help="Also profile the block table in context (kind blocks)")] = True,
    data: Annotated[str, typer.Option(help="Data whose input shape the architectures take")] = "digits",
    resolution: Annotated[int | None, typer.Option(
        help=escape("Input resolution [default: the data's own]"))] = None,
    space: Annotated[str, typer.Option(help="Search space preset")] = "mnas",
    space_width: Annotated[float, typer.Option(help="Channel scale of the search space")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the architecture sample")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for the predictor files and the report")] = Path("predictors"),
) -> None:
    """Measure a device on random architectures (resumable), fit every predictor, report on held-out ones."""
    from edgekd.data import load_data
    from edgekd.devices import get_device
    from edgekd.latency_models.measured import MeasuredLatency
    from edgekd.latency_models.predictors import ALL_KINDS
    from edgekd.pipeline.context import cache_dir
    from edgekd.pipeline.profile import profile_device
    from edgekd.pipeline.space import make_space
    from edgekd.ui import summary

    if kind not in ALL_KINDS or (kind == "blocks" and not blocks):
        raise typer.BadParameter(f"--kind must be one of {ALL_KINDS} (blocks needs --blocks)")
    d = load_data(data, seed, resolution)
    c, res, _ = d.input_shape
    latency = MeasuredLatency(get_device(device, devices_file), cache_dir() / "latency.sqlite")
    report = profile_device(latency, make_space(space, res, c, d.num_classes, space_width), archs, heldout, kind,
                            out, seed, blocks)
    summary(f"{device}: {report['n_heldout']} held-out architectures", {
        k: f"RMSE {r['rmse_ms']:.4f} ms, MAPE {r['mape']:.1%}, within ±10% {r['within10']:.1%}, Kendall "
           f"{r['kendall']:.3f}, {r['predict_s_per_arch'] * 1e3:.3f} ms per prediction ({r['speedup']:.0f}x cheaper)"
        for k, r in report["predictors"].items()
    })
    console.print(f"saved {report['chosen_file']}; use it with a devices.yaml entry `kind: predictor` and "
                  f"`file: {report['chosen_file']}`")
