"""backend.review_stats on hand-built records, every number worked out by hand in the comments."""

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from prelabel.records import ReviewedTask
from prelabel.review_stats import (
    PullReport,
    pull_report,
    task_link,
    version_stats,
    worst_cases,
    write_corrections_jsonl,
)
from prelabel.scripts.tables import review_versions_table, worst_cases_table

approx = pytest.approx


def task(
    task_id: int,
    version: str | None,
    llm: str | None,
    human: str | None,
    judge: int | None,
    reviewer: int | None,
    reviewed: bool = True,
) -> ReviewedTask:
    return ReviewedTask(
        task_id=task_id,
        source_id=f"src-{task_id}",
        input_text=f"A: input {task_id}\nB: ok",
        llm_label=llm,
        llm_level=judge,
        model_version=version,
        prediction_id=100 + task_id if llm is not None else None,
        human_label=human,
        human_level=reviewer,
        annotation_id=200 + task_id if reviewed else None,
    )


def records() -> list[ReviewedTask]:
    return [
        # v1: three reviewed, one not
        task(1, "v1", "the cat sat on the mat", "the cat sat on the mat", 4, 4),  # accepted; dist 0, ROUGE-L 1
        task(2, "v1", "kitten", "sitting", 3, 1),  # dist 3/7, ROUGE-L 0, gap 2
        task(3, "v1", "abc", "abd", 2, None),  # dist 1/3, ROUGE-L 0, reviewer gave no rating
        task(4, "v1", "foo", None, 0, None, reviewed=False),
        # v2: four reviewed, one not
        task(5, "v2", "the cat sat on the mat", "the cat is on the mat", 4, 3),  # dist 3/22, ROUGE-L 5/6, gap 1
        task(6, "v2", "hello world", "hello world  ", 3, 3),  # accepted (whitespace only); dist 0, ROUGE-L 1
        task(7, "v2", "ab", "cd", 4, 0),  # dist 1, ROUGE-L 0, gap 4
        task(8, "v2", "unseen", None, 1, None, reviewed=False),
        task(9, "v2", "xyz", "xyw", 4, 1),  # dist 1/3 (ties task 3), ROUGE-L 0, gap 3
        # reviewed without any prediction: no version, no LLM label, no judge level
        task(10, None, None, "written by hand", None, 2),
    ]


def test_groups_by_version_and_counts_only_reviewed_tasks():
    report = pull_report(records())
    assert (report.n_tasks, report.n_reviewed) == (10, 8)
    assert [v.model_version for v in report.versions] == ["v1", "v2", None]  # no version sorts last
    assert [v.n_reviewed for v in report.versions] == [3, 4, 1]


def test_version_one_by_hand():
    v1 = pull_report(records()).versions[0]
    assert (v1.n_reviewed, v1.accepted_unchanged, v1.edited, v1.n_label_pairs) == (3, 1, 2, 3)
    assert v1.accepted_share == approx(1 / 3)
    assert v1.mean_edit_distance == approx((0 + 3 / 7 + 1 / 3) / 3)  # = 16/63
    assert v1.mean_edit_distance == approx(16 / 63)
    assert v1.mean_rouge_l_f1 == approx(1 / 3)  # (1 + 0 + 0) / 3
    # rating pairs: task 1 (4, 4) and task 2 (3, 1); task 3 has no reviewer level
    assert v1.n_rating_pairs == 2
    assert v1.exact_agreement == approx(1 / 2)
    assert v1.within_one_agreement == approx(1 / 2)
    # observed mean squared gap (0 + 4) / 2 = 2; marginals judge {3: 1, 4: 1}, reviewer {1: 1, 4: 1}
    # expected = ((3-1)^2 + (3-4)^2 + (4-1)^2 + 0) / 4 = 14/4 = 3.5; kappa = 1 - 2/3.5 = 3/7
    assert v1.kappa == approx(3 / 7)
    assert v1.spearman == approx(1.0)  # two pairs in the same order
    assert (v1.mean_judge_level, v1.mean_reviewer_level) == approx((3.5, 2.5))
    assert v1.accuracy is None and v1.macro_f1 is None  # summarization


def test_version_two_by_hand():
    v2 = pull_report(records()).versions[1]
    assert (v2.n_reviewed, v2.accepted_unchanged, v2.edited, v2.n_label_pairs) == (4, 1, 3, 4)
    assert v2.accepted_share == approx(1 / 4)
    # (3/22 + 0 + 1 + 1/3) / 4 = (9 + 66 + 22) / 66 / 4 = 97/264
    assert v2.mean_edit_distance == approx(97 / 264)
    assert v2.mean_rouge_l_f1 == approx((5 / 6 + 1 + 0 + 0) / 4)  # = 11/24
    # judge [4, 3, 4, 4], reviewer [3, 3, 0, 1]
    assert v2.n_rating_pairs == 4
    assert v2.exact_agreement == approx(1 / 4)  # task 6
    assert v2.within_one_agreement == approx(2 / 4)  # tasks 5, 6
    # observed (1 + 0 + 16 + 9) / 4 = 6.5; marginals judge {3: 1, 4: 3}, reviewer {0: 1, 1: 1, 3: 2}
    # expected = (1*(9 + 4 + 0) + 3*(16 + 9 + 2*1)) / 16 = (13 + 81) / 16 = 94/16
    # kappa = 1 - 6.5 / (94/16) = 1 - 104/94 = -5/47
    assert v2.kappa == approx(-5 / 47)
    # ranks judge [3, 1, 3, 3], reviewer [3.5, 3.5, 1, 2]; deviations from 2.5:
    # [.5, -1.5, .5, .5] and [1, 1, -1.5, -.5]; sxy = -2, sxx = 3, syy = 4.5 -> rho = -2 / sqrt(13.5)
    assert v2.spearman == approx(-2 / math.sqrt(13.5))
    assert (v2.mean_judge_level, v2.mean_reviewer_level) == approx((15 / 4, 7 / 4))


def test_reviewed_without_prediction():
    none = pull_report(records()).versions[2]
    assert none.model_version is None
    assert (none.n_reviewed, none.accepted_unchanged, none.edited, none.n_label_pairs, none.n_rating_pairs) == (
        1,
        0,
        1,
        0,
        0,
    )
    assert none.accepted_share == 0.0
    for value in (none.mean_edit_distance, none.mean_rouge_l_f1, none.exact_agreement, none.kappa, none.spearman):
        assert value is None


def test_overall_by_hand():
    overall = pull_report(records()).overall
    assert overall is not None and overall.model_version is None
    assert (overall.n_reviewed, overall.accepted_unchanged, overall.edited, overall.n_label_pairs) == (8, 2, 6, 7)
    assert overall.accepted_share == approx(2 / 8)
    # (3 * 16/63 + 4 * 97/264) / 7 = (16/21 + 97/66) / 7 = 1031/3234
    assert overall.mean_edit_distance == approx(1031 / 3234)
    assert overall.mean_rouge_l_f1 == approx(17 / 42)  # (1 + 11/6) / 7
    # judge [4, 3, 4, 3, 4, 4], reviewer [4, 1, 3, 3, 0, 1]
    assert overall.n_rating_pairs == 6
    assert overall.exact_agreement == approx(2 / 6)
    assert overall.within_one_agreement == approx(3 / 6)
    # observed (0 + 4 + 1 + 0 + 16 + 9) / 6 = 5; marginals judge {3: 2, 4: 4}, reviewer {0: 1, 1: 2, 3: 2, 4: 1}
    # expected = (2*(9 + 2*4 + 0 + 1) + 4*(16 + 2*9 + 2*1 + 0)) / 36 = (36 + 144) / 36 = 5 -> kappa 0
    assert overall.kappa == approx(0.0, abs=1e-12)
    # ranks judge [4.5, 1.5, 4.5, 1.5, 4.5, 4.5], reviewer [6, 2.5, 4.5, 4.5, 1, 2.5]; sxy = 0
    assert overall.spearman == approx(0.0, abs=1e-12)
    assert (overall.mean_judge_level, overall.mean_reviewer_level) == approx((22 / 6, 2.0))


def test_reviews_without_a_label_are_not_edits(tmp_path: Path):
    tasks = [
        task(1, "v1", "the llm label", None, 3, 1),  # rated the LLM label, wrote nothing
        task(2, "v1", "the llm label", "", 3, None),  # submitted an empty text
        task(3, "v1", "the llm label", "  \n ", 2, None),  # whitespace only
        task(4, "v1", "the llm label", "the llm label", 3, 3),  # accepted
        task(5, "v1", "the llm label", "a new label", 3, 2),  # edited
    ]
    v1 = version_stats("v1", tasks)
    assert (v1.n_reviewed, v1.accepted_unchanged, v1.edited, v1.rating_only, v1.empty) == (5, 1, 1, 1, 2)
    assert v1.n_label_pairs == 2  # tasks 4 and 5; an empty text is not a rewrite to distance 1
    assert v1.mean_edit_distance == approx((0 + 6 / 13) / 2)  # task 5: 6 edits over 13 characters
    assert v1.n_rating_pairs == 3  # tasks 1, 4 and 5
    assert [c.task_id for c in worst_cases(tasks)] == [5, 4]
    path = tmp_path / "corrections.jsonl"
    write_corrections_jsonl(tasks, path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["review"] for row in rows] == ["rating_only", "empty", "empty", "unchanged", "edited"]
    assert [row["edit_distance"] for row in rows[:3]] == [None, None, None]
    assert [row["accepted_unchanged"] for row in rows] == [False, False, False, True, False]


def test_worst_cases_order_and_links():
    report = pull_report(records(), ls_url="http://ls.local:8080/", project_id=7, worst_limit=5)
    # distances: 7 -> 1, 2 -> 3/7, 9 and 3 -> 1/3 (9 first: gap 3 beats no gap), 5 -> 3/22; 1 and 6 (0) cut
    assert [c.task_id for c in report.worst_cases] == [7, 2, 9, 3, 5]
    first = report.worst_cases[0]
    assert first.model_dump() == {
        "task_id": 7,
        "source_id": "src-7",
        "model_version": "v2",
        "edit_distance": 1.0,
        "judge_level": 4,
        "reviewer_level": 0,
        "level_gap": 4,
        "link": "http://ls.local:8080/projects/7/data?task=7",
    }
    assert report.worst_cases[3].level_gap is None
    assert report.worst_cases[4].edit_distance == approx(3 / 22)


def test_worst_cases_ties_and_limits():
    tied = [
        task(1, "v", "aa", "ab", 2, 2),  # dist 1/2, gap 0
        task(2, "v", "aa", "ba", 4, 1),  # dist 1/2, gap 3
        task(3, "v", "aa", "ac", 3, 2),  # dist 1/2, gap 1
        task(4, "v", "aa", "ad", 3, 2),  # same as 3: lower task id first
        task(5, "v", "aa", "zz", 1, 1, reviewed=False),  # never counted
    ]
    assert [c.task_id for c in worst_cases(tied)] == [2, 3, 4, 1]
    assert worst_cases(tied, limit=0) == []
    assert all(c.link is None for c in worst_cases(tied))  # no URL given
    assert task_link("http://h", None, 1) is None
    assert task_link("http://h/", "3", 9) == "http://h/projects/3/data?task=9"


def test_classification_accuracy_and_macro_f1():
    sentiment = [
        task(1, "c1", "positive", "positive", 4, 4),
        task(2, "c1", "negative", "positive", 4, 1),
        task(3, "c1", "positive", " negative", 3, 1),
        task(4, "c1", "negative", "negative", 4, 4),
        task(5, "c1", "positive", None, 4, None, reviewed=False),
    ]
    stats = pull_report(sentiment, kind="classification").versions[0]
    # 2 of 4 right; positive: tp 1 of 2 predicted, 2 true -> F1 1/2; negative the same -> macro 1/2
    assert stats.accuracy == approx(0.5)
    assert stats.macro_f1 == approx(0.5)
    # a declared class nobody used (neutral) scores 0 and pulls the macro mean down: (1/2 + 1/2 + 0) / 3
    with_neutral = version_stats("c1", sentiment, "classification", ["negative", "neutral", "positive"])
    assert with_neutral.macro_f1 == approx(1 / 3)
    assert with_neutral.accuracy == approx(0.5)


def test_empty_and_unreviewed_only():
    empty = pull_report([])
    assert (empty.n_tasks, empty.n_reviewed, empty.versions, empty.overall, empty.worst_cases) == (0, 0, [], None, [])
    unreviewed = pull_report([task(1, "v1", "x", None, 3, None, reviewed=False)])
    assert (unreviewed.n_tasks, unreviewed.n_reviewed, unreviewed.versions) == (1, 0, [])


def test_to_dict_is_plain_json():
    report = pull_report(records(), ls_url="http://ls", project_id=1)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["versions"][0]["model_version"] == "v1"
    assert PullReport.model_validate(data) == report


def test_corrections_jsonl(tmp_path: Path):
    path = tmp_path / "out" / "corrections.jsonl"
    assert write_corrections_jsonl(records(), path) == 8
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["task_id"] for r in rows] == [1, 2, 3, 5, 6, 7, 9, 10]
    assert rows[1] == {
        "task_id": 2,
        "source_id": "src-2",
        "model_version": "v1",
        "input": "A: input 2\nB: ok",
        "llm_label": "kitten",
        "corrected_label": "sitting",
        "judge_level": 3,
        "judge_rating": "good",
        "reviewer_level": 1,
        "reviewer_rating": "bad",
        "review": "edited",
        "accepted_unchanged": False,
        "edit_distance": approx(3 / 7),
        "round": None,
        "inclusion_probability": None,
        "strategy": None,
        "rating_anchored": False,
    }
    assert rows[4]["accepted_unchanged"] is True and rows[4]["edit_distance"] == 0.0  # task 6
    assert rows[2]["reviewer_rating"] is None  # task 3: no reviewer rating
    assert rows[-1]["llm_label"] is None and rows[-1]["edit_distance"] is None  # task 10
    assert [p.name for p in path.parent.iterdir()] == ["corrections.jsonl"]  # no temp file left


def test_corrections_jsonl_keeps_the_old_file_on_failure(tmp_path: Path):
    path = tmp_path / "corrections.jsonl"
    path.write_text("previous\n", encoding="utf-8")

    def failing():
        yield records()[0]
        raise RuntimeError("export interrupted")

    with pytest.raises(RuntimeError):
        write_corrections_jsonl(failing(), path)
    assert path.read_text(encoding="utf-8") == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["corrections.jsonl"]


def test_non_ascii_labels_are_written_as_text(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    write_corrections_jsonl([task(1, "v", "Grüße", "Grüße!", 3, 3)], path)
    assert "Grüße!" in path.read_text(encoding="utf-8")


def _render(table) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(table)
    return console.export_text()


def test_versions_table():
    text = _render(review_versions_table(pull_report(records())))
    assert "Reviewed 8 of 10 tasks" in text
    lines = text.splitlines()
    v1 = next(line for line in lines if line.lstrip().startswith("v1"))
    # reviewed, accepted (share), edited, no label, edit distance, ROUGE-L, rated, exact, within one, kappa, rho
    assert v1.split() == ["v1", "3", "1", "(33%)", "2", "0", "0.25", "0.33", "2", "50%", "50%", "0.43", "1.00"]
    assert any(line.lstrip().startswith("all") for line in lines)  # several versions: a total row
    assert "accuracy" not in text


def test_classification_table_and_single_version():
    sentiment = [task(1, "c1", "positive", "positive", 4, 4), task(2, "c1", "negative", "positive", 4, 1)]
    text = _render(review_versions_table(pull_report(sentiment, kind="classification")))
    assert "accuracy" in text and "ROUGE-L" not in text
    assert not any(line.lstrip().startswith("all") for line in text.splitlines())


def test_worst_cases_table():
    report = pull_report(records(), ls_url="http://ls", project_id=3, worst_limit=2)
    text = _render(worst_cases_table(report.worst_cases))
    assert "http://ls/projects/3/data?task=7" in text
    assert "4 excellent" in text and "0 very bad" in text
    assert "link" not in _render(worst_cases_table(worst_cases(records(), limit=2)))


def test_exported_results_of_the_wrong_shape_are_left_out_and_named():
    from prelabel import label_config
    from prelabel.label_interface import parse_label_config
    from prelabel.records import result_problems, reviewed_tasks

    config = parse_label_config(label_config.read("summarization"))
    good = [{"from_name": "summary", "to_name": "dialogue", "type": "textarea", "value": {"text": ["Fine."]}}]
    export = [
        {
            "id": 11,
            "data": {"dialogue": [{"author": "A", "text": "hi"}]},
            "predictions": [{"id": 3, "result": good, "model_version": "v1"}],
            # A hand-edited export: the reviewer's result holds a string where the value object belongs.
            "annotations": [{"id": 5, "result": [{"from_name": "summary", "value": "Mine."}]}],
        },
        {"id": 12, "data": "not an object", "predictions": ["not an object"], "annotations": None},
    ]
    records = reviewed_tasks(config, export)
    assert records[0].llm_label == "Fine." and records[0].model_version == "v1"
    assert not records[0].reviewed  # the unreadable annotation is not taken as a review
    problems = result_problems(records)
    assert problems[0].startswith("task 11 annotation 5.result[0].value")
    assert problems[1] == "task 12 prediction: not an object"
    assert len(problems) == 2
