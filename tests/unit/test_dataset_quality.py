"""The quality statement that travels with an export (prelabel.quality.dataset): checked by simulation against a
pool of known truth, and in the manifest and dataset card that export writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prelabel.export.options import ExportOptions
from prelabel.export.selection import select_examples
from prelabel.export.writer import export_dataset
from prelabel.quality.dataset import dataset_quality, exported_origin, quality_by_round
from prelabel.quality.inputs import from_tasks
from prelabel.quality.report import build_report
from prelabel.records import ReviewedTask

GOOD = 3


def simulated_project(seed: int, n: int = 1500, reviews: tuple[int, ...] = (150,)) -> tuple[list[ReviewedTask], float]:
    """A project of `n` tasks labeled by the LLM and rated by a lenient, noisy judge; each round reviews a uniform
    random sample of the tasks not reviewed before (inclusion probability recorded as push records it). Returns
    the tasks and the true share of the examples export would write that a reviewer would rate at least good."""
    rng = np.random.default_rng(seed)
    truth = np.clip(np.round(rng.normal(2.8, 1.0, n)), 0, 4).astype(int)
    judge = np.clip(np.round(truth + 0.5 + rng.normal(0, 0.8, n)), 0, 4).astype(int)
    reviewed: dict[int, str] = {}
    pi: dict[int, float] = {}
    for number, size in enumerate(reviews, start=1):
        candidates = [i for i in range(n) if i not in reviewed]
        for i in rng.choice(candidates, size=size, replace=False):
            reviewed[int(i)] = f"round-{number}"
            pi[int(i)] = size / len(candidates)
    tasks = []
    for i in range(n):
        fields = dict(
            task_id=i + 1,
            source_id=f"s{i}",
            input_text=f"A: item {i}",
            llm_label=f"summary {i}",
            llm_level=int(judge[i]),
        )
        if i in reviewed:  # the reviewer rates the LLM label (a rating-only review) blind
            fields |= dict(annotation_id=10_000 + i, human_level=int(truth[i]), round=reviewed[i])
            fields["inclusion_probability"] = pi[i]
        tasks.append(ReviewedTask(**fields))
    exported = [(task, exported_origin(task, GOOD)) for task in tasks]
    good = sum(
        1
        for task, origin in exported
        if origin == "known" or (origin == "estimated" and truth[task.task_id - 1] >= GOOD)
    )
    return tasks, good / sum(1 for _, origin in exported if origin is not None)


def test_the_interval_covers_the_true_share_of_the_export():
    """200 projects of known truth: the 95% interval of the exported share covers the truth >= 93% of the time,
    although the lenient judge approved every estimated label."""
    covered = 0
    runs = 200
    for seed in range(runs):
        tasks, truth = simulated_project(seed)
        quality = dataset_quality(tasks, GOOD)
        share = quality.share_at_least
        assert share is not None and share.low <= share.estimate <= share.high
        assert 0 < share.high - share.low < 0.25  # about 100 reviews fall among the judge-approved labels
        covered += share.low <= truth <= share.high
    assert covered / runs >= 0.93, covered / runs


def test_the_export_counts_match_the_selection():
    tasks, _ = simulated_project(1)
    quality = dataset_quality(tasks, GOOD)
    examples, counts = select_examples(tasks, GOOD)
    assert quality.examples == len(examples) == counts.exported
    assert quality.known_good == sum(e.origin == "llm" and e.human_level is not None for e in examples) + counts.human


def test_the_interval_narrows_round_by_round():
    tasks, _ = simulated_project(3, reviews=(40, 200, 400))
    by_round = quality_by_round(tasks, GOOD)
    assert [name for name, _ in by_round] == ["round-1", "round-2", "round-3"]
    widths = [q.share_at_least.high - q.share_at_least.low for _, q in by_round if q.share_at_least]
    assert all(0.5 < q.unreviewed_share_at_least.estimate < 1 for _, q in by_round)
    assert len(widths) == 3 and widths[0] > widths[1] > widths[2]
    assert [q.n_reviews for _, q in by_round] == sorted(q.n_reviews for _, q in by_round)


def test_reviews_without_probabilities_are_not_guessed():
    tasks, _ = simulated_project(4)
    for task in tasks:
        task.inclusion_probability = None
    quality = dataset_quality(tasks, GOOD)
    assert quality.share_at_least is None and "inclusion_probability" in (quality.unavailable or "")
    assert "not estimated" in quality.statement()
    assumed = dataset_quality(tasks, GOOD, assume_random=True)
    assert assumed.share_at_least is not None


def test_every_example_reviewed_needs_no_estimate():
    tasks = [
        ReviewedTask(task_id=i, source_id=f"s{i}", input_text="A: hi", llm_label="x", human_label=f"y{i}",
                     annotation_id=i, human_level=4)
        for i in range(1, 6)
    ]  # fmt: skip
    quality = dataset_quality(tasks, GOOD)
    assert quality.estimated == 0 and quality.share_at_least is not None and quality.share_at_least.estimate == 1.0


def test_the_manifest_and_the_card_carry_the_statement(tmp_path):
    tasks, _ = simulated_project(5)
    report = export_dataset(tasks, ExportOptions(out_dir=tmp_path / "dataset", formats=["openai"]))
    manifest = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    quality = manifest["quality"]
    assert quality["share_at_least"]["low"] < quality["share_at_least"]["estimate"] < quality["share_at_least"]["high"]
    in_stratum = sum(1 for task in tasks if task.reviewed and task.llm_level >= GOOD)  # the reviews it rests on
    assert quality["n_reviews"] == in_stratum and "1/inclusion probability" in quality["method"]
    assert report.quality is not None and quality["statement"] == report.quality.statement()
    card = (tmp_path / "dataset" / "README.md").read_text()
    assert report.quality.statement() in card and f"{in_stratum} reviews" in card and "95% CI" in card
    assert "README.md" in manifest["files"]


@pytest.mark.parametrize("level", [0, 4])
def test_exported_origin_follows_the_selection_rules(level):
    unreviewed = ReviewedTask(task_id=1, input_text="A: hi", llm_label="x", llm_level=level)
    assert exported_origin(unreviewed, GOOD) == ("estimated" if level >= GOOD else None)
    rated = ReviewedTask(task_id=2, input_text="A: hi", llm_label="x", llm_level=4, annotation_id=1, human_level=level)
    assert exported_origin(rated, GOOD) == ("known" if level >= GOOD else None)


def test_reviews_without_spread_never_claim_certainty(tmp_path):
    """Every reviewed label at good or better (a small round): the interval stays open below, in the export's
    figure and in `prelabel quality`'s combined one."""
    tasks, _ = simulated_project(6, reviews=(12,))
    for task in tasks:
        if task.reviewed:
            task.human_level = 4
    quality = dataset_quality(tasks, GOOD)
    part = quality.unreviewed_share_at_least
    assert part is not None and part.estimate == 1.0 and part.low < 0.85
    for task in tasks:
        if task.reviewed:
            task.llm_level = 4
    labels, reviews = from_tasks(tasks)
    report = build_report(labels, reviews, GOOD)
    combined = report.share_at_least.combined
    assert combined is not None and combined.high - combined.low > 0 and "no spread" in combined.method


def test_a_partly_reviewed_round_is_named():
    """Reviews are taken as a random part of their round: a round left half done says so."""
    tasks, _ = simulated_project(7, reviews=(150,))
    drawn = [task for task in tasks if task.reviewed]
    for task in drawn[:50]:  # pushed in the round, not reviewed yet
        task.annotation_id, task.human_level = None, None
    quality = dataset_quality(tasks, GOOD)
    assert any("round-1: 100 of 150 pushed tasks reviewed" in warning for warning in quality.warnings)
    finished, _ = simulated_project(7, reviews=(150,))
    assert not any("pushed tasks reviewed" in warning for warning in dataset_quality(finished, GOOD).warnings)


def test_round_names_print_as_typed():
    """A round's name is task data: the round-by-round table shows it literally, never as terminal markup."""
    from rich.console import Console

    from prelabel.scripts.tables import quality_rounds_table

    tasks, _ = simulated_project(8, reviews=(30,))
    for task in tasks:
        if task.round is not None:
            task.round = "[red]round[/red]"
    console = Console(record=True, width=140)
    console.print(quality_rounds_table(quality_by_round(tasks, GOOD)))
    assert "[red]round[/red]" in console.export_text()


def test_a_level_off_the_scale_is_named_not_used():
    """A project's review read as level 7 (a hand-edited config) is left out and named, as in an export file."""
    tasks, _ = simulated_project(9)
    odd = next(task for task in tasks if task.reviewed)
    odd.human_level = 7
    labels, reviews = from_tasks(tasks)
    assert all(review.source_id != odd.source_id for review in reviews.reviews)
    assert any(f"task {odd.task_id}" in problem and "reviewer level" in problem for problem in reviews.problems)
