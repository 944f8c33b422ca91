"""What a reviewer first sees in Label Studio's Data Manager: a short text preview of each dialogue instead of
its raw JSON, the judge's score as a column, and tabs that start from the weakest labels and gather the
labels the judge left unrated.

Label Studio shows every column a tab's "hiddenColumns" does not list, and a tab without that key falls back to
column defaults that hide the prediction score. So each tab gets a complete list, built from the project's own
columns (GET /api/dm/columns), keeping whatever else a reviewer chose to show or hide.

An unrated prediction carries no score (Label Studio stores null, which sorts after every rated task and which
the "Prediction score is empty" filter finds), and its judge's reason starts with "unrated:", which the
"Prediction results contains" filter finds: together they tell unrated labels from those rated *very bad*
(score 0) and from tasks whose score counts another model_version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prelabel.dialogue import Turn, render_dialogue
from prelabel.predictions import UNRATED_PREFIX

if TYPE_CHECKING:
    from prelabel.label_interface import LabelConfig
    from prelabel.labelstudio import LabelStudioClient

PREVIEW_FIELD = "dialogue_preview"  # task data only for the Data Manager; pull and export never read it
PREVIEW_CHARS = 200

SCORE_COLUMN = "tasks:predictions_score"
DEFAULT_TITLE = "Default"  # the title Label Studio gives the tab it creates itself
WEAKEST_FIRST_TITLE = "weakest first"
WEAKEST_FIRST = [SCORE_COLUMN]  # ascending: very bad (0) first; no score (unrated) after every rated task
UNRATED_TITLE = "unrated"
UNRATED_FILTERS: dict[str, Any] = {
    "conjunction": "and",
    "items": [
        {"filter": "filter:tasks:predictions_score", "operator": "empty", "type": "Number", "value": True},
        {
            "filter": "filter:tasks:predictions_results",
            "operator": "contains",
            "type": "String",
            "value": UNRATED_PREFIX,
        },
    ],
}
MODES = ("explore", "labeling")  # the task table, and the task list beside the labeling view


def dialogue_preview(turns: Sequence[Turn], limit: int = PREVIEW_CHARS) -> str:
    """The first `limit` characters of the "Author: text" lines, on one line, cut at a word with an ellipsis."""
    text = " ".join(render_dialogue(list(turns)).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def data_column(name: str) -> str:
    return f"tasks:data.{name}"


class TabColumns(BaseModel):
    """Columns a tab must show or hide, whatever else it shows."""

    show: list[str]
    hide: list[str]


def review_columns(config: LabelConfig, data_columns: set[str]) -> TabColumns:
    """The score shown; for dialogues with a preview, the preview shown instead of the raw turns."""
    show, hide = [SCORE_COLUMN], []
    if PREVIEW_FIELD in data_columns:
        show.append(data_column(PREVIEW_FIELD))
        hide.append(data_column(config.data_key))
    return TabColumns(show=show, hide=hide)


def hidden_columns(current: Any, columns: list[dict[str, Any]], wanted: TabColumns) -> dict[str, list[str]]:
    """A tab's complete "hiddenColumns": its own list (Label Studio's defaults when it has none), with the
    wanted columns shown or hidden."""
    hidden: dict[str, list[str]] = {}
    for mode in MODES:
        listed = current.get(mode) if isinstance(current, dict) else None
        if isinstance(listed, list):
            names = [str(name) for name in listed]
        else:
            names = [
                column_id(column)
                for column in columns
                if column.get("visibility_defaults") and not column["visibility_defaults"].get(mode)
            ]
        names = [name for name in names if name not in wanted.show]
        names += [name for name in wanted.hide if name not in names]
        hidden[mode] = names
    return hidden


def column_id(column: dict[str, Any]) -> str:
    """The id a tab names a column by: "tasks:<id>", or "tasks:data.<key>" for a task data field."""
    return f"tasks:data.{column['id']}" if column.get("parent") == "data" else f"tasks:{column['id']}"


class ReviewTabs(BaseModel):
    default: int
    weakest_first: int
    unrated: int


def set_up_review_tabs(client: LabelStudioClient, project_id: int, config: LabelConfig) -> ReviewTabs:
    """The project's first tab, a "weakest first" tab and an "unrated" tab, created if absent, each showing the
    score (and the preview instead of the raw dialogue). Run after an import: a data field becomes a column
    only once a task holds it. Tabs found again keep their own ordering, filters and other columns."""
    columns = client.data_manager_columns(project_id)
    wanted = review_columns(config, {str(c["id"]) for c in columns if c.get("parent") == "data"})
    views = sorted(client.views(project_id), key=lambda view: view.id)

    def ensure(match: Any, title: str, extra: dict[str, Any]) -> int:
        found = next((view for view in views if match(view)), None)
        data = dict(found.data or {}) if found is not None else {}
        hidden = hidden_columns(data.get("hiddenColumns"), columns, wanted)
        if found is None:
            new = {"title": title, "type": "list", "target": "tasks", "hiddenColumns": hidden, **extra}
            view_id = client.create_view(project_id, new)
            views.append(_Created(id=view_id, data=new))
            return view_id
        if hidden != data.get("hiddenColumns"):
            client.update_view(found.id, project_id, {**data, "hiddenColumns": hidden})
        return int(found.id)

    def ordering(view: Any) -> list[str]:
        return list((view.data or {}).get("ordering") or getattr(view, "ordering", None) or [])

    def title(view: Any) -> str:
        return str((view.data or {}).get("title") or "")

    # Label Studio opens the first tab: whichever it is, it shows the score.
    default = ensure(lambda view: True, DEFAULT_TITLE, {})
    weakest = ensure(
        lambda view: ordering(view) == WEAKEST_FIRST or title(view) == WEAKEST_FIRST_TITLE,
        WEAKEST_FIRST_TITLE,
        {"ordering": WEAKEST_FIRST},
    )
    unrated = ensure(lambda view: title(view) == UNRATED_TITLE, UNRATED_TITLE, {"filters": UNRATED_FILTERS})
    return ReviewTabs(default=default, weakest_first=weakest, unrated=unrated)


class _Created(BaseModel):
    id: int
    data: dict[str, Any]
