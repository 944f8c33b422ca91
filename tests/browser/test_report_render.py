"""The evaluation report opened in headless Chromium: its charts render (inline SVG with a real size), it
loads nothing and logs no console errors, and markup from the data stays text.

A full-page screenshot goes to test-artifacts/evaluation_report.png, whether the test passes or fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prelabel.evaluation.runs import load_items
from prelabel.prompts import PROMPTS_DIR
from tests.browser.conftest import ARTIFACTS, Tab
from tests.integration.test_evaluate import DIALOGSUM, QualityLLM, invoke, rate

pytestmark = pytest.mark.browser

SCREENSHOT = ARTIFACTS / "evaluation_report.png"

CHARTS_JS = """() => Array.from(document.querySelectorAll('svg.chart')).map((svg) => {
  const box = svg.getBoundingClientRect();
  const shapes = Array.from(svg.querySelectorAll('rect.bar, rect.cell')).map((r) => r.getBoundingClientRect());
  return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height,
          shapes: shapes.length, visible: shapes.filter((b) => b.width > 0 && b.height > 0).length};
})"""


@pytest.fixture
def llm() -> QualityLLM:
    scripted = QualityLLM()
    scripted.rate = rate
    return scripted


@pytest.fixture
def report_path(make_settings: Any, provider: Any, tmp_path: Path) -> Path:
    make_settings()
    template = (PROMPTS_DIR / "summarize.txt").read_text(encoding="utf-8")
    v1, v2 = tmp_path / "v1.txt", tmp_path / "v2.txt"
    v1.write_text(template, encoding="utf-8")
    from tests.integration.test_evaluate import MARKER

    v2.write_text(template.replace("Conversation:", f"{MARKER}\nConversation:"), encoding="utf-8")
    out = tmp_path / "run"
    invoke(
        "evaluate",
        DIALOGSUM,
        "--prompt",
        f"v1={v1}",
        "--prompt",
        f"v2={v2}",
        "--size",
        "40",
        "--out",
        out,
        "--reference-field",
        "summary",
        "--slice-field",
        "topic",
    )
    # Reviewers who disagree with the judge, with markup in what they wrote.
    rows = [
        {
            "task_id": n,
            "source_id": item.source_id,
            "input": item.input_preview,
            "llm_label": item.label,
            "corrected_label": f"<b>fixed</b> {item.label}" if n % 3 else item.label,
            "judge_level": item.level,
            "reviewer_level": (item.level + n) % 5,
            "model_version": item.model_version,
        }
        for n, item in enumerate(load_items(out, "v1"))
    ]
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    invoke("report", out, "--reviews", corrections, "--slice-field", "topic")
    return out / "report.html"


def test_report_charts_render_without_errors(tab: Tab, report_path: Path) -> None:
    page = tab.page
    try:
        page.goto(report_path.as_uri())
        page.wait_for_load_state("load")
        charts = page.evaluate(CHARTS_JS)
        labels = [chart["label"] for chart in charts]
        assert "rating distribution per prompt version" in labels
        assert "judge vs reviewer levels" in labels
        assert any(label.startswith("mean judge level per slice") for label in labels)
        for chart in charts:
            assert chart["width"] > 100 and chart["height"] > 50, chart
            assert chart["shapes"] > 0 and chart["visible"] == chart["shapes"], chart
        assert page.locator("#best").inner_text().startswith("Best version: v2")
        assert page.locator("#calibration-warning").is_visible()
        assert page.locator("b", has_text="fixed").count() == 0  # reviewers' markup is not rendered
        assert page.evaluate("() => document.scripts.length") == 0
        assert tab.console_errors == []
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)


LAYOUT_JS = """() => {
  const lineHeight = (el) => parseFloat(getComputedStyle(el).lineHeight) || 20;
  const table = document.querySelector('table.comparisons');
  const box = table.closest('.scroll').getBoundingClientRect();
  const cells = Array.from(table.querySelectorAll('th, td')).map((cell) => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    const lines = new Set(Array.from(range.getClientRects()).map((r) => Math.round(r.top))).size;
    const words = cell.innerText.split(/\\s+/).filter(Boolean);
    return {text: cell.innerText, tag: cell.tagName, lines, height: cell.getBoundingClientRect().height,
            numeric: !cell.classList.contains('text'), words: words.length, lineHeight: lineHeight(cell)};
  });
  return {tableWidth: table.getBoundingClientRect().width, boxWidth: box.width,
          pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth, cells};
}"""


def test_comparisons_table_reads_at_1280_pixels(chromium: Any, report_path: Path) -> None:
    # The width of a laptop screen: the table fits, headers wrap between words (never a letter per line),
    # and no number or interval is broken across lines.
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(report_path.as_uri())
        page.wait_for_load_state("load")
        layout = page.evaluate(LAYOUT_JS)
        assert layout["pageWidth"] <= layout["viewport"], "the page scrolls sideways"
        assert layout["tableWidth"] <= layout["boxWidth"] + 1, "the comparisons table runs off its box"
        for cell in layout["cells"]:
            # At most one line per word: a header of three words takes three lines at the very most.
            assert cell["lines"] <= max(cell["words"], 1), cell
            if cell["tag"] == "TD" and cell["numeric"]:
                assert cell["lines"] == 1, cell  # numbers and intervals whole, on one line
        page.locator("table.comparisons").screenshot(path=str(ARTIFACTS / "comparisons_1280.png"))
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "evaluation_report_1280.png"), full_page=True)
        context.close()
