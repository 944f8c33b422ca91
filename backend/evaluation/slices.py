"""Subset analysis over a run: every version's items sliced by data fields and input features, plus what
reviewers did to an item (accepted or edited, edit distance) when reviews are given."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prelabel.evaluation.runs import load_items, load_run
from prelabel.records import ReviewContribution, ReviewedTask, review_contribution
from prelabel.review_stats import edit_distance
from prelabel.subsets import SliceReport, analyse

# The slice value of each review contribution (records.review_contribution, which pull and export share).
# An empty review leaves the item as if unreviewed, so it gets no value.
REVIEW_SLICE_VALUES: dict[ReviewContribution, str] = {
    "unchanged": "accepted",
    "edited": "edited",
    "rating_only": "rated only",
}


def review_values(review: ReviewedTask | None) -> dict[str, Any]:
    """What reviewers did to an item, as slice values (only for items a review contributed to)."""
    if review is None:
        return {}
    contribution = REVIEW_SLICE_VALUES.get(review_contribution(review))
    if contribution is None:
        return {}
    values: dict[str, Any] = {"reviewer edit": contribution}
    distance = edit_distance(review)
    if distance is not None:
        values["edit distance"] = round(distance, 4)
    return values


def slice_run(
    run_dir: Path,
    slice_fields: Sequence[str] = (),
    reviews: Sequence[ReviewedTask] = (),
    *,
    min_n: int = 5,
    n_worst: int = 5,
) -> dict[str, SliceReport]:
    run = load_run(run_dir)
    by_source = {r.source_id: r for r in reviews if r.source_id is not None and r.reviewed}
    extra_fields = ["reviewer edit"] if by_source else []
    reports = {}
    for name in run.versions:
        rows = [item.slice_row(review_values(by_source.get(item.source_id))) for item in load_items(run_dir, name)]
        reports[name] = analyse(name, rows, [*slice_fields, *extra_fields], min_n=min_n, n_worst=n_worst)
    return reports
