"""A run's report: one self-contained HTML page of what its files say, or two runs side by side.

Read from a run's folder through each stage's own reader (config, search records, student, validation, bundle),
so it can be written for a finished run, a run in progress (missing stages are named as such) or a run copied
from elsewhere.
Plots are matplotlib PNGs inlined as data URIs and the style sheet is inline: the page needs no network.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.core.config import RunConfig, config_path, read_json
from edgekd.core.errors import ConfigError, RunStateError
from edgekd.pipeline.distill import load_student, read_curves
from edgekd.pipeline.search.records import read_records, read_result, read_reward
from edgekd.pipeline.validate import read_validation
from edgekd.pipeline.verify import read_manifest

SECTIONS = ("Summary", "Search", "Latency model", "Distillation", "Validation", "Bundle")
REDUCED_PRECISION = ("-int8", "-fp16")
BAND = 0.10
"""The predicted-vs-measured plot's error band: ±10%."""
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} tr.pick td{background:#fff3c4;font-weight:600}
.runs{display:grid;gap:1.5em} .runs>div{min-width:0;overflow-x:auto} img{max-width:100%}
.missing{color:#a00} .note{color:#555;font-size:13px} .pass{color:#070} .fail{color:#a00;font-weight:600}
"""


class RunFiles:
    """What one run's stages left in its folder, read once through each stage's own reader (None or empty where
    a stage has not run yet)."""

    def __init__(self, run_dir: Path) -> None:
        if not config_path(run_dir).is_file():
            raise RunStateError(f"{run_dir} is not a run folder (no config.json); give a run name under --runs-dir")
        self.dir, self.name = run_dir, run_dir.name
        self.config = RunConfig.model_validate(read_json(config_path(run_dir)))
        search, student = run_dir / "search", run_dir / "student"
        self.trials = read_records(search) if (search / "trials.json").is_file() else []
        self.result = read_result(search) if (search / "best.json").is_file() else None
        self.reward = read_reward(search) if (search / "reward.json").is_file() else None
        self.student = load_student(student).metrics if (student / "student.pt").is_file() else None
        self.curves = read_curves(student) if (student / "curves.json").is_file() else []
        validation = run_dir / "validation"
        self.validation = read_validation(validation) if (validation / "report.json").is_file() else None
        folders = sorted(p.parent for p in (run_dir / "bundle").glob("*/manifest.json"))
        self.manifest = read_manifest(folders[-1]) if folders else None
        self.archives = sorted((run_dir / "bundle").glob("*.tar.gz"))

    @property
    def complete(self) -> list[dict]:
        return [t for t in self.trials if t.get("state") == "complete"]

    @property
    def teacher_acc(self) -> float | None:
        if self.validation:
            return self.validation["teacher"]["acc"]
        return self.student["teacher_val_acc"] if self.student else None


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("-" if v is None else str(v))

    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        f'<tr class="{(classes or [""] * len(rows))[r]}">'
        + "".join(f'<td class="{"l" if i == 0 else ""}">{cell(v)}</td>' for i, v in enumerate(row)) + "</tr>"
        for r, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _missing(what: str) -> str:
    return f'<p class="missing">{html.escape(what)}</p>'


def summary(run: RunFiles) -> str:
    cfg, v, s = run.config, run.validation or {}, run.student or {}
    onnx = (v.get("formats") or {}).get("onnx", {})
    rows = [
        ["data", cfg.data], ["device", cfg.device],
        ["space / strategy / evaluator", f"{cfg.search.space} / {cfg.search.strategy} / {cfg.search.evaluator}"],
        ["trials (complete / all)", f"{len(run.complete)} / {len(run.trials)}"],
        ["teacher held-out top-1", run.teacher_acc],
        ["student held-out top-1", s.get("val_acc")],
        ["student MMACs", s.get("mmacs")],
        ["student latency ms (onnx, validated)", onnx.get("latency_ms")],
        ["teacher latency ms", (v.get("teacher") or {}).get("latency_ms")],
        ["speed-up vs teacher", onnx.get("speedup_vs_teacher")],
        ["validation", None if not v else ("passed" if v.get("passed") else "FAILED")],
    ]
    return _table(["", run.name], rows)


def search(run: RunFiles) -> str:
    import matplotlib.pyplot as plt

    if not run.trials:
        return _missing("no search records yet (search/trials.json)")
    done = run.complete
    best = run.result.best if run.result else None
    pick = best["trial"] if best else None
    parts = []
    if run.reward:
        parts.append(f'<p class="note">reward target {run.reward.target:.4g} ({run.reward.metric}, '
                     f'{run.reward.constraint} constraint); the pick (trial {pick}) is marked.</p>')
    if done:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        for ax, key, label in zip(axes, ("reward", "acc", "latency_ms"), ("reward", "mini-val accuracy",
                                                                          "latency ms (model)"), strict=True):
            xs, ys = [t["trial"] for t in done], [t.get(key) for t in done]
            ax.plot(xs, ys, "o", ms=4, color="tab:blue", label="trial")
            if key == "reward":
                so_far = [max(ys[: i + 1]) for i in range(len(ys))]
                ax.step(xs, so_far, where="post", color="tab:green", label="best so far")
            ax.plot([t["trial"] for t in done if t["trial"] == pick], [t.get(key) for t in done if t["trial"] == pick],
                    "*", ms=14, color="tab:red", label="pick")
            ax.set_xlabel("trial")
            ax.set_title(label)
        axes[0].legend(fontsize=8)
        parts.append(_png(fig))
        fig, ax = plt.subplots(figsize=(6, 4))
        metric = "latency_ms" if all(t.get("latency_ms") is not None for t in done) else "mmacs"
        ax.plot([t[metric] for t in done], [t["acc"] for t in done], "o", ms=4, alpha=0.6, label="trial")
        front = sorted(run.result.pareto if run.result else [], key=lambda t: t[metric])
        ax.step([t[metric] for t in front], [t["acc"] for t in front], where="post", color="tab:orange",
                label="Pareto front")
        if best:
            ax.plot([best[metric]], [best["acc"]], "*", ms=16, color="tab:red", label="pick")
        ax.set_xlabel(metric.replace("_", " "))
        ax.set_ylabel("mini-val accuracy")
        ax.legend(fontsize=8)
        parts.append(_png(fig))
    rows = [[t["trial"], t.get("state"), t.get("arch_id"), t.get("acc"), t.get("latency_ms"),
             _interval(t), t.get("mmacs"), t.get("reward"), t.get("epochs")] for t in run.trials]
    parts.append(_table(["trial", "state", "arch", "acc", "latency ms", "95% interval", "MMACs", "reward", "epochs"],
                        rows, ["pick" if t["trial"] == pick else "" for t in run.trials]))
    return "".join(parts)


def _interval(t: dict) -> str | None:
    if t.get("latency_low_ms") is None:
        return None
    return f"{t['latency_low_ms']:.4g}-{t['latency_high_ms']:.4g}"


def latency(run: RunFiles) -> str:
    import matplotlib.pyplot as plt

    v = run.validation
    measured = [t for t in run.complete if t.get("latency_low_ms") is not None]
    if not v and not measured:
        return _missing("no latency figures yet (search trials or validation/report.json)")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    points = []
    if measured:
        xs = [t["latency_ms"] for t in measured]
        ax.errorbar(xs, xs, yerr=[[t["latency_ms"] - t["latency_low_ms"] for t in measured],
                                  [t["latency_high_ms"] - t["latency_ms"] for t in measured]],
                    fmt="o", ms=4, alpha=0.7, label="candidates (measured, 95% interval)")
        points += xs
    rows = []
    if v and v.get("predicted_latency_ms") is not None:
        for fmt, f in v["formats"].items():
            if fmt.endswith(REDUCED_PRECISION):
                continue  # the latency model times the fp32 model
            ax.plot([v["predicted_latency_ms"]], [f["latency_ms"]], "*", ms=14, label=f"student, {fmt}")
            points += [v["predicted_latency_ms"], f["latency_ms"]]
            error = f["latency_ms"] / v["predicted_latency_ms"] - 1
            rows.append([fmt, v["predicted_latency_ms"], f["latency_ms"], f"{error:+.1%}"])
    lo, hi = min(points) * 0.8, max(points) * 1.2
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="measured = model")
    ax.fill_between([lo, hi], [lo * (1 - BAND), hi * (1 - BAND)], [lo * (1 + BAND), hi * (1 + BAND)],
                    color="grey", alpha=0.2, label=f"±{BAND:.0%}")
    ax.set_xlabel("latency model's figure at search time (ms)")
    ax.set_ylabel("measured on the device (ms)")
    ax.legend(fontsize=8)
    note = ('<p class="note">A measured device\'s candidates lie on the diagonal, with the interval of their '
            'measurement; the student is timed again by validation on its exported fp32 models.</p>')
    table = _table(["format", "model's figure ms", "validated ms", "error"], rows) if rows else ""
    return note + _png(fig) + table


def distillation(run: RunFiles) -> str:
    import matplotlib.pyplot as plt

    if not run.curves:
        return _missing("no distillation curves yet (student/curves.json)")
    epochs = [c.epoch for c in run.curves]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.5))
    a.plot(epochs, [c.eval_acc for c in run.curves], "o-", label="student, held-out")
    a.plot(epochs, [c.metrics.get("acc") for c in run.curves], "--", label="student, training batches")
    if run.teacher_acc is not None:
        a.axhline(run.teacher_acc, color="tab:red", label="teacher, held-out")
    a.set_xlabel("epoch")
    a.set_ylabel("top-1")
    a.legend(fontsize=8)
    b.plot(epochs, [c.loss for c in run.curves], "o-")
    b.set_xlabel("epoch")
    b.set_ylabel("training loss")
    s = run.student or {}
    kd = s.get("kd") or {}
    note = (f'<p class="note">{s.get("epochs")} epochs, KD tau {kd.get("tau")} / alpha {kd.get("alpha")}; final '
            f'held-out top-1 {s.get("val_acc", float("nan")):.4f} against the teacher\'s '
            f'{s.get("teacher_val_acc", float("nan")):.4f}</p>') if s else ""
    return note + _png(fig)


def validation(run: RunFiles) -> str:
    v = run.validation
    if not v:
        return _missing("not validated yet (validation/report.json)")
    rows, classes = [], []
    for fmt, f in v["formats"].items():
        rows.append([fmt, f.get("runtime"), f["acc"], f.get("acc_drop_points"), f.get("top1_agreement"),
                     f.get("max_abs_logit_diff"), f.get("latency_ms"),
                     f"{f.get('latency_p10_ms', 0):.4g}-{f.get('latency_p90_ms', 0):.4g}",
                     f.get("speedup_vs_teacher"), f.get("size_bytes"),
                     "passed" if f.get("passed") else "FAILED: " + "; ".join(f.get("failures") or []),
                     f.get("dominated_by")])
        classes.append("" if f.get("passed") else "fail")
    header = ["format", "runtime", "top-1", "drop pts", "agreement", "max |logit diff|", "latency ms",
              "p10-p90 ms", "x vs teacher", "bytes", "result", "dominated by"]
    verdict = '<p class="pass">passed</p>' if v.get("passed") else '<p class="fail">FAILED</p>'
    return (verdict + f'<p class="note">{v.get("n_val")} held-out images on {html.escape(str(v.get("device")))}; '
            f'PyTorch top-1 {v["pytorch"]["acc"]:.4f}</p>' + _table(header, rows, classes))


def bundle(run: RunFiles) -> str:
    m = run.manifest
    if not m:
        return _missing("not packaged yet (bundle/)")
    rows = [["name / version", f"{m.name} {m.version}"], ["created", m.created], ["arch id", m.arch_id],
            ["device", m.device.get("fingerprint")]]
    for archive in run.archives:
        digest = archive.with_name(archive.name + ".sha256")
        sig = archive.with_name(archive.name + ".sig")
        rows.append([archive.name, digest.read_text().split()[0] if digest.is_file() else "no .sha256"])
        rows.append([f"{archive.name} signature", "signed (.sig)" if sig.is_file() else "unsigned"])
    rows += [[f"versions: {k}", v] for k, v in m.versions.items()]
    files = [[name, digest] for name, digest in m.files.items()]
    return _table(["bundle", ""], rows) + _table(["file", "sha256"], files)


RENDERERS: dict[str, Callable[[RunFiles], str]] = {
    "Summary": summary, "Search": search, "Latency model": latency, "Distillation": distillation,
    "Validation": validation, "Bundle": bundle}


def render(run_dirs: list[Path]) -> str:
    """The report page of one run, or of several side by side (one column each)."""
    import matplotlib

    matplotlib.use("Agg")
    runs = [RunFiles(d) for d in run_dirs]
    title = " vs ".join(r.name for r in runs)
    columns = f"grid-template-columns:repeat({len(runs)},1fr)"
    body = [f"<h1>edgekd report: {html.escape(title)}</h1>",
            f'<p class="note">runs: {", ".join(html.escape(str(r.dir)) for r in runs)}. The Optuna study of a run '
            "opens in optuna-dashboard: <code>optuna-dashboard sqlite:///RUN/search/study.db</code></p>"]
    for section in SECTIONS:
        cells = "".join(f'<div><h3>{html.escape(r.name)}</h3>{RENDERERS[section](r)}</div>' if len(runs) > 1
                        else f"<div>{RENDERERS[section](r)}</div>" for r in runs)
        body.append(f'<section id="{section.lower().replace(" ", "-")}"><h2>{section}</h2>'
                    f'<div class="runs" style="{columns}">{cells}</div></section>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head><body>{"".join(body)}</body></html>')


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write the report of ``run_dirs`` (default place: RUN/report.html, or report-A-vs-B.html beside the runs)."""
    if out is None:
        out = (run_dirs[0] / "report.html" if len(run_dirs) == 1
               else run_dirs[0].parent / f"report-{'-vs-'.join(d.name for d in run_dirs)}.html")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder: give the page a file name, such as {out / 'report.html'}")
    page = render(run_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
