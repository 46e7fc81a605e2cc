"""summary.html opened in a real headless browser (Debian's chromium, scripts/setup.d/
47-browser.sh): the stage table, the gates, and one chart per gated metric with one point per
run and the baseline, on a page with no script and nothing fetched from elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import SH_PIPELINE, run_cli, write

CHROMIUM = shutil.which("chromium")
GATED = SH_PIPELINE + "    gates:\n      rmse: {max: 0.8}\n    baseline: baseline.json\n"


class Dom(HTMLParser):
    """The elements of a page, each with its ancestors' ids."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.elements: list[tuple[str, dict[str, str | None], list[str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.elements.append((tag, values, list(self.stack)))
        if tag not in self.VOID:
            self.stack.append(values.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def inside(self, tag: str, ancestor: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs, ids in self.elements if t == tag and ancestor in ids]


def browser_dom(page: Path, profile: Path) -> Dom:
    """The page as chromium parsed it (--dump-dom serializes the live DOM)."""
    assert CHROMIUM, "no chromium: run scripts/setup.d/47-browser.sh"
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    dom = Dom()
    dom.feed(proc.stdout)
    return dom


@pytest.mark.parametrize("runs", [1, 3])
def test_the_chart_has_one_point_per_run(sh_project: Path, tmp_path: Path, runs: int) -> None:
    pipeline = write(sh_project / "pipeline.yaml", GATED)
    write(sh_project / "baseline.json", '{"rmse": 0.6}')
    for value in ("0.5", "0.55", "0.9")[:runs]:
        run_cli("stage", "train", str(pipeline), "-q", env={"FAKE_TRAINER_RMSE": value})
    page = sh_project / ".legion" / "reports" / "summary.html"
    dom = browser_dom(page, tmp_path / "chromium")
    assert dom.inside("use", "runs-rmse") and len(dom.inside("use", "runs-rmse")) == runs
    assert len(dom.inside("path", "baseline-rmse")) == 1  # the baseline line
    assert dom.inside("svg", "chart-rmse")  # an inline SVG element, not an image to fetch
    cells = [t for t, _, ids in dom.elements if t == "td" and "stages" in ids]
    assert len(cells) == 5  # one row: train
    gates = dom.inside("li", "gates")
    assert [g.get("class") for g in gates] == ["failed" if runs == 3 else "succeeded"]
    # self-contained: no script, no stylesheet link, no frame, nothing fetched
    tags = {t for t, _, _ in dom.elements}
    assert not tags & {"script", "link", "iframe", "img", "object", "embed"}
    for _tag, attrs, _ in dom.elements:
        for name in ("src", "href", "xlink:href"):
            assert (attrs.get(name) or "#").startswith("#"), attrs


def test_help_stays_fast_without_matplotlib() -> None:
    # the chart's library is imported only when a chart is drawn
    code = (
        "import sys, legion_ci.cli.main, legion_ci.reports; assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
