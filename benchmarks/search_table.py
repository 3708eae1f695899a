"""Build the tabular search benchmarks that `benchmarks/search_efficiency.py` runs strategies on.

`--table digits` (the default): every architecture of a reduced `mnas` space (the quick-start space, digits at
16x16, width 0.25, with all but five decisions fixed: 3^5 = 243 architectures). `--table glyphs`: the same
space on the harder `glyphs` task (47 characters rendered from the installed fonts, 2 renderings each, at
16x16, mini-val 30% of train; width 0.5, KD proxy at learning rate 0.01), four decisions free (s1_kernel,
s3_layers, s3_width, s5_op: 3^4 = 81 architectures); add seeds with `--seed 1`, `--seed 2`, ... (about 55 minutes
each on this 2-core machine).
Each architecture is measured on this host's CPU (the shipped `host-cpu` device) and trained with the KD proxy
(AKD: distillation from the task's teacher on mini-train, AdamW, warm-up then cosine) for --epochs, with its
mini-val accuracy recorded after every epoch. A table is written once to benchmarks/data/<table>.json; an
interrupted build resumes from benchmarks/data/<table>.partial.jsonl. `--seed S` (S > 0) trains every
architecture of an existing table again with training seed S (same data, teacher and latency) and adds the
curves to it; a row's `acc` is then the mean curve over its seeds (`acc_by_seed`), which averages out the
training noise that a single proxy run carries. Building over an existing table (after a change to the KD
proxy, say) retrains every curve and keeps its measured latencies.

    python benchmarks/search_table.py [--table digits|glyphs] [--epochs E] [--shard K/N] [--seed S]
    # digits: about 40 minutes on one core; glyphs: about 55 minutes per seed on both cores
    # (glyphs trains 20 epochs: after 8, two seeds ranked its rows at Kendall 0.06)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
FIXED_LAYERS = {f"s{i}_layers": -1 for i in range(7)}
FIXED = FIXED_LAYERS | {f"s{i}_op": "mbconv_e1" for i in range(7)} | {f"s{i}_kernel": 3 for i in range(7)} | {
    f"s{i}_se": 0.0 for i in range(7)} | {f"s{i}_width": 0.75 for i in range(7)} | {
    f"s{i}_skip": "identity" for i in range(7)}
OPS = ("mbconv_e1", "mbconv_e3", "mbconv_e6")


@dataclass(frozen=True)
class Table:
    """One tabular benchmark: its task and which decisions of the quick-start `mnas` space stay free."""

    name: str
    data: str
    classes: int
    free: tuple[str, ...]
    """The decisions left free; each keeps three of its values (FREE_VALUES), everything else is as in FIXED."""
    epochs: int
    mini_val_fraction: float = 0.2
    width: float = 0.25
    lr: float = 3e-3
    description: str = ""

    @property
    def path(self) -> Path:
        return DATA / f"{self.name}.json"

    def partial(self, seed: int) -> Path:
        return DATA / (f"{self.name}.partial.jsonl" if seed == 0 else f"{self.name}.partial.seed{seed}.jsonl")

    def space(self):
        """The reduced space: the quick-start `mnas` space with FIXED applied to every decision but the free ones."""
        from edgekd.spaces import RestrictedSpace, make_space

        base = make_space("mnas", 16, 1, self.classes, width=self.width)
        values = {k: OPS for k in self.free if k.endswith("_op")}
        return RestrictedSpace(base, {k: v for k, v in FIXED.items() if k not in self.free}, values)


TABLES = {t.name: t for t in (
    Table("search_table", "digits", 10, ("s1_kernel", "s2_op", "s3_layers", "s3_width", "s5_op"), 9,
          description="digits 16x16, mini-train 1149 / mini-val 288 images"),
    # s1_kernel rather than s2_op: a stage-2 expansion of 3 or 6 made a training 3-8 times slower, too slow for
    # several seeds of every row on this machine
    Table("search_table_glyphs", "glyphs:2", 47, ("s1_kernel", "s3_layers", "s3_width", "s5_op"), 20, 0.3, 0.5, 1e-2,
          description="glyphs:2 16x16 (47 classes; the fonts in `source`), mini-val 30% of train"),
)}
TABLE_OF = {"digits": TABLES["search_table"], "glyphs": TABLES["search_table_glyphs"]}
"""--table NAME: the table of each task."""


def _done(table: Table, seed: int) -> dict[str, dict]:
    partial = table.partial(seed)
    rows = [json.loads(line) for line in partial.open()] if partial.is_file() else []
    return {row["arch_id"]: row for row in rows}


def _measured(table: Table, specs) -> list[float] | None:
    """The existing table's latencies for ``specs``, None when there is no table or it lacks one of them."""
    if not table.path.is_file():
        return None
    latency = {row["arch_id"]: row["latency_ms"] for row in json.loads(table.path.read_text())["rows"]}
    return [latency[s.id] for s in specs] if all(s.id in latency for s in specs) else None


def _add_seed(table: Table, seed: int, done: dict[str, dict]) -> None:
    """Add seed ``seed``'s curves to the table; each row's ``acc`` becomes the mean over its seeds."""
    content = json.loads(table.path.read_text())
    for row in content["rows"]:
        by_seed = row.setdefault("acc_by_seed", {"0": row["acc"]})
        by_seed[str(seed)] = done[row["arch_id"]]["acc"]
        row["acc"] = [round(sum(accs) / len(accs), 5) for accs in zip(*by_seed.values(), strict=True)]
    content["training_seeds"] = sorted(int(s) for s in content["rows"][0]["acc_by_seed"])
    table.path.write_text(json.dumps(content, indent=1) + "\n")
    table.partial(seed).unlink()
    print(f"added training seed {seed} to {table.path}")


def build(table: Table, epochs: int, shard: int = 0, shards: int = 1, seed: int = 0) -> None:
    from edgekd.core.config import RunConfig, RuntimeConfig, SearchConfig, TrainConfig
    from edgekd.core.ui import progress
    from edgekd.evaluators.proxy import KDProxyEvaluator
    from edgekd.pipeline.opening import open_run

    proxy = TrainConfig(epochs=epochs, batch_size=64, lr=table.lr)
    # one thread: --shard processes run side by side (two threads each on 2 cores spin in OpenMP's barriers)
    cfg = RunConfig(name=table.name.replace("_", "-"), data=table.data, resolution=16,
                    mini_val_fraction=table.mini_val_fraction, search=SearchConfig(proxy=proxy),
                    runtime=RuntimeConfig(threads=1))
    ctx = open_run(cfg, Path(tempfile.gettempdir()) / "edgekd-search-table")
    space = table.space()
    members = space.members()
    specs = [space.decode(c) for c in members]
    # measured once, first, while nothing else runs on the host; a rebuild or a further seed keeps them
    latencies = [None] * len(specs) if seed else _measured(table, specs) or ctx.latency.latency_many(specs)
    evaluator = KDProxyEvaluator(ctx.data, ctx.teacher.logits, proxy, cfg.kd, seed)
    mine = [i for i in range(len(specs)) if i % shards == shard]
    done = _done(table, seed)
    with progress("KD proxy training", len(mine), completed=sum(specs[i].id in done for i in mine)) as bar, \
            table.partial(seed).open("a") as log:
        for i in mine:
            choices, spec, ms = members[i], specs[i], latencies[i]
            if spec.id in done:
                continue
            curve: list[float] = []
            evaluator.evaluate(spec, report=lambda _epoch, acc, c=curve: c.append(round(acc, 5)))
            row = {"arch_id": spec.id, "choices": choices, "latency_ms": ms, "mmacs": None, "acc": curve}
            log.write(json.dumps(row) + "\n")
            log.flush()
            done[spec.id] = row
            bar()
    done = _done(table, seed)
    if len(done) < len(specs):
        print(f"shard {shard}/{shards} done; {len(specs) - len(done)} architectures left to other shards")
        return
    if seed:
        _add_seed(table, seed, done)
        return
    from edgekd.core.arch import build as build_model
    from edgekd.latency_models.flops import count_macs_params

    rows = []
    for spec, ms in zip(specs, latencies, strict=True):
        row = done[spec.id] | {"latency_ms": ms}  # every row timed in this one session (a resumed row may not be)
        row["mmacs"] = count_macs_params(build_model(spec), spec.input_shape)[0]
        rows.append(row)
    table.path.write_text(json.dumps({
        "space": space.describe(), "data": table.description, "source": ctx.data.source_note,
        "teacher": f"the task's default teacher, trained (held-out acc {ctx.teacher.val_acc:.4f})",
        "proxy": proxy.model_dump(), "kd": cfg.kd.model_dump(), "device": ctx.device.name,
        "teacher_latency_ms": ctx.teacher_latency_ms(), "rows": rows,
    }, indent=1) + "\n")
    table.partial(0).unlink()
    print(f"wrote {table.path}: {len(rows)} architectures x {epochs} epochs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=sorted(TABLE_OF), default="digits", help="the task")
    parser.add_argument("--epochs", type=int, help="KD proxy epochs [default: 9 on digits, 20 on glyphs]")
    parser.add_argument("--seed", type=int, default=0, help="training seed; > 0 adds its curves to the table")
    parser.add_argument("--shard", default="0/1", help="K/N: train every N-th architecture from the K-th (N "
                        "processes share the build; the last to finish writes the table)")
    args = parser.parse_args()
    try:
        shard, shards = map(int, args.shard.split("/"))
    except ValueError:
        parser.error(f"--shard takes K/N (e.g. 0/2), got {args.shard!r}")
    if not 0 <= shard < shards:
        parser.error(f"--shard K/N needs 0 <= K < N, got {args.shard!r}")
    chosen = TABLE_OF[args.table]
    build(chosen, args.epochs or chosen.epochs, shard, shards, args.seed)
