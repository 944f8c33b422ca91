"""What a reviewer sees: a task pushed with prelabel's prediction, opened in a real Label Studio 1.23.2 in
headless Chromium, shows the LLM's summary, the reviewer's own rating empty (a blind review), and the judge's
rating (the radio checked, not just the word on the page) and reason read-only: clicking another judge's
level changes nothing, submitting without a rating of one's own is refused with the config's message, and a
rated submission stores the reviewer's level apart from the judge's. The Data Manager's first tab shows the
judge's score (empty when unrated, 0 when very bad) and a text preview of each dialogue, "weakest first"
starts from very bad, "unrated" holds the rest.

Full-page screenshots go to test-artifacts/ (reviewer_view.png, data_manager_first_view.png,
data_manager_unrated.png), whether the tests pass or fail.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from prelabel.engine import Engine
from prelabel.judge import LEVELS
from prelabel.label_interface import parse_label_config
from prelabel.labeling.items import source_id
from prelabel.push import push_round
from prelabel.records import reviewed_tasks
from prelabel.review_tabs import PREVIEW_FIELD, ReviewTabs
from prelabel.testing import FakeProvider
from tests.browser.conftest import ARTIFACTS, Tab
from tests.conftest import DIALOGSUM, SUMMARY_CONFIG, ScriptedLLM, fake_provider_settings, load_jsonl
from tests.e2e.review_round import prediction_score_and_reason, push_spread_round

pytestmark = pytest.mark.browser

POOL = DIALOGSUM
SCREENSHOT = ARTIFACTS / "reviewer_view.png"
WAIT_S = 60.0

# The texts shown for a control. Label Studio 1.23.2 lists a TextArea's submitted or predicted values as
# regions, <div name="<control>:<region id>"> (read-only text until the reviewer clicks Edit, then a
# <textarea> of that name); a TextArea with room for more also shows an input box named after the control.
CONTROL_TEXTS_JS = """(name) => {
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const boxes = `[name^="${name}:"], textarea[name="${name}"], input[type="text"][name="${name}"]`;
  return Array.from(document.querySelectorAll(boxes))
    .filter(visible)
    .map((el) => (el.matches("textarea, input") ? el.value : el.innerText).trim())
    .filter((text) => text);
}"""

# Label Studio's main panel scrolls inside itself, so a "full page" screenshot would stop at the window:
# the window is made as tall as the tallest scrolled content first.
EXTRA_HEIGHT_JS = """() => Math.max(0, ...Array.from(document.querySelectorAll('*'))
  .filter((el) => el.scrollHeight > el.clientHeight + 4 && /(auto|scroll)/.test(getComputedStyle(el).overflowY))
  .map((el) => el.scrollHeight - el.clientHeight))"""


@dataclass
class PrelabelledTask:
    project_id: int
    task_id: int
    summary: str
    rating: str
    reason: str


@pytest.fixture
def prelabelled_task(ls_client: Any, tmp_path: Path) -> PrelabelledTask:
    """One DialogSum task imported with prelabel's prediction (annotator + judge behind a fake provider)."""
    with FakeProvider(ScriptedLLM()) as provider:
        engine = Engine(fake_provider_settings(provider, tmp_path))
        try:
            result = push_round(ls_client, SUMMARY_CONFIG, "browser review", POOL, sample=1, seed=3, engine=engine)
        finally:
            engine.close()
    assert result.predicted == 1 and len(result.task_ids) == 1, result

    # What ScriptedLLM answers: "Summary: <first turn>", judged "good" with a fixed reason.
    record = next(row for row in load_jsonl(POOL) if source_id(row, "dialogue") == result.source_ids[0])
    first_turn = record["dialogue"].splitlines()[0].split(":", 1)[1].strip()
    task = PrelabelledTask(
        result.project_id,
        result.task_ids[0],
        summary=f"Summary: {first_turn}",
        rating=LEVELS[3],
        reason=f"rated {LEVELS[3]} for its coverage.",
    )

    # The prediction is stored as expected, so a failure below is about what the page shows: the judge's level
    # and reason in their own read-only controls, the reviewer's rating control not written at all.
    stored = ls_client.sdk.tasks.get(task.task_id).predictions
    items = {item["from_name"]: item for item in stored[0].result} if stored else {}
    assert {name: item["value"] for name, item in items.items()} == {
        "summary": {"text": [task.summary]},
        "judge_rating": {"choices": [task.rating]},
        "judge_reason": {"text": [task.reason]},
    }, stored
    assert items["judge_rating"].get("readonly") is True and items["judge_reason"].get("readonly") is True
    return task


# The config's order (label_config/summarization.xml): the reviewer's rating first, the judge's after it.
REVIEWER, JUDGE = 0, 1
# The level Choices blocks, in page order, each as {value: (checked, disabled)}.
LEVEL_CHOICES_JS = """(levels) => Array.from(document.querySelectorAll('.lsf-choices'))
  .map((block) => Object.fromEntries(levels
    .map((value) => [value, block.querySelector(`input[name="${value}"]`)])
    .filter(([, input]) => input)
    .map(([value, input]) => [value, [input.checked, input.disabled]])))
  .filter((block) => Object.keys(block).length === levels.length)"""


def level_blocks(page: Any) -> list[dict[str, list[bool]]]:
    return page.evaluate(LEVEL_CHOICES_JS, list(LEVELS))


def checked_in(blocks: list[dict[str, list[bool]]], index: int) -> list[str]:
    return [value for value, (checked, _) in blocks[index].items() if checked] if len(blocks) > index else []


def test_reviewer_rates_blind_with_the_judge_read_only(
    label_studio: Any, ls_client: Any, prelabelled_task: PrelabelledTask, tab: Tab
) -> None:
    page, task = tab.page, prelabelled_task
    failed = False
    SCREENSHOT.unlink(missing_ok=True)
    try:
        log_in(tab, label_studio)
        page.goto(f"{label_studio.url}/projects/{task.project_id}/data?task={task.task_id}")
        page.locator(".lsf-main-content").first.wait_for(state="visible", timeout=WAIT_S * 1000)

        summary = wait_for(tab, lambda: control_texts(page, "summary"), task.summary, "the LLM's summary")
        assert summary == [task.summary], f"the summary control shows {summary}"

        # The judge's level shows in its own control, checked and disabled; the reviewer's starts empty.
        wait_for(tab, lambda: checked_in(level_blocks(page), JUDGE), [task.rating], "the judge's level checked")
        blocks = level_blocks(page)
        assert len(blocks) == 2, f"expected the reviewer's and the judge's level controls, saw {blocks}"
        assert checked_in(blocks, REVIEWER) == [], f"the reviewer's rating is pre-filled: {blocks[REVIEWER]}"
        assert not any(disabled for _, disabled in blocks[REVIEWER].values()), blocks[REVIEWER]
        assert all(disabled for _, disabled in blocks[JUDGE].values()), f"the judge's level is editable: {blocks}"

        reason = wait_for(tab, lambda: control_texts(page, "judge_reason"), task.reason, "the judge's reason")
        assert reason == [task.reason], f"the judge's reason control shows {reason}"
        text = page.inner_text("body")
        for expected in (task.summary, task.rating, task.reason, "Your rating"):
            assert expected in text, debug(tab, f"{expected!r} is not in the page text")

        # A click on another judge's level (forced past the disabled input) changes nothing.
        judge_block = page.locator(".lsf-choices").filter(has=page.locator('input[name="very bad"]')).nth(JUDGE)
        judge_block.locator(f'input[name="{LEVELS[0]}"]').click(force=True)
        page.wait_for_timeout(500)
        assert checked_in(level_blocks(page), JUDGE) == [task.rating], level_blocks(page)
        assert checked_in(level_blocks(page), REVIEWER) == []
        save_screenshot(page)  # the view as the reviewer first meets it: their rating empty, the judge's read-only

        # Submitting without a rating of one's own is refused with the config's message; nothing is stored.
        submit = page.get_by_role("button", name="Submit")
        submit.click()
        wait_for(tab, lambda: page.inner_text("body"), REQUIRED_MESSAGE, "the required-rating message")
        page.wait_for_timeout(1000)
        assert list(ls_client.sdk.annotations.list(id=task.task_id)) == [], "an unrated review was stored"
        dismiss_modal(page)

        # Rated "bad" by the reviewer: stored in the reviewer's control, the judge's "good" beside it.
        reviewer_block = page.locator(".lsf-choices").filter(has=page.locator('input[name="very bad"]')).nth(REVIEWER)
        reviewer_block.locator(f'input[name="{LEVELS[1]}"]').click()
        wait_for(tab, lambda: checked_in(level_blocks(page), REVIEWER), [LEVELS[1]], "the reviewer's rating")
        submit.click()
        annotations = wait_for(
            tab, lambda: len(list(ls_client.sdk.annotations.list(id=task.task_id))), 1, "the submitted review"
        )
        assert annotations == 1
        config = parse_label_config(SUMMARY_CONFIG)
        (record,) = [r for r in reviewed_tasks(config, ls_client.export(task.project_id)) if r.task_id == task.task_id]
        assert (record.llm_level, record.human_level, record.rating_anchored) == (3, 1, False), record
        assert record.human_label == task.summary and record.llm_reason == task.reason
    except BaseException:
        failed = True
        raise
    finally:
        if failed or not SCREENSHOT.exists():
            try:
                save_screenshot(page)
            except (PlaywrightError, OSError) as error:  # never hide the test's own failure behind the screenshot's
                print(f"no screenshot: {error}")
        if failed:
            print("Label Studio log tail:\n" + label_studio.log_tail(15))
    assert SCREENSHOT.stat().st_size > 10_000


REQUIRED_MESSAGE = "Rate the LLM's summary yourself"


def dismiss_modal(page: Any) -> None:
    """Close Label Studio's warning dialog (its OK button), so the form underneath can be used again."""
    ok = page.get_by_role("button", name="OK")
    if ok.count():
        ok.first.click()
    page.wait_for_timeout(300)


def log_in(tab: Tab, label_studio: Any) -> None:
    page = tab.page
    page.goto(f"{label_studio.url}/user/login")
    page.locator('input[name="email"]').fill(label_studio.username)
    page.locator('input[name="password"]').fill(label_studio.password)
    page.locator('button[type="submit"]').click()
    deadline = time.monotonic() + WAIT_S
    while "/user/login" in page.url:
        if time.monotonic() > deadline:
            raise AssertionError(debug(tab, "still on the login page after submitting the credentials"))
        page.wait_for_timeout(250)


def control_texts(page: Any, name: str) -> list[str]:
    return page.evaluate(CONTROL_TEXTS_JS, name)


def wait_for(tab: Tab, read: Any, expected: Any, what: str) -> Any:
    """Poll `read()` until it equals `expected` (or, for a string, contains it), up to WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = read()
        if value == expected or (isinstance(expected, str) and expected in value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(debug(tab, f"timed out after {WAIT_S:.0f} s waiting for {what}: last saw {value!r}"))
        tab.page.wait_for_timeout(250)


def debug(tab: Tab, message: str) -> str:
    page = tab.page
    try:
        text = page.inner_text("body", timeout=5000)
    except PlaywrightError as error:  # the page may be gone
        text = f"<no page text: {error}>"
    errors = "\n  ".join(tab.console_errors[-10:]) or "none"
    return (
        f"{message}\nURL: {page.url}\nbrowser console errors and failed requests:\n  {errors}\n"
        f"page text (first 3000 chars):\n{text[:3000]}"
    )


def save_screenshot(page: Any) -> None:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    try:
        extra = page.evaluate(EXTRA_HEIGHT_JS)
        if extra:
            size = page.viewport_size or {"width": 1400, "height": 1000}
            page.set_viewport_size({"width": size["width"], "height": min(size["height"] + int(extra), 8000)})
            page.wait_for_timeout(500)
    except PlaywrightError as error:  # a screenshot of the window is still better than none
        print(f"could not enlarge the window for the screenshot: {error}")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"screenshot: {SCREENSHOT}")


# The Data Manager's table as the reviewer reads it: the header's column titles and each row's cell texts.
TABLE_JS = """() => {
  const cells = (el) => Array.from(el.querySelectorAll(':scope > .lsf-table__cell, :scope > * > .lsf-table__cell'))
    .map((cell) => cell.innerText.trim().split('\\n')[0]);
  const head = document.querySelector('.lsf-table-head');
  return {columns: head ? cells(head) : [], rows: Array.from(document.querySelectorAll('.lsf-table-row')).map(cells)};
}"""


@dataclass
class SpreadRound:
    project_id: int
    tabs: ReviewTabs
    scores: dict[int, float | None]  # task id -> the stored prediction score
    previews: dict[int, str]


@pytest.fixture
def spread_round(ls_client: Any, tmp_path: Path) -> Iterator[SpreadRound]:
    """Twelve dialogues rated across every level, some left unrated, pushed as `prelabel push` does."""
    # A project of its own on every run, also on a Label Studio kept between runs (PRELABEL_E2E_LS_DIR).
    title = f"browser first view {uuid.uuid4().hex[:8]}"
    result = push_spread_round(ls_client, tmp_path / "model_dir", title, sample=12, seed=5)
    assert result.tabs is not None and result.predicted == 12, result
    tasks = list(ls_client.sdk.tasks.list(project=result.project_id, fields="all"))
    scores = {task.id: prediction_score_and_reason(task)[0] for task in tasks}
    assert None in scores.values() and 0.0 in scores.values(), scores  # both unrated and very bad labels
    yield SpreadRound(result.project_id, result.tabs, scores, {t.id: t.data[PREVIEW_FIELD] for t in tasks})
    # The session's Label Studio is shared with the end-to-end tests, which list its projects.
    ls_client.sdk.projects.delete(id=result.project_id)


def read_table(tab: Tab, url: str, rows: int) -> dict[str, Any]:
    """Open a Data Manager tab and read its table once `rows` rows are shown."""
    page = tab.page
    page.goto(url)
    return wait_for_table(tab, rows)


def wait_for_table(tab: Tab, rows: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        table = tab.page.evaluate(TABLE_JS)
        if len(table["rows"]) == rows and table["columns"]:
            return table
        if time.monotonic() > deadline:
            raise AssertionError(debug(tab, f"the Data Manager shows {len(table['rows'])} rows, not {rows}"))
        tab.page.wait_for_timeout(250)


def by_column(table: dict[str, Any], title: str) -> list[str]:
    assert title in table["columns"], f"no {title!r} column among {table['columns']}"
    index = table["columns"].index(title)
    return [row[index] for row in table["rows"]]


def test_reviewer_first_view_shows_scores_previews_and_unrated(
    label_studio: Any, spread_round: SpreadRound, tab: Tab
) -> None:
    page, done = tab.page, spread_round
    project_url = f"{label_studio.url}/projects/{done.project_id}/data"
    unrated = {task_id for task_id, score in done.scores.items() if score is None}
    for stale in (FIRST_VIEW_SHOT, UNRATED_SHOT):
        stale.unlink(missing_ok=True)
    try:
        log_in(tab, label_studio)

        # The tab Label Studio opens first: the score and the preview text, not the raw turns.
        table = read_table(tab, project_url, len(done.scores))
        save_page(page, FIRST_VIEW_SHOT)
        assert "Prediction score" in table["columns"] and PREVIEW_FIELD in table["columns"], table["columns"]
        assert "dialogue" not in table["columns"], table["columns"]
        ids = [int(cell) for cell in by_column(table, "ID")]
        shown = dict(zip(ids, by_column(table, "Prediction score")))
        for task_id, score in done.scores.items():
            # Unrated: an empty cell; very bad: "0"; others as Label Studio formats them (0.750, 1).
            cell = shown[task_id]
            assert (cell == "") if score is None else (cell != "" and float(cell) == score), (task_id, score, cell)
        previews = dict(zip(ids, by_column(table, PREVIEW_FIELD)))
        for task_id, preview in done.previews.items():
            assert previews[task_id] == preview and preview.startswith("Person1: "), previews[task_id]

        # "weakest first": very bad first, then up, unrated (no score) last.
        table = read_table(tab, f"{project_url}?tab={done.tabs.weakest_first}", len(done.scores))
        cells = by_column(table, "Prediction score")
        rated = [float(cell) for cell in cells if cell]
        assert rated == sorted(rated) and rated[0] == 0.0, cells
        assert cells[len(rated) :] == [""] * len(unrated), cells

        # "unrated": exactly the tasks without a score.
        table = read_table(tab, f"{project_url}?tab={done.tabs.unrated}", len(unrated))
        save_page(page, UNRATED_SHOT)
        assert {int(cell) for cell in by_column(table, "ID")} == unrated
        assert set(by_column(table, "Prediction score")) == {""}
    except BaseException:
        print("Label Studio log tail:\n" + label_studio.log_tail(15))
        raise
    finally:
        try:
            # The page as it was when the test ended (passed or failed), beside the two named views.
            save_page(page, ARTIFACTS / "data_manager_last.png")
        except (PlaywrightError, OSError) as error:
            print(f"no screenshot: {error}")
    assert FIRST_VIEW_SHOT.stat().st_size > 10_000 and UNRATED_SHOT.stat().st_size > 10_000


FIRST_VIEW_SHOT = ARTIFACTS / "data_manager_first_view.png"
UNRATED_SHOT = ARTIFACTS / "data_manager_unrated.png"


def save_page(page: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
