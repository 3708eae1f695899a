"""`edgekd report`: a finished run's page, a run in progress, two runs side by side, and the page in Chromium."""

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.pipeline.report import SECTIONS
from edgekd.pipeline.run import run_all

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, make_tiny_config):
    """Two finished tiny runs (a and b, 3 and 2 trials)."""
    root = tmp_path_factory.mktemp("reported")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKD_CACHE", str(root / "cache"))
        for name, trials in (("a", 3), ("b", 2)):
            cfg = make_tiny_config(name=name, search={"trials": trials, "proxy": {"epochs": 1}, "space_width": 0.25},
                                   export={"formats": ["onnx"]})
            run_all(cfg, root / "runs")
    return root / "runs"


class Page(HTMLParser):
    """The page's section ids, table cells, image sources and any reference to another resource."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections, self.cells, self.images, self.external = [], [], [], []
        self._in_cell = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")
        if tag == "img":
            self.images.append(a["src"])
        for key in ("src", "href"):
            if key in a and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def test_run_writes_a_self_contained_report_with_every_trial(runs):
    page_path = runs / "a" / "report.html"
    assert page_path.is_file()  # written by `edgekd run` itself
    text = page_path.read_text()
    page = Page(text)
    assert page.sections == [s.lower().replace(" ", "-") for s in SECTIONS]
    assert not page.external and "http" not in re.sub(r"data:image/png;base64,[^\"]+", "", text)
    assert len(page.images) >= 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    trials = json.loads((runs / "a/search/trials.json").read_text())
    assert len(trials) == 3
    for t in trials:
        assert t["arch_id"] in page.cells
    metrics = json.loads((runs / "a/student/metrics.json").read_text())
    assert f"{metrics['val_acc']:.4g}" in page.cells
    validation = json.loads((runs / "a/validation/report.json").read_text())
    assert f"{validation['formats']['onnx']['latency_ms']:.4g}" in page.cells
    digest = next((runs / "a/bundle").glob("*.tar.gz.sha256")).read_text().split()[0]
    manifest = json.loads(next((runs / "a/bundle").glob("*/manifest.json")).read_text())
    assert digest in page.cells and manifest["files"]["model.onnx"] in page.cells


def test_report_of_a_run_in_progress_names_what_is_missing(runs, tmp_path):
    partial = tmp_path / "runs" / "half"
    shutil.copytree(runs / "a", partial)
    for stage in ("student", "validation", "bundle"):
        shutil.rmtree(partial / stage)
    result = runner.invoke(app, ["report", "half", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    text = (partial / "report.html").read_text()
    assert "no distillation curves yet" in text and "not validated yet" in text and "not packaged yet" in text
    page = Page(text)
    assert page.sections == [s.lower().replace(" ", "-") for s in SECTIONS]
    # the search's two plots and the candidates' measured latencies; no curves without a student
    assert len(page.images) == 3
    result = runner.invoke(app, ["report", "nothing-here", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code != 0 and "not a run folder" in result.output


def test_two_runs_side_by_side(runs, tmp_path):
    out = tmp_path / "both.html"
    result = runner.invoke(app, ["report", "a", "b", "--runs-dir", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = Page(out.read_text())
    for name in ("a", "b"):
        for t in json.loads((runs / name / "search/trials.json").read_text()):
            assert t["arch_id"] in page.cells
    assert out.read_text().count("grid-template-columns:repeat(2,1fr)") == len(SECTIONS)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_the_report_renders_in_headless_chromium(runs, tmp_path):
    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}",
           (runs / "a" / "report.html").as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1200)
    # a page, not a blank: dark text and plot lines on a light background, over the whole height
    assert (pixels < 100).mean() > 0.005 and (pixels > 200).mean() > 0.5
    assert (pixels[1200:] < 100).mean() > 0.002
