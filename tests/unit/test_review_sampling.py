"""Review routing: every design draws exactly the asked number of items, each with exactly the recorded inclusion
probability (checked against empirical frequencies over many seeds), and `uncertain` routing finds more
below-threshold labels than a random draw when the judge is informative."""

from __future__ import annotations

import json
import math
import random

import pytest
from typer.testing import CliRunner

from prelabel.judge import threshold_level
from prelabel.push import PoolItem, plan_round, read_labels
from prelabel.records import reviewed_task
from prelabel.review_sampling import (
    FLOOR_SHARE,
    Calibration,
    JudgeRating,
    RatingsMissing,
    allocate,
    calibration_from_reviews,
    capped_probabilities,
    draw_round,
    judge_probability,
    probability_at_least,
    systematic_sample,
)
from prelabel.review_stats import correction_row
from prelabel.scripts.cli import app
from prelabel.tasks_io import TaskFileError
from tests.unit.test_push_planning import SUMMARY


def mixed_ratings(count: int, seed: int = 0) -> list[JudgeRating | None]:
    """Mostly good and excellent levels, a few low ones, some G-Eval expectations, a few unrated."""
    rng = random.Random(seed)
    ratings: list[JudgeRating | None] = []
    for _ in range(count):
        if rng.random() < 0.1:
            ratings.append(None)
            continue
        level = rng.choices(range(5), [0.05, 0.08, 0.17, 0.3, 0.4])[0]
        expected = min(4.0, max(0.0, level + rng.uniform(-0.5, 0.5))) if rng.random() < 0.5 else None
        ratings.append(JudgeRating(level=level, expected_level=expected))
    return ratings


def empirical_frequencies(strategy: str, ratings: list[JudgeRating | None], size: int, draws: int) -> list[float]:
    counts = [0] * len(ratings)
    for seed in range(draws):
        draw = draw_round(strategy, ratings, len(ratings), size, seed)
        assert len(draw.chosen) == size and len(set(draw.chosen)) == size
        for index in draw.chosen:
            counts[index] += 1
    return [count / draws for count in counts]


# -- the probabilities ------------------------------------------------------------------------------------------


def test_capped_probabilities_sum_to_the_size_and_cap_the_heaviest_at_one():
    weights = [100.0, 50.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0]
    probabilities = capped_probabilities(weights, 4)
    assert sum(probabilities) == pytest.approx(4)
    assert probabilities[:2] == [1.0, 1.0]  # far above their share: certain, the rest rescaled
    rest = probabilities[2:]
    assert all(0 < p < 1 for p in rest)
    assert rest[2] == pytest.approx(2 * rest[0])  # proportional among the uncapped: weight 2 vs 1
    assert sum(rest) == pytest.approx(2)
    assert capped_probabilities([1.0, 2.0], 5) == [1.0, 1.0]
    with pytest.raises(ValueError):
        capped_probabilities([1.0, 0.0], 1)


def test_systematic_sampling_draws_exactly_the_size_with_the_given_probabilities():
    rng = random.Random(5)
    weights = [rng.random() ** 3 + 0.02 for _ in range(38)] + [6.0, 9.0]
    probabilities = capped_probabilities(weights, 12)
    assert any(p == 1.0 for p in probabilities) and min(probabilities) < 0.1
    counts = [0] * 40
    draws = 20000
    for _ in range(draws):
        chosen = systematic_sample(probabilities, rng)
        assert len(chosen) == 12 and len(set(chosen)) == 12
        for index in chosen:
            counts[index] += 1
    for count, p in zip(counts, probabilities):
        assert count / draws == pytest.approx(p, abs=4.5 * math.sqrt(p * (1 - p) / draws) + 1e-9)


@pytest.mark.parametrize("strategy", ["random", "uncertain", "stratified"])
def test_each_design_draws_exactly_n_with_its_recorded_probabilities(strategy):
    ratings = mixed_ratings(60)
    size = 15
    draw = draw_round(strategy, ratings, len(ratings), size, seed=1)
    assert draw.strategy == strategy
    assert all(0 < p <= 1 for p in draw.probabilities)
    assert sum(draw.probabilities) == pytest.approx(size)
    # Empirical inclusion frequencies over many seeds match the recorded probabilities: the design is the one
    # recorded (a design that drew by other probabilities fails here for the items that differ).
    draws = 4000
    observed = empirical_frequencies(strategy, ratings, size, draws)
    recorded = draw.probabilities  # the probabilities do not depend on the seed, only the draw does
    for seed in (2, 3):
        assert draw_round(strategy, ratings, len(ratings), size, seed).probabilities == recorded
    worst = max(abs(f - p) / math.sqrt(max(p * (1 - p), 1e-12) / draws) for f, p in zip(observed, recorded) if p < 1)
    assert worst < 4.5, f"an item's inclusion frequency is {worst:.1f} standard errors from its probability"
    if strategy == "random":
        assert set(recorded) == {size / len(ratings)}
    else:
        assert len(set(round(p, 9) for p in recorded)) > 1  # the design really favours some items


def test_a_seed_reproduces_the_draw_and_a_sample_of_everything_is_certain():
    ratings = mixed_ratings(30)
    first = draw_round("uncertain", ratings, 30, 8, seed=11)
    assert first.chosen == draw_round("uncertain", ratings, 30, 8, seed=11).chosen
    assert first.chosen != draw_round("uncertain", ratings, 30, 8, seed=12).chosen
    for strategy in ("random", "uncertain", "stratified"):
        everything = draw_round(strategy, ratings, 30, None, seed=1)
        assert sorted(everything.chosen) == list(range(30)) and set(everything.probabilities) == {1.0}
        assert sorted(draw_round(strategy, ratings, 30, 99, seed=1).chosen) == list(range(30))
        assert draw_round(strategy, ratings, 30, 0, seed=1).chosen == []


# -- stratified -------------------------------------------------------------------------------------------------


def test_stratified_allocation_over_samples_the_rare_levels():
    sizes = {"0": 10, "1": 40, "2": 90, "3": 360, "4": 490, "unrated": 10}
    allocation = allocate(sizes, 50)
    assert sum(allocation.values()) == 50
    assert all(1 <= allocation[name] <= sizes[name] for name in sizes)
    rates = {name: allocation[name] / sizes[name] for name in sizes}
    assert rates["0"] > rates["1"] > rates["2"] > rates["3"] >= rates["4"]  # rarer strata drawn more often
    # Roughly sqrt-proportional beyond the one each stratum gets first: 4 has sqrt(490/90) ~ 2.3 times 2's share.
    assert (allocation["4"] - 1) / (allocation["2"] - 1) == pytest.approx(math.sqrt(490 / 90), rel=0.25)
    # A small stratum is taken whole and its share goes to the others.
    capped = allocate({"0": 2, "3": 1000, "4": 1000}, 40)
    assert capped["0"] == 2 and capped["3"] + capped["4"] == 38
    with pytest.raises(ValueError, match="cannot reach the 3 judge levels present"):
        allocate({"0": 5, "3": 5, "4": 5}, 2)


def test_stratified_probabilities_are_the_stratum_shares():
    ratings = [JudgeRating(level=0)] * 5 + [JudgeRating(level=4)] * 95 + [None] * 10
    draw = draw_round("stratified", ratings, len(ratings), 20, seed=3)
    allocation = allocate({"0": 5, "4": 95, "unrated": 10}, 20)
    assert draw.probabilities[0] == allocation["0"] / 5
    assert draw.probabilities[50] == allocation["4"] / 95
    assert draw.probabilities[-1] == allocation["unrated"] / 10  # the unrated are a stratum of their own
    chosen_levels = [ratings[i].level if ratings[i] else None for i in draw.chosen]  # type: ignore[union-attr]
    assert chosen_levels.count(0) == allocation["0"] and chosen_levels.count(None) == allocation["unrated"]
    assert draw.probabilities[0] > draw.probabilities[50]


# -- uncertain --------------------------------------------------------------------------------------------------


def test_ratings_are_required_by_the_designs_that_draw_by_them():
    for strategy in ("uncertain", "stratified"):
        with pytest.raises(RatingsMissing, match=f"--strategy {strategy} needs .* --labels LABELED.jsonl"):
            draw_round(strategy, None, 10, 3, seed=1)
    assert len(draw_round("random", None, 10, 3, seed=1).chosen) == 3
    with pytest.raises(ValueError, match="unknown strategy 'smart'"):
        draw_round("smart", None, 10, 3, seed=1)


def test_the_command_refuses_routing_without_labels_before_anything_else(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"id": 1, "dialogue": "#A#: hi"}) + "\n")
    result = CliRunner().invoke(app, ["push", str(pool), "--sample", "1", "--strategy", "uncertain"])
    assert result.exit_code != 0
    assert "--labels" in result.output and "--strategy uncertain" in result.output


def test_unrated_candidates_get_the_floor_and_uncertain_labels_the_most():
    ratings: list[JudgeRating | None] = (
        [JudgeRating(level=4, expected_level=3.95)] * 50  # sure it is good
        + [JudgeRating(level=3, expected_level=2.6)] * 10  # unsure
        + [None] * 40  # unrated or failed
    )
    draw = draw_round("uncertain", ratings, 100, 10, seed=1)
    floor = FLOOR_SHARE * 10 / 100
    assert draw.probabilities[-1] == pytest.approx(floor)  # nothing known: the uniform floor alone
    assert min(draw.probabilities) == pytest.approx(floor)
    assert draw.probabilities[55] > 4 * draw.probabilities[0] > 4 * draw.probabilities[-1]
    assert draw.probabilities[55] == max(draw.probabilities)
    # The floor bounds every weight 1 / probability at 1 / (floor share) times the uniform one.
    assert max(1 / p for p in draw.probabilities) <= 100 / 10 / FLOOR_SHARE + 1e-9


def test_calibration_replaces_the_judges_own_probability_per_level():
    rating = JudgeRating(level=3)
    assert judge_probability(rating) > 0.8  # alone, a "good" is probably good
    lenient = calibration_from_reviews([(3, 1), (3, 2), (3, 4), (3, 3), (3, 1), (3, 2), (4, 4)], threshold=3)
    assert lenient.reviewed == {3: 6, 4: 1} and lenient.at_least == {3: 2, 4: 1} and lenient.n_reviews == 7
    calibrated = probability_at_least(rating, 3, lenient)
    assert calibrated == pytest.approx((2 + 2 * judge_probability(rating)) / (6 + 2))
    assert probability_at_least(JudgeRating(level=1), 3, lenient) == pytest.approx(
        judge_probability(JudgeRating(level=1))
    )  # a level no review saw keeps the judge's figure
    assert probability_at_least(None, 3, lenient) is None
    assert probability_at_least(rating, 4, lenient) == judge_probability(rating, 4)  # another threshold's reviews
    draw = draw_round("uncertain", [rating] * 5 + [JudgeRating(level=4)] * 5, 10, 3, seed=1, calibration=lenient)
    assert draw.basis == "calibrated by 7 earlier reviews"
    assert draw_round("uncertain", [rating] * 10, 10, 3, seed=1, calibration=Calibration(threshold=3)).basis == (
        "the judge's levels"
    )
    assert threshold_level("good") == 3 and threshold_level("2") == 2
    with pytest.raises(ValueError, match="threshold must be"):
        threshold_level("7")


def test_uncertain_routing_finds_more_bad_labels_than_random_when_the_judge_is_informative():
    """A pool of known truth: most labels good or excellent (as a working labeler's are), a judge that tracks
    the truth with noise and is lenient (half a level high on average), G-Eval expected levels. Per 20
    reviews, over many seeds, uncertain routing reaches at least 1.5 times the below-"good" labels random does."""
    found = {"random": 0, "uncertain": 0}
    seeds, size, count = 300, 20, 500
    for seed in range(seeds):
        rng = random.Random(seed)
        truth = rng.choices(range(5), [0.02, 0.04, 0.09, 0.25, 0.60], k=count)
        ratings: list[JudgeRating | None] = []
        for level in truth:
            expected = min(4.0, max(0.0, level + 0.4 + rng.gauss(0, 0.4)))
            ratings.append(JudgeRating(level=round(expected), expected_level=expected))
        for strategy in found:
            draw = draw_round(strategy, ratings, count, size, seed=seed)
            found[strategy] += sum(truth[i] < 3 for i in draw.chosen)
    per_20 = {strategy: total / seeds for strategy, total in found.items()}
    assert per_20["random"] == pytest.approx(20 * 0.15, rel=0.1)  # the base rate
    print(f"below-good labels per 20 reviews: {per_20}")
    assert per_20["uncertain"] >= 1.5 * per_20["random"], per_20


# -- the pool, the labels file, the records ---------------------------------------------------------------------


def test_plan_round_records_strategy_probabilities_and_the_unrated():
    pool = [PoolItem(source_id=f"s{i}", record={"text": str(i)}) for i in range(40)]
    ratings: dict[str, JudgeRating | None] = {f"s{i}": JudgeRating(level=i % 5) for i in range(30)}
    ratings["s3"] = None  # a line without a rating
    plan = plan_round(pool, {"s0", "s1"}, 10, seed=4, round_name="round-2", strategy="stratified", ratings=ratings)
    assert plan.strategy == "stratified" and plan.candidates == 38 and len(plan.items) == 10
    assert plan.unrated_candidates == 11  # s3 and the ten items without a line
    assert len(plan.probabilities) == 10 and all(0 < p <= 1 for p in plan.probabilities)
    assert not {"s0", "s1"} & {item.source_id for item in plan.items}
    random_plan = plan_round(pool, set(), 10, seed=4, round_name="round-1")
    assert random_plan.strategy == "random" and random_plan.probabilities == [0.25] * 10


def test_labels_file_lines_are_checked_and_a_cut_last_line_left_out(tmp_path):
    path = tmp_path / "labeled.jsonl"
    line = {"source_id": "a", "label": "x", "rating": "good", "level": 3, "score": 0.7, "reason": "ok"}
    path.write_text(json.dumps(line) + "\n" + json.dumps({**line, "source_id": "b"}) + "\n" + '{"source_id": "c", "la')
    records = read_labels(path)
    assert sorted(records) == ["a", "b"] and records["a"].score == 0.7
    path.write_text(json.dumps(line) + "\n" + json.dumps({"text": "a pool record"}) + "\n")
    with pytest.raises(TaskFileError, match=r"--labels .*labeled.jsonl line 2: not a line of `prelabel label` output"):
        read_labels(path)
    with pytest.raises(TaskFileError, match="--labels .*missing.jsonl"):
        read_labels(tmp_path / "missing.jsonl")


def ls_task(data: dict) -> dict:
    return {
        "id": 7,
        "data": {"dialogue": [{"author": "A", "text": "hi"}], **data},
        "annotations": [],
        "predictions": [],
    }


def test_reviewed_tasks_read_the_probability_and_strategy_and_name_bad_values():
    good = reviewed_task(
        SUMMARY,
        ls_task({"prelabel_inclusion_probability": 0.125, "prelabel_strategy": "uncertain", "prelabel_round": "r-2"}),
    )
    assert (good.inclusion_probability, good.strategy, good.round, good.problems) == (0.125, "uncertain", "r-2", [])
    row = correction_row(good)
    assert (row["round"], row["inclusion_probability"], row["strategy"]) == ("r-2", 0.125, "uncertain")
    assert reviewed_task(SUMMARY, ls_task({"prelabel_inclusion_probability": "1"})).inclusion_probability == 1.0
    old = reviewed_task(SUMMARY, ls_task({}))
    assert (old.inclusion_probability, old.strategy, old.problems) == (None, None, [])
    for bad in (0, 1.5, -0.2, "often", True, float("nan"), [0.5]):
        record = reviewed_task(SUMMARY, ls_task({"prelabel_inclusion_probability": bad, "prelabel_strategy": "best"}))
        assert record.inclusion_probability is None and record.strategy is None
        assert any("task 7 data.prelabel_inclusion_probability" in p for p in record.problems), record.problems
        assert any("task 7 data.prelabel_strategy: 'best'" in p for p in record.problems)
