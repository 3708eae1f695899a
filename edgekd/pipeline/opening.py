"""Opening a run: its names checked, its data, device, latency model and training runtime loaded."""

from __future__ import annotations

from pathlib import Path

from edgekd.core.config import AUTO_FORMATS, RunConfig, config_path, read_json, write_json
from edgekd.core.devices import get_device
from edgekd.core.errors import DataError
from edgekd.core.ui import console
from edgekd.data import Data, load_data
from edgekd.exporters import get_format
from edgekd.latency_models import make_latency_model
from edgekd.pipeline.context import RunContext, latency_cache
from edgekd.pipeline.search.evaluation import evaluator_kind
from edgekd.pipeline.search.storage import check_storage
from edgekd.spaces import space_preset
from edgekd.strategies import strategy_factory
from edgekd.train import (
    Runtime,
    distributed,
    resolve_device,
    set_threads,
)
from edgekd.train.devices import usable_cores


def check_names(cfg: RunConfig) -> None:
    """ConfigError for an unknown search space, strategy, evaluator or export format (to export or to limit), or
    an unusable study storage, before any stage spends minutes on a teacher."""
    space_preset(cfg.search.space)
    strategy_factory(cfg.search.strategy)
    evaluator_kind(cfg.search)
    for name in (*cfg.export.formats, *cfg.export.max_accuracy_drop):
        if name != AUTO_FORMATS:
            get_format(name)
    if cfg.search.storage:
        check_storage(cfg.search.storage)


def training_runtime(cfg: RunConfig, data: Data, worker: int | None = None) -> Runtime:
    """The runtime ``cfg`` asks for: the training device, the torchrun process group when launched by torchrun,
    torch's CPU threads and the loader workers for ``data``. ``worker`` (a ``--jobs`` search process) gets its
    share of the CPU threads and, on a host with several GPUs, a GPU of its own."""
    r = cfg.runtime
    torchrun = distributed.launched_by_torchrun()
    device = resolve_device(r.train_device, r.amp, distributed.local_rank() if torchrun else worker)
    dist = distributed.setup(device.kind)
    console.quiet = console.quiet or not dist.main
    set_threads(r.threads, share=cfg.search.jobs if worker is not None else dist.local_world)
    workers = r.workers if r.workers is not None else 0 if data.source.in_memory else min(4, usable_cores())
    return Runtime(device, dist, workers, cfg.augment, r.checkpoint_steps, r.checkpoint_minutes)


def check_same_data(run_dir: Path, data: Data) -> None:
    """Record what the run's data is (data.json) on first opening, and refuse to go on with other images: the
    teacher's cached logits and every trained stage are addressed by dataset index."""
    identity = {"images": len(data.labels), "classes": data.classes, "source": data.source_note}
    path = run_dir / "data.json"
    if not path.is_file():
        write_json(path, identity)
        return
    before = read_json(path)
    if before != identity:
        changed = [k for k in identity if before.get(k) != identity[k]]
        raise DataError(f"the data of run {run_dir.name} changed since it started ({', '.join(changed)}: "
                        f"{before.get('images')} images then, {identity['images']} now; {before.get('source')!r} "
                        f"then, {identity['source']!r} now); restore the data (for glyphs: the same fonts) or "
                        "start a new run (--name)")


def open_run(cfg: RunConfig, runs_root: Path, worker: int | None = None) -> RunContext:
    """Check ``cfg``'s names and load its data, device and training runtime (``worker``: which process of a
    ``--jobs`` search this is); the teacher is prepared when a stage first needs it."""
    check_names(cfg)
    run_dir = runs_root / cfg.name
    if not config_path(run_dir).is_file():  # the Python API skips resolve_config; a run always records its config
        write_json(config_path(run_dir), cfg.public_dump())
    device = get_device(cfg.device, Path(cfg.devices_file) if cfg.devices_file else None)
    data = load_data(cfg.data, cfg.seed, cfg.resolution, cfg.mini_val_fraction, cfg.val_fraction)
    check_same_data(run_dir, data)
    latency = make_latency_model(device, latency_cache())
    return RunContext(cfg, run_dir, data, device, latency, training_runtime(cfg, data, worker))
