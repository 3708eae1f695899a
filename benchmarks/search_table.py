"""Build the tabular search benchmark that `benchmarks/search_efficiency.py` runs strategies on.

Every architecture of a reduced `mnas` space (the quick-start space, digits at 16x16, width 0.25, with all but
five decisions fixed: 3^5 = 243 architectures) is measured on this host's CPU (the shipped `host-cpu` device)
and trained with the KD proxy (AKD: distillation from the quick-start teacher on mini-train, AdamW, warm-up then
cosine) for --epochs, with its mini-val accuracy recorded after every epoch. The table is written once to
benchmarks/data/search_table.json; an interrupted build resumes from benchmarks/data/search_table.partial.jsonl.

    python benchmarks/search_table.py [--epochs 9] [--shard K/N]      # about 40 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

DATA = Path(__file__).parent / "data"
TABLE = DATA / "search_table.json"
PARTIAL = DATA / "search_table.partial.jsonl"
FIXED_LAYERS = {f"s{i}_layers": -1 for i in range(7)}
FIXED = FIXED_LAYERS | {f"s{i}_op": "mbconv_e1" for i in range(7)} | {f"s{i}_kernel": 3 for i in range(7)} | {
    f"s{i}_se": 0.0 for i in range(7)} | {f"s{i}_width": 0.75 for i in range(7)} | {
    f"s{i}_skip": "identity" for i in range(7)}
FREE = ("s1_kernel", "s2_op", "s3_layers", "s3_width", "s5_op")
"""The decisions left free; each keeps three of its values (below), everything else is fixed as in FIXED."""
FREE_VALUES = {"s2_op": ("mbconv_e1", "mbconv_e3", "mbconv_e6"), "s5_op": ("mbconv_e1", "mbconv_e3", "mbconv_e6")}


def table_space():
    """The reduced space: the quick-start `mnas` space with FIXED applied to every decision but FREE."""
    from edgekd.pipeline.space import RestrictedSpace, make_space

    base = make_space("mnas", 16, 1, 10, width=0.25)
    return RestrictedSpace(base, {k: v for k, v in FIXED.items() if k not in FREE}, FREE_VALUES)


def _done() -> dict[str, dict]:
    rows = [json.loads(line) for line in PARTIAL.open()] if PARTIAL.is_file() else []
    return {row["arch_id"]: row for row in rows}


def build(epochs: int, shard: int = 0, shards: int = 1) -> None:
    import torch

    from edgekd.config import RunConfig, SearchConfig, TrainConfig
    from edgekd.pipeline.context import open_run
    from edgekd.pipeline.evaluator import KDProxyEvaluator
    from edgekd.ui import progress

    torch.set_num_threads(1)
    proxy = TrainConfig(epochs=epochs, batch_size=64)
    cfg = RunConfig(name="search-table", search=SearchConfig(proxy=proxy))
    ctx = open_run(cfg, Path(tempfile.gettempdir()) / "edgekd-search-table")
    space = table_space()
    members = space.members()
    specs = [space.decode(c) for c in members]
    latencies = ctx.latency.latency_many(specs)  # first, while nothing else runs on the host
    evaluator = KDProxyEvaluator(ctx.data, ctx.teacher.logits, proxy, cfg.kd, cfg.seed)
    mine = [i for i in range(len(specs)) if i % shards == shard]
    done = _done()
    with progress("KD proxy training", len(mine), completed=sum(specs[i].id in done for i in mine)) as bar, \
            PARTIAL.open("a") as log:
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
    done = _done()
    if len(done) < len(specs):
        print(f"shard {shard}/{shards} done; {len(specs) - len(done)} architectures left to other shards")
        return
    from edgekd.latency_models.flops import count_macs_params
    from edgekd.pipeline.arch import build as build_model

    rows = []
    for spec in specs:
        row = done[spec.id]
        row["mmacs"] = count_macs_params(build_model(spec), spec.input_shape)[0]
        rows.append(row)
    TABLE.write_text(json.dumps({
        "space": space.describe(),
        "data": "digits 16x16, mini-train 1149 / mini-val 288 images", "teacher": "quick-start teacher (trained)",
        "proxy": proxy.model_dump(), "kd": cfg.kd.model_dump(), "device": ctx.device.name,
        "teacher_latency_ms": ctx.teacher_latency_ms(), "rows": rows,
    }, indent=1) + "\n")
    PARTIAL.unlink()
    print(f"wrote {TABLE}: {len(rows)} architectures x {epochs} epochs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--shard", default="0/1", help="K/N: train every N-th architecture from the K-th (N "
                        "processes share the build; the last to finish writes the table)")
    args = parser.parse_args()
    shard, shards = map(int, args.shard.split("/"))
    build(args.epochs, shard, shards)
