"""The quality report (`prelabel quality --html`) opened in headless Chromium: the reliability chart renders
(inline SVG with a real size, one dot per judge level that was reviewed, the diagonal), the headline is there,
nothing is fetched or run and no console error is logged.

A full-page screenshot goes to test-artifacts/quality_report.png, whether the test passes or fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from prelabel.scripts.cli import app
from tests.browser.conftest import ARTIFACTS, Tab
from tests.unit.test_quality import label_line, review_line

pytestmark = pytest.mark.browser

SCREENSHOT = ARTIFACTS / "quality_report.png"

CHART_JS = """() => Array.from(document.querySelectorAll('svg.chart')).map((svg) => {
  const box = svg.getBoundingClientRect();
  const dots = Array.from(svg.querySelectorAll('circle.point')).map((c) => c.getBoundingClientRect());
  return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height,
          dots: dots.length, visible: dots.filter((b) => b.width > 0 && b.height > 0).length,
          diagonal: svg.querySelectorAll('line.diagonal').length};
})"""


def test_quality_report_renders_its_reliability_chart(tab: Tab, tmp_path: Path) -> None:
    labels = tmp_path / "labeled.jsonl"
    labels.write_text("".join(label_line(i, i % 5) for i in range(200)), encoding="utf-8")
    reviews = tmp_path / "corrections.jsonl"
    rows = [
        review_line(i, max(0, i % 5 - (i // 5) % 2), i % 5, round="round-1", inclusion_probability=0.5)
        for i in range(0, 200, 2)
    ]
    rows.append(review_line(1, 3, 3, round="round-1", inclusion_probability=0.5, llm_label="<b>markup</b>"))
    reviews.write_text("".join(rows), encoding="utf-8")
    report = tmp_path / "quality.html"
    result = CliRunner().invoke(
        app, ["quality", "--labels", str(labels), "--reviews", str(reviews), "--html", str(report)]
    )
    assert result.exit_code == 0, result.output
    page = tab.page
    try:
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        charts = page.evaluate(CHART_JS)
        assert [chart["label"] for chart in charts] == ["reliability: reviewer mean level per judge level"]
        chart = charts[0]
        assert chart["width"] > 200 and chart["height"] > 200, chart
        assert chart["dots"] == 5 and chart["visible"] == 5 and chart["diagonal"] == 1, chart
        assert "of the labels would be rated good or better" in page.locator("#headline").inner_text()
        assert page.locator("table.share tbody tr").count() == 3
        assert "more reviews" in page.locator("#reviews-needed").inner_text()
        assert page.evaluate("() => document.scripts.length") == 0
        assert tab.console_errors == []
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
