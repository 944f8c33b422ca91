"""Subset analysis: quantile buckets, categories, and the worst slices."""

from __future__ import annotations

import numpy as np
import pytest

from prelabel.evaluation.slices import review_values
from prelabel.records import ReviewedTask
from prelabel.subsets import SliceRow, analyse, bucket_edges, bucket_index, slice_category, slice_numeric


def rows_with(values: list[dict], levels: list[int | None]) -> list[SliceRow]:
    return [
        SliceRow(source_id=f"s{i}", level=level, values=v, input_preview=f"input {i}")
        for i, (v, level) in enumerate(zip(values, levels))
    ]


def test_bucket_edges_are_numpy_quantiles_and_cover_every_value():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0]
    edges = bucket_edges(values, 4)
    assert edges == pytest.approx(sorted(set(np.quantile(values, [0, 0.25, 0.5, 0.75, 1.0]))))
    for value in values:
        i = bucket_index(value, edges)
        assert edges[i] <= value <= edges[i + 1]
    assert bucket_index(max(values), edges) == len(edges) - 2  # the last bucket is closed
    assert bucket_edges([7.0, 7.0, 7.0], 4) == [7.0]
    assert bucket_index(7.0, [7.0]) == 0


def test_numeric_slices_by_hand():
    chars = [100, 200, 300, 400, 500, 600, 700, 800]
    levels = [4, 4, 3, 3, 2, 2, 1, 0]
    slices = slice_numeric(rows_with([{"chars": c} for c in chars], levels), "chars", n_buckets=4)
    # Quartile edges of 100..800: 100, 275, 450, 625, 800.
    assert [s.value for s in slices] == ["[100, 275)", "[275, 450)", "[450, 625)", "[625, 800]"]
    assert [s.n for s in slices] == [2, 2, 2, 2]
    assert [s.mean_level for s in slices] == [4.0, 3.0, 2.0, 0.5]
    assert [s.share_good for s in slices] == [1.0, 1.0, 0.0, 0.0]
    assert slices[-1].examples[0].source_id == "s7" and slices[-1].examples[0].rating == "very bad"


def test_few_distinct_values_get_one_slice_each():
    slices = slice_numeric(rows_with([{"turns": t} for t in [2, 2, 3, 3, 3]], [4, 4, 1, 1, 2]), "turns")
    assert [(s.value, s.n, s.mean_level) for s in slices] == [("2", 2, 4.0), ("3", 3, pytest.approx(4 / 3))]


def test_category_slices_count_unrated_and_order_by_size():
    rows = rows_with([{"topic": "a"}, {"topic": "b"}, {"topic": "a"}, {"topic": None}, {}], [4, 1, None, 2, 3])
    slices = slice_category(rows, "topic")
    assert [(s.value, s.n, s.n_rated, s.mean_level) for s in slices] == [
        ("a", 2, 1, 4.0),
        ("(none)", 1, 1, 2.0),
        ("b", 1, 1, 1.0),
    ]


def test_analyse_finds_the_worst_slice_and_ignores_small_or_above_average_ones():
    values, levels = [], []
    for i in range(40):
        long = i >= 30
        values.append({"chars": 1000 + i if long else 100 + i, "turns": 4, "topic": "rare" if i == 0 else "common"})
        levels.append(1 if long else 3)
    levels[0] = 0  # a single very bad item in a one-item topic: too small to be a worst slice
    report = analyse("v1", rows_with(values, levels), ["topic"], min_n=5)
    assert report.n_rated == 40 and report.overall_mean == pytest.approx(sum(levels) / 40)
    assert report.worst[0].feature == "chars" and report.worst[0].mean_level == 1.0
    assert report.worst[0].n_rated == 10
    assert all(s.mean_level < report.overall_mean for s in report.worst)
    assert all(s.value != "rare" for s in report.worst)
    assert "turns" in report.features and len(report.features["turns"]) == 1  # one value: not a worst slice
    assert all(s.feature != "turns" for s in report.worst)


def test_string_field_is_a_category_and_numbers_are_bucketed():
    rows = rows_with([{"score": x, "kind": str(x)} for x in range(10)], [x % 5 for x in range(10)])
    report = analyse("v", rows, ["score", "kind"], numeric_features=())
    assert {s.kind for s in report.features["score"]} == {"numeric"}
    assert {s.kind for s in report.features["kind"]} == {"category"}
    assert len(report.features["kind"]) == 10


def _review(human_label: str | None, human_level: int | None, annotation_id: int | None = 7) -> ReviewedTask:
    return ReviewedTask(
        task_id=1,
        source_id="a",
        input_text="A: hi",
        llm_label="They greet.",
        llm_level=3,
        human_label=human_label,
        human_level=human_level,
        annotation_id=annotation_id,
    )


def test_reviewer_edit_slice_follows_what_the_review_contributed():
    # The same contribution rule as pull and export: a rating-only review is not an edit, an empty one is
    # as if unreviewed, and only a label of the reviewer's own is "edited".
    assert review_values(_review("They greet.", 3))["reviewer edit"] == "accepted"
    assert review_values(_review("They say hello.", 3))["reviewer edit"] == "edited"
    assert review_values(_review(None, 1)) == {"reviewer edit": "rated only"}
    assert review_values(_review(None, None)) == {}
    assert review_values(_review(None, None, annotation_id=None)) == {}
    assert review_values(None) == {}


def test_mean_interval_covers_the_true_mean_at_its_level_by_simulation():
    # A known distribution of judge levels (true mean 2.45); 2,000 samples of 30: the 95% interval holds the
    # true mean in about 95% of them (three standard errors of the estimate is +-0.015).
    from prelabel.metrics import mean_interval

    probabilities = [0.1, 0.15, 0.2, 0.25, 0.3]
    truth = sum(level * p for level, p in enumerate(probabilities))
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        sample = rng.choice(5, size=30, p=probabilities).tolist()
        interval = mean_interval(sample)
        covered += interval.low <= truth <= interval.high
    assert 0.935 <= covered / 2000 <= 0.965
    assert mean_interval([3]) is None
    assert mean_interval([2, 2, 2]) == (2.0, 2.0, 2.0, 3, 0.95)


def _two_topics(rng: np.random.Generator, n: int, shift: float) -> list[SliceRow]:
    base = [0.05, 0.15, 0.3, 0.3, 0.2]
    worse = [0.3, 0.3, 0.2, 0.15, 0.05] if shift else base
    rows = [SliceRow(source_id=f"a{i}", level=int(rng.choice(5, p=base)), values={"topic": "a"}) for i in range(n)]
    rows += [SliceRow(source_id=f"b{i}", level=int(rng.choice(5, p=worse)), values={"topic": "b"}) for i in range(n)]
    return rows


def test_worst_slices_flag_noise_and_find_real_differences_by_simulation():
    rng = np.random.default_rng(1)
    runs = 400
    # No real difference: the worse-looking topic is flagged as possibly noise almost always.
    false_alarms = 0
    for _ in range(runs):
        report = analyse("v", _two_topics(rng, 40, 0.0), ["topic"], numeric_features=())
        false_alarms += bool(report.worst) and not report.worst[0].may_be_noise
    assert false_alarms / runs <= 0.07  # a 5% test; 400 runs give +-1.1% of noise
    # Topic b is really worse (mean 1.4 against 2.45): it is found and not flagged.
    found = 0
    for _ in range(runs):
        report = analyse("v", _two_topics(rng, 40, 1.0), ["topic"], numeric_features=())
        found += bool(report.worst) and report.worst[0].value == "b" and not report.worst[0].may_be_noise
    assert found / runs >= 0.95


def test_worst_slices_rank_by_the_upper_end_of_the_interval():
    # A 5-item slice that is very bad by its mean but uncertain ranks after a 60-item slice that is surely bad.
    rows = [SliceRow(source_id=f"s{i}", level=1 + i % 2, values={"kind": "large"}) for i in range(60)]
    rows += [SliceRow(source_id=f"t{i}", level=[0, 0, 4, 0, 1][i], values={"kind": "small"}) for i in range(5)]
    rows += [SliceRow(source_id=f"u{i}", level=4 - i % 2, values={"kind": "rest"}) for i in range(100)]
    report = analyse("v", rows, ["kind"], numeric_features=())
    assert [s.value for s in report.worst] == ["large", "small"]
    assert report.worst[0].mean_level > report.worst[1].mean_level  # not by the raw mean
    assert report.worst[1].may_be_noise is False or report.worst[1].mean_high >= report.worst[0].mean_high
