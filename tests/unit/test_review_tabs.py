"""The Data Manager's preview text, the tab column lists, and what an unrated prediction carries."""

from __future__ import annotations

from prelabel.dialogue import Turn
from prelabel.judge import Verdict
from prelabel.label_interface import parse_label_config
from prelabel.pipeline import LabelOutcome
from prelabel.predictions import UNRATED_PREFIX, prediction_for
from prelabel.review_tabs import (
    PREVIEW_CHARS,
    SCORE_COLUMN,
    TabColumns,
    dialogue_preview,
    hidden_columns,
    review_columns,
)
from tests.conftest import SUMMARY_CONFIG

CONFIG = parse_label_config(SUMMARY_CONFIG)
COLUMNS = [
    {"id": "dialogue", "parent": "data", "visibility_defaults": {"explore": True, "labeling": True}},
    {"id": "dialogue_preview", "parent": "data", "visibility_defaults": {"explore": True, "labeling": False}},
    {"id": "id", "visibility_defaults": {"explore": True, "labeling": False}},
    {"id": "predictions_score", "visibility_defaults": {"explore": False, "labeling": False}},
    {"id": "annotations_results", "visibility_defaults": {"explore": False, "labeling": False}},
    {"id": "data", "visibility_defaults": None},
]


def test_a_short_dialogue_is_its_own_preview_on_one_line():
    turns = [Turn(author="Person1", text="Hi,\nthere."), Turn(author="Person2", text="Hello.")]
    assert dialogue_preview(turns) == "Person1: Hi, there. Person2: Hello."


def test_a_long_dialogue_is_cut_at_a_word_with_an_ellipsis():
    turns = [Turn(author="A", text="word " * 100)]
    preview = dialogue_preview(turns)
    assert len(preview) <= PREVIEW_CHARS and preview.endswith("word…") and preview.startswith("A: word word")


def test_a_tab_without_its_own_columns_gets_label_studio_defaults_with_the_score_and_preview_shown():
    wanted = review_columns(CONFIG, {"dialogue", "dialogue_preview"})
    hidden = hidden_columns(None, COLUMNS, wanted)
    assert hidden["explore"] == ["tasks:annotations_results", "tasks:data.dialogue"]
    assert hidden["labeling"] == ["tasks:id", "tasks:annotations_results", "tasks:data.dialogue"]


def test_a_tabs_own_choices_are_kept():
    own = {"explore": [SCORE_COLUMN, "tasks:id"], "labeling": []}
    hidden = hidden_columns(own, COLUMNS, TabColumns(show=[SCORE_COLUMN], hide=[]))
    assert hidden == {"explore": ["tasks:id"], "labeling": []}


def test_without_a_preview_the_raw_input_stays():
    assert review_columns(CONFIG, {"dialogue"}) == TabColumns(show=[SCORE_COLUMN], hide=[])


def test_an_unrated_prediction_has_no_score_and_says_why():
    unrated = LabelOutcome(task_id=1, model_version="v", label="A summary.", unrated_reason="judge call failed")
    prediction = prediction_for(unrated, CONFIG)
    assert "score" not in prediction
    reason = next(item for item in prediction["result"] if item["from_name"] == "judge_reason")
    assert reason["value"]["text"] == [f"{UNRATED_PREFIX} judge call failed"]

    very_bad = LabelOutcome(task_id=2, model_version="v", label="x", verdict=Verdict(level=0, reason="wrong"))
    assert prediction_for(very_bad, CONFIG)["score"] == 0.0
