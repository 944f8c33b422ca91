"""The Data Manager a reviewer first opens, set up by `push` in a real Label Studio: the first tab shows the
judge's score and a text preview of each dialogue instead of its raw turns; "weakest first" lists very bad labels
first and unrated ones after every rated one; "unrated" holds exactly the labels the judge left unrated. A second
push keeps the tabs (no duplicates) and what a reviewer changed in them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from prelabel.dialogue import parse_dialogue, render_dialogue
from prelabel.label_interface import parse_label_config
from prelabel.push import tally_stored
from prelabel.review_tabs import PREVIEW_CHARS, PREVIEW_FIELD, SCORE_COLUMN, UNRATED_TITLE, WEAKEST_FIRST_TITLE
from tests.conftest import SUMMARY_CONFIG
from tests.e2e.review_round import prediction_score_and_reason, push_spread_round

pytestmark = pytest.mark.e2e

DIALOGUE = "tasks:data.dialogue"
PREVIEW = f"tasks:data.{PREVIEW_FIELD}"


def tab_tasks(ls_client: Any, project_id: int, view_id: int) -> list[Any]:
    """The tasks of a tab, in its order, as the Data Manager lists them."""
    return list(ls_client.sdk.tasks.list(project=project_id, view=view_id, fields="all"))


@pytest.fixture
def unique(ls_client: Any) -> Iterator[Callable[[str], str]]:
    """A project title of its own on every run (also on a Label Studio kept between runs, PRELABEL_E2E_LS_DIR);
    the projects are deleted afterwards, so the session's Label Studio lists only the other tests' projects."""
    titles: list[str] = []

    def make(title: str) -> str:
        titles.append(f"{title} {uuid.uuid4().hex[:8]}")
        return titles[-1]

    yield make
    delete_projects(ls_client, titles)


def delete_projects(ls_client: Any, titles: list[str]) -> None:
    for title in titles:
        project = ls_client.find_project(title)
        if project is not None:
            ls_client.sdk.projects.delete(id=project.id)


def test_push_sets_up_the_reviewers_tabs(ls_client, tmp_path, unique):
    title = unique("e2e review tabs")
    result = push_spread_round(ls_client, tmp_path / "model_dir", title, sample=12, seed=5)
    assert result.predicted == 12 and result.tabs is not None, result
    project_id = result.project_id
    # What push prints: rated, unrated with the reason, failed; read back from Label Studio it is the same.
    local = result.outcomes
    assert local.rated + local.unrated == 12 and local.unrated >= 1 and local.failed == 0
    assert "judge answer did not parse twice" in local.top_unrated(1)[0][0]
    stored = tally_stored(ls_client, project_id, result.task_ids, parse_label_config(SUMMARY_CONFIG))
    assert (stored.rated, stored.unrated, stored.failed) == (local.rated, local.unrated, 0)
    assert stored.top_unrated(1)[0][0].startswith("judge answer did not parse twice")
    views = {view.id: view.data for view in ls_client.sdk.views.list(project=project_id)}
    assert set(views) == {result.tabs.default, result.tabs.weakest_first, result.tabs.unrated}
    assert min(views) == result.tabs.default  # the tab Label Studio opens first

    # Every tab shows the score and the preview, and hides the raw turns, in the table and beside a task.
    for data in views.values():
        for mode in ("explore", "labeling"):
            hidden = data["hiddenColumns"][mode]
            assert SCORE_COLUMN not in hidden and PREVIEW not in hidden, (data["title"], mode, hidden)
            assert DIALOGUE in hidden, (data["title"], mode, hidden)
        # Label Studio's own defaults still apply to the other columns.
        assert "tasks:annotations_results" in data["hiddenColumns"]["explore"]
        assert "tasks:total_annotations" not in data["hiddenColumns"]["explore"]
    weakest, unrated = views[result.tabs.weakest_first], views[result.tabs.unrated]
    assert weakest["title"] == WEAKEST_FIRST_TITLE and weakest["ordering"] == [SCORE_COLUMN]
    assert unrated["title"] == UNRATED_TITLE

    # What the predictions hold: an unrated label has no score and a reason saying why.
    tasks = {task.id: task for task in ls_client.sdk.tasks.list(project=project_id, fields="all")}
    scores = {task_id: prediction_score_and_reason(task) for task_id, task in tasks.items()}
    unrated_ids = {task_id for task_id, (score, _) in scores.items() if score is None}
    assert unrated_ids and len(unrated_ids) < len(tasks), scores  # the spread judge makes both kinds
    assert 0.0 in {score for score, _ in scores.values()}, scores  # and very bad labels, to tell them apart
    for task_id in unrated_ids:
        assert scores[task_id][1].startswith("unrated: "), scores[task_id]
        assert tasks[task_id].predictions_score is None  # what the Data Manager shows: no score, not 0

    # "weakest first": very bad first, rated ascending, unrated after every rated task.
    ordered = [task.predictions_score for task in tab_tasks(ls_client, project_id, result.tabs.weakest_first)]
    rated = [score for score in ordered if score is not None]
    assert ordered == rated + [None] * len(unrated_ids)
    assert rated == sorted(rated) and rated[0] == 0.0

    # "unrated": exactly the unrated tasks, none rated very bad.
    listed = {task.id for task in tab_tasks(ls_client, project_id, result.tabs.unrated)}
    assert listed == unrated_ids

    # The preview reads as text: the first characters of the "Author: text" lines, on one line.
    for task in tasks.values():
        rendered = " ".join(render_dialogue(parse_dialogue(task.data["dialogue"])).split())
        preview = task.data[PREVIEW_FIELD]
        assert len(preview) <= PREVIEW_CHARS and "\n" not in preview
        assert rendered.startswith(preview.rstrip("…")), (preview, rendered[:300])
        assert preview == rendered or preview.endswith("…")
        assert isinstance(task.data["dialogue"], list)  # the labeling view still gets turns for Paragraphs

    # A reviewer hides a column in "weakest first"; the next push keeps that, adds no tab, and still shows the
    # score in every tab.
    customised = dict(views[result.tabs.weakest_first])
    customised["hiddenColumns"] = {
        mode: [*names, "tasks:total_predictions"] for mode, names in customised["hiddenColumns"].items()
    }
    ls_client.sdk.views.update(id=str(result.tabs.weakest_first), project=project_id, data=customised)
    again = push_spread_round(ls_client, tmp_path / "model_dir", title, sample=4, seed=6)
    assert again.tabs == result.tabs
    views = {view.id: view.data for view in ls_client.sdk.views.list(project=project_id)}
    assert len(views) == 3
    assert "tasks:total_predictions" in views[result.tabs.weakest_first]["hiddenColumns"]["explore"]
    assert views[result.tabs.weakest_first]["ordering"] == [SCORE_COLUMN]
    assert len(tab_tasks(ls_client, project_id, result.tabs.weakest_first)) == 16


def test_an_existing_first_tab_is_made_to_show_the_score(ls_client, tmp_path, unique):
    """A project whose first tab Label Studio made (default columns: no score) gets the score shown there,
    without losing the tab's other choices."""
    title = unique("e2e existing tab")
    project = ls_client.ensure_project(title, SUMMARY_CONFIG)
    hidden = {"explore": [SCORE_COLUMN, "tasks:annotators"], "labeling": [SCORE_COLUMN]}
    own = ls_client.sdk.views.create(project=project.id, data={"title": "Mine", "hiddenColumns": hidden})
    result = push_spread_round(ls_client, tmp_path / "model_dir", title, sample=3, seed=2)
    assert result.tabs is not None and result.tabs.default == own.id
    data = ls_client.sdk.views.get(id=str(own.id)).data
    assert data["title"] == "Mine"
    assert data["hiddenColumns"]["explore"] == ["tasks:annotators", DIALOGUE]
    assert data["hiddenColumns"]["labeling"] == [DIALOGUE]
