"""Blind reviews: the judge's level in a read-only control of its own, the reviewer's rating a separate control
the prediction never fills; configs of the older shape (one control for both) keep working, and every report
counts the reviewers' ratings that started from the judge's pre-filled level as possibly anchored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from prelabel import label_config
from prelabel.evaluation.calibration import judge_calibration
from prelabel.evaluation.reviews import reviewed_from_corrections
from prelabel.export.options import ExportOptions
from prelabel.export.writer import export_dataset
from prelabel.judge import LEVELS
from prelabel.label_interface import JUDGE_PREFIX, LabelConfig, parse_label_config, parse_xml
from prelabel.predictions import UNRATED_PREFIX, split_prompt_control
from prelabel.records import ReviewedTask, reviewed_task
from prelabel.review_stats import correction_row, pull_report
from prelabel.scripts.tables import export_table, review_versions_table
from tests.conftest import OLD_SENTIMENT_CONFIG, OLD_SUMMARY_CONFIG

DIALOGUE = [{"author": "A", "text": "Hello."}, {"author": "B", "text": "Hi."}]


def shipped(name: str) -> LabelConfig:
    return parse_label_config(split_prompt_control(label_config.read(name))[0])


def team_config(levels: str) -> LabelConfig:
    """A team's own summarization config with its own names, and the level controls given."""
    return parse_label_config(
        '<View><Paragraphs name="conv" value="$chat" nameKey="author" textKey="text"/>'
        f'<TextArea name="my_summary" toName="conv"/>{levels}'
        '<TextArea name="why" toName="conv" readonly="true"/></View>'
    )


def level_choices(name: str, extra: str = "") -> str:
    choices = "".join(f'<Choice value="{level.title()}"/>' for level in LEVELS)
    return f'<Choices name="{name}" toName="conv" choice="single-radio" {extra}>{choices}</Choices>'


def names(result: list[dict[str, Any]]) -> list[str]:
    return [item["from_name"] for item in result]


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", label_config.NAMES)
def test_shipped_configs_have_a_required_empty_reviewer_rating_and_a_read_only_judge(name):
    config = shipped(name)
    assert (config.rating.name, config.judge_rating.name, config.reason.name) == (
        "rating",
        "judge_rating",
        "judge_reason",
    )
    assert config.rating.choices == config.judge_rating.choices == list(LEVELS)
    controls = {el.get("name"): el for el in parse_xml(label_config.read(name)).iter() if el.get("name")}
    reviewer, judge = controls["rating"], controls["judge_rating"]
    assert reviewer.get("required") == "true" and "before submitting" in reviewer.get("requiredMessage", "")
    assert judge.get("readonly") == "true" and judge.get("required") is None
    # The judge's panel comes after the reviewer's rating: read after rating, not before.
    order = list(controls)
    assert order.index("rating") < order.index("judge_rating") < order.index("judge_reason")


@pytest.mark.parametrize(
    "levels, reviewer, judge",
    [
        # Marked read-only: the judge's, whatever its name and position.
        (level_choices("model_opinion", 'readonly="true"') + level_choices("quality"), "quality", "model_opinion"),
        # Named like the judge's beside another level control.
        (level_choices("my_rating") + level_choices("judge_level"), "my_rating", "judge_level"),
        (level_choices("predicted_quality") + level_choices("grade"), "grade", "predicted_quality"),
        # Stars for both roles; and a judge's Choices beside a reviewer's stars.
        (
            '<Rating name="judge_stars" toName="conv" maxRating="10"/><Rating name="stars" toName="conv"/>',
            "stars",
            "judge_stars",
        ),
        (level_choices("judge") + '<Rating name="my_stars" toName="conv"/>', "my_stars", "judge"),
        # One control alone: the older shape's shared control is the reviewer's, even if named after the judge.
        (level_choices("judge_score"), "judge_score", None),
        ('<Rating name="stars" toName="conv"/>', "stars", None),
        # ... unless it is marked read-only: then the judge's, and reviewers rate nothing.
        (level_choices("shown", 'readonly="true"'), None, "shown"),
    ],
)
def test_rating_roles_are_told_apart_by_attribute_and_name(levels, reviewer, judge):
    config = team_config(levels)
    assert (config.label.name, config.reason.name, config.data_key) == ("my_summary", "why", "chat")
    assert (config.rating.name if config.rating else None) == reviewer
    assert (config.judge_rating.name if config.judge_rating else None) == judge
    assert config.rates


def test_the_old_configs_are_read_as_one_shared_control():
    for xml, label in ((OLD_SUMMARY_CONFIG, "summary"), (OLD_SENTIMENT_CONFIG, "sentiment")):
        config = parse_label_config(xml)
        assert (config.label.name, config.rating.name, config.judge_rating) == (label, "rating", None)
        assert config.reason.name == "judge_reason"


# -- the prediction --------------------------------------------------------------------------------

CONFIGS = {
    "shipped summarization": lambda: shipped("summarization"),
    "shipped sentiment": lambda: shipped("sentiment"),
    "old summarization": lambda: parse_label_config(OLD_SUMMARY_CONFIG),
    "team stars": lambda: team_config('<Rating name="judge_stars" toName="conv"/><Rating name="stars" toName="conv"/>'),
    "team shared stars": lambda: team_config('<Rating name="stars" toName="conv"/>'),
    "team choices": lambda: team_config(level_choices("quality") + level_choices("auto", 'readonly="true"')),
}


@pytest.mark.parametrize("which", CONFIGS)
@pytest.mark.parametrize("level", [None, 0, 1, 2, 3, 4])
def test_the_prediction_never_writes_the_reviewers_rating(which, level):
    config = CONFIGS[which]()
    label = config.class_labels[0] if config.class_labels else "A summary."
    result = config.result_for(label, level, "a reason")
    assert config.rating.name not in names(result)
    assert not config.prefills_rating(result) and config.level_from_result(result) is None
    assert config.judge_level_from_result(result) == level
    for item in result[1:]:  # the judge's level and reason are shown, never edited
        assert item["readonly"] is True


def test_the_judges_own_control_carries_its_level_as_choice_or_stars():
    config = CONFIGS["team choices"]()
    judge = config.result_for("s", 1, "why not")[1]
    assert (judge["from_name"], judge["value"], judge["readonly"]) == ("auto", {"choices": ["Bad"]}, True)
    stars = team_config('<Rating name="judge_stars" toName="conv" maxRating="10"/><Rating name="stars" toName="conv"/>')
    assert [stars.result_for("s", level, None)[1]["value"] for level in (0, 2, 4)] == [
        {"rating": 1},
        {"rating": 5},  # 1 + 4.5 stars, rounded half to even
        {"rating": 10},
    ]
    # With a judge's control of its own, the reason is written as the judge gave it: no level prefix.
    assert stars.result_for("s", 3, "fine")[2]["value"] == {"text": ["fine"]}


def test_an_old_config_carries_the_judges_level_at_the_start_of_its_reason():
    config = parse_label_config(OLD_SUMMARY_CONFIG)
    result = config.result_for("A summary.", 3, "covers it.")
    assert names(result) == ["summary", "judge_reason"]
    assert result[1]["value"] == {"text": [f"{JUDGE_PREFIX} good. covers it."]}
    assert config.result_for("A summary.", 0, "")[1]["value"] == {"text": [f"{JUDGE_PREFIX} very bad."]}
    # An unrated label keeps its reason as it was: the Data Manager's "unrated" tab filters on its prefix.
    unrated = config.result_for("A summary.", None, f"{UNRATED_PREFIX} the judge did not answer")
    assert unrated[1]["value"]["text"][0].startswith(UNRATED_PREFIX)
    assert config.judge_level_from_result(unrated) is None


def test_the_judges_level_is_read_from_predictions_of_every_age():
    config = shipped("summarization")
    reason = {"from_name": "judge_reason", "value": {"text": ["judge: bad. too short"]}}
    old_shared = {"from_name": "rating", "value": {"choices": ["excellent"]}}
    judge = {"from_name": "judge_rating", "value": {"choices": ["moderate"]}}
    assert config.judge_level_from_result([judge, old_shared, reason]) == 2  # its own control first
    assert config.judge_level_from_result([old_shared, reason]) == 4  # a prediction made before blind reviews
    assert config.judge_level_from_result([reason]) == 1  # an old config's prediction
    assert config.judge_level_from_result([{"from_name": "judge_reason", "value": {"text": ["judged bad"]}}]) is None
    assert config.prefills_rating([old_shared]) and not config.prefills_rating([judge, reason])


# -- records: rating_anchored ---------------------------------------------------------------------


def item(name: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "from_name": name,
        "to_name": "dialogue",
        "type": "textarea" if "text" in value else "choices",
        "value": value,
    }


def export_task(
    predictions: list[tuple[int, list[dict[str, Any]], float | None]],
    annotation: list[dict[str, Any]] | None,
    parent: int | None = None,
) -> dict[str, Any]:
    """A task of a Label Studio export: predictions (id, result, score) oldest first, and one annotation."""
    task: dict[str, Any] = {
        "id": 7,
        "data": {"dialogue": DIALOGUE, "source_id": "s7"},
        "predictions": [
            {"id": pid, "result": result, "score": score, "model_version": f"v{pid}", "created_at": f"2026-01-0{pid}"}
            for pid, result, score in predictions
        ],
        "annotations": [],
    }
    if annotation is not None:
        task["annotations"] = [{"id": 70, "result": annotation, "parent_prediction": parent}]
    return task


def summary(text: str) -> dict[str, Any]:
    return item("summary", {"text": [text]})


def level(name: str, value: str) -> dict[str, Any]:
    return item(name, {"choices": [value]})


def reason(text: str) -> dict[str, Any]:
    return {**item("judge_reason", {"text": [text]}), "readonly": True}


PRE_FILLED = [summary("LLM."), level("rating", "good"), reason("fine")]  # as every prediction was before
BLIND_OLD_CONFIG = [summary("LLM."), reason("judge: good. fine")]  # an old config's prediction now
BLIND = [summary("LLM."), {**level("judge_rating", "good"), "readonly": True}, reason("fine")]
REVIEW = [summary("Mine."), level("rating", "bad")]


@pytest.mark.parametrize(
    "xml, prediction, score, judge, anchored",
    [
        (OLD_SUMMARY_CONFIG, PRE_FILLED, 0.75, 3, True),  # an old project's review: the reviewer found "good" set
        (
            OLD_SUMMARY_CONFIG,
            BLIND_OLD_CONFIG,
            0.75,
            3,
            False,
        ),  # an old project, predicted now: the level in the reason
        (OLD_SUMMARY_CONFIG, [summary("LLM.")], 0.75, 3, False),  # no level anywhere but the score
        (label_config.read("summarization"), BLIND, 0.75, 3, False),
        (label_config.read("summarization"), PRE_FILLED, 0.75, 3, True),  # predicted before the config changed
    ],
)
def test_rating_anchored_is_whether_the_prediction_filled_the_reviewers_control(
    xml, prediction, score, judge, anchored
):
    config = parse_label_config(xml)
    record = reviewed_task(config, export_task([(1, prediction, score)], REVIEW, parent=1))
    assert (record.llm_level, record.human_level, record.rating_anchored) == (judge, 1, anchored)
    assert (record.llm_label, record.human_label) == ("LLM.", "Mine.")
    unreviewed = reviewed_task(config, export_task([(1, prediction, score)], None))
    assert unreviewed.llm_level == judge and not unreviewed.rating_anchored


def test_rating_anchored_follows_the_prediction_the_review_started_from():
    config = shipped("summarization")
    predictions = [(1, PRE_FILLED, 0.75), (2, BLIND, 0.75)]
    started_old = reviewed_task(config, export_task(predictions, REVIEW, parent=1))
    started_new = reviewed_task(config, export_task(predictions, REVIEW, parent=2))
    assert (started_old.prediction_id, started_old.rating_anchored) == (1, True)
    assert (started_new.prediction_id, started_new.rating_anchored) == (2, False)
    # No parent recorded: the latest prediction is taken, as for the LLM's label.
    assert not reviewed_task(config, export_task(predictions, REVIEW)).rating_anchored


def test_the_score_stands_in_only_where_the_level_used_to_be_pre_filled():
    # A summarization config without any level control never had a judge's level to read.
    bare = parse_label_config(
        '<View><Paragraphs name="dialogue" value="$dialogue"/><TextArea name="summary" toName="dialogue"/></View>'
    )
    assert reviewed_task(bare, export_task([(1, [summary("LLM.")], 0.75)], None)).llm_level is None
    config = shipped("summarization")  # the judge's own control is empty: an unrated label, not a guess
    assert reviewed_task(config, export_task([(1, [summary("LLM.")], 0.75)], None)).llm_level is None


# -- reports ---------------------------------------------------------------------------------------


def rated(task_id: int, judge: int, reviewer: int, anchored: bool, version: str = "v1") -> ReviewedTask:
    return ReviewedTask(
        task_id=task_id,
        input_text="A: hi",
        llm_label="LLM.",
        llm_level=judge,
        model_version=version,
        human_label="LLM.",
        human_level=reviewer,
        annotation_id=100 + task_id,
        rating_anchored=anchored,
    )


def mixed() -> list[ReviewedTask]:
    return [
        rated(1, 3, 3, True, "v1"),
        rated(2, 4, 4, True, "v1"),
        rated(3, 2, 1, False, "v2"),
        rated(4, 3, 2, False, "v2"),
        rated(5, 1, 1, False, "v2"),
        # Anchored but without a reviewer level: not a rated pair, not counted.
        ReviewedTask(task_id=6, input_text="x", llm_level=3, annotation_id=106, rating_anchored=True),
    ]


def test_pull_counts_and_warns_about_anchored_pairs():
    report = pull_report(mixed())
    assert [(v.model_version, v.n_rating_pairs, v.n_anchored_pairs) for v in report.versions] == [
        ("v1", 2, 2),
        ("v2", 3, 0),
        (None, 0, 0),
    ]
    assert report.overall.n_anchored_pairs == 2
    assert report.anchored_warning.startswith("2 of 5 rated pairs are possibly anchored")
    assert report.to_dict()["anchored_warning"] == report.anchored_warning
    assert report.to_dict()["versions"][0]["n_anchored_pairs"] == 2
    console = Console(width=200, record=True, color_system=None)
    console.print(review_versions_table(report))
    text = console.export_text()
    assert "2 (2 anchored)" in text and "warning: 2 of 5 rated pairs are possibly anchored" in text

    blind = pull_report([t for t in mixed() if not t.rating_anchored])
    assert blind.anchored_warning is None and blind.overall.n_anchored_pairs == 0
    console = Console(width=200, record=True, color_system=None)
    console.print(review_versions_table(blind))
    assert "anchored" not in console.export_text()


def test_the_corrections_row_carries_the_flag_and_reads_back():
    rows = [correction_row(task) for task in mixed()]
    assert [row["rating_anchored"] for row in rows] == [True, True, False, False, False, True]
    back = reviewed_from_corrections(rows)
    assert [task.rating_anchored for task in back] == [row["rating_anchored"] for row in rows]
    # A file written before blind reviews has no flag: its ratings were pre-filled, so possibly anchored.
    legacy = [{k: v for k, v in row.items() if k != "rating_anchored"} for row in rows]
    assert all(task.rating_anchored for task in reviewed_from_corrections(legacy))


def test_calibration_states_how_many_pairs_are_possibly_anchored():
    agreeing = [rated(i, i % 5, i % 5, False) for i in range(40)]
    clean = judge_calibration(agreeing)
    assert (clean.n_pairs, clean.n_anchored, clean.warning) == (40, 0, None)
    flagged = judge_calibration(agreeing[:30] + [rated(100 + i, i % 5, i % 5, True) for i in range(10)])
    assert (flagged.n_pairs, flagged.n_anchored) == (40, 10)
    assert flagged.warning.startswith("10 of 40 rated pairs are possibly anchored")
    assert flagged.per_version["v1"]["anchored"] == 10


def test_export_flags_examples_whose_reviewer_rating_is_possibly_anchored(tmp_path: Path):
    tasks = [
        rated(1, 3, 4, True),  # accepted, rated by a reviewer who found the judge's level set
        rated(2, 3, 4, False),
        ReviewedTask(task_id=3, input_text="B: hi", llm_label="LLM 3.", llm_level=4, rating_anchored=False),
    ]
    tasks[1].input_text = "C: other"
    report = export_dataset(tasks, ExportOptions(out_dir=tmp_path / "out", validation_fraction=0))
    provenance = [json.loads(line) for line in report.provenance.read_text(encoding="utf-8").splitlines()]
    assert {row["task_id"]: row["rating_anchored"] for row in provenance} == {1: True, 2: False, 3: False}
    assert json.loads(report.manifest.read_text(encoding="utf-8"))["anchored_ratings"] == 1
    assert report.anchored_ratings == 1
    console = Console(width=200, record=True, color_system=None)
    console.print(export_table(report))
    text = " ".join(console.export_text().split())
    assert "1 exported examples carry a reviewer's rating that is possibly anchored" in text
