"""The quality of what `export` writes, from a Label Studio project's tasks: the statement that travels with the
dataset (manifest and dataset card) and that `pull` prints round by round.

An exported example is either a reviewer's label (edited or accepted) or an LLM label: one a reviewer rated at
least the threshold without editing, or, on an unreviewed task, one the judge rated at least the threshold.
Reviewers' labels, and LLM labels a reviewer rated at least the threshold, count as meeting it. What is unknown
is the share of the unreviewed LLM labels a reviewer would rate at least the threshold. It is estimated over
the stratum the export draws them from (every task whose LLM label the judge rated at least the threshold),
with the reviews that fell in it, by `build_report` (prediction-powered, weighted by inclusion probability); the
stratum's figure becomes the unreviewed part's by taking out the reviewed tasks, whose values are known:
p_unreviewed = (N_s * p_s - reviewed at least the threshold) / unreviewed, interval ends alike (a linear map).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from prelabel.judge import LEVELS
from prelabel.quality.inputs import QualityInputError, from_tasks, round_order
from prelabel.quality.report import REVIEWED_METHOD, build_report
from prelabel.quality.stats import Interval
from prelabel.records import ReviewedTask, dataset_label, review_contribution

ASSUMPTION = (
    "reviewers' labels, and LLM labels a reviewer rated at least the threshold, count as meeting it; the share "
    "of the other LLM labels is estimated from the judge's ratings of all of them and the reviews among them"
)


class DatasetQuality(BaseModel):
    """The share of exported examples a reviewer would rate at least `threshold`, with a 95% interval."""

    threshold: int
    threshold_name: str
    examples: int
    known_good: int  # reviewers' labels and LLM labels a reviewer rated at least the threshold
    estimated: int  # unreviewed LLM labels, whose share is estimated
    share_at_least: Interval | None = None  # over every exported example
    unreviewed_share_at_least: Interval | None = None  # over the unreviewed LLM labels
    method: str | None = None
    n_reviews: int = 0  # reviews used (of tasks in the stratum)
    rounds: list[str] = []
    assumption: str = ASSUMPTION
    unavailable: str | None = None  # why there is no interval
    warnings: list[str] = []

    def statement(self) -> str:
        """One sentence a user can quote."""
        share = self.share_at_least
        if share is None:
            return f"quality of the {self.examples:,} examples: not estimated ({self.unavailable})"
        return (
            f"of the {self.examples:,} examples, {share.estimate:.1%} (95% CI {share.low:.1%}-{share.high:.1%}) "
            f"would be rated {self.threshold_name} or better by a reviewer ({self.n_reviews:,} reviews; "
            f"{self.known_good:,} reviewed, {self.estimated:,} estimated)"
        )


def exported_origin(task: ReviewedTask, threshold: int) -> str | None:
    """How export treats the task: "known" (a reviewer's label, or an LLM label a reviewer rated at least the
    threshold), "estimated" (an unreviewed LLM label the judge rated at least the threshold) or None (not
    exported), by export's own rule (`records.dataset_label`; its later duplicate and empty-input checks aside)."""
    choice = dataset_label(task, threshold)
    if isinstance(choice, str):
        return None
    if choice[1] == "human" or review_contribution(task) == "rating_only":
        return "known"
    return "estimated"


def dataset_quality(
    tasks: Sequence[ReviewedTask],
    threshold: int,
    *,
    assume_random: bool = False,
) -> DatasetQuality:
    """The quality of the examples export would write from `tasks`."""
    origins = [exported_origin(task, threshold) for task in tasks]
    known = origins.count("known")
    estimated = origins.count("estimated")
    result = DatasetQuality(
        threshold=threshold,
        threshold_name=LEVELS[threshold],
        examples=known + estimated,
        known_good=known,
        estimated=estimated,
    )
    if estimated == 0:  # every example was reviewed: nothing to estimate
        if result.examples:
            result.share_at_least = Interval(estimate=1.0, low=1.0, high=1.0)
            result.method = "every example reviewed"
        else:
            result.unavailable = "no example to export"
        return result
    labels, reviews = from_tasks(tasks, min_judge_level=threshold)
    if not reviews.reviews:
        result.unavailable = "no reviewer rated an LLM label the judge rated at least the threshold"
        return result
    partial = partly_reviewed_rounds(tasks)
    try:
        report = build_report(labels, reviews, threshold, assume_random=assume_random)
    except QualityInputError as error:
        result.unavailable = str(error)
        return result
    # Every label of the stratum is one the judge rated at least the threshold: its "at least the threshold"
    # is the same for all, so it cannot narrow the share (prediction-powered inference would only add noise),
    # and the reviews' own interval (Wilson on their effective number) is the one that holds at small n.
    combined = report.share_at_least.reviewed_only
    result.n_reviews = report.n_reviewed
    result.rounds = [str(r.name) for r in report.rounds if r.used]
    result.warnings = report.warnings + partial
    if combined is None:
        result.unavailable = "too few reviews in the judge-approved labels for an interval"
        return result
    result.method = (
        f"{REVIEWED_METHOD}, over the labels the judge approved; Wilson interval on the reviews' effective number"
    )
    stratum = len(labels.items)
    reviewed_good = sum(1 for review in reviews.reviews if (review.reviewer_level or 0) >= threshold)
    unreviewed = stratum - report.n_reviewed

    def unreviewed_share(value: float) -> float:
        if unreviewed <= 0:
            return value
        return min(1.0, max(0.0, (stratum * value - reviewed_good) / unreviewed))

    part = Interval(
        estimate=unreviewed_share(combined.estimate),
        low=unreviewed_share(combined.low),
        high=unreviewed_share(combined.high),
    )
    result.unreviewed_share_at_least = part

    def overall(value: float) -> float:
        return (known + estimated * value) / result.examples

    result.share_at_least = Interval(estimate=overall(part.estimate), low=overall(part.low), high=overall(part.high))
    return result


def partly_reviewed_rounds(tasks: Sequence[ReviewedTask]) -> list[str]:
    """A warning per pushed round whose tasks were not all reviewed: the estimates take the reviewed ones as a
    random part of the round, which reviewing in score order (the "weakest first" tab) or skipping hard tasks
    breaks. Finishing the round, or reviewing in random order, keeps them valid."""
    pushed: dict[str, list[bool]] = {}
    for task in tasks:
        if task.inclusion_probability is not None and task.round is not None:  # drawn by push as a review round
            pushed.setdefault(task.round, []).append(task.reviewed)
    warnings = []
    for name in sorted(pushed, key=round_order):
        done = sum(pushed[name])
        if 0 < done < len(pushed[name]):
            warnings.append(
                f"{name}: {done} of {len(pushed[name])} pushed tasks reviewed; the estimate takes them as a random "
                "part of the round (review the rest, or in random order, not weakest first)"
            )
    return warnings


def quality_by_round(
    tasks: Sequence[ReviewedTask], threshold: int, *, assume_random: bool = False
) -> list[tuple[str, DatasetQuality]]:
    """The dataset's quality as it stood after each review round (rounds in push's order): the tasks of later
    rounds read as unreviewed, as they were then. A reader sees the interval narrow as reviews accumulate."""
    names = sorted({task.round for task in tasks if task.reviewed}, key=round_order)
    results = []
    for end, name in enumerate(names):
        included = set(names[: end + 1])
        then = [task if not task.reviewed or task.round in included else _unreviewed(task) for task in tasks]
        results.append((str(name or "-"), dataset_quality(then, threshold, assume_random=assume_random)))
    return results


def _unreviewed(task: ReviewedTask) -> ReviewedTask:
    return task.model_copy(
        update={"annotation_id": None, "human_label": None, "human_level": None, "annotated_at": None}
    )
