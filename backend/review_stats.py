"""What reviewers did to the LLM's labels, per prompt version: the numbers `prelabel pull` prints and saves.

Only reviewed tasks count (a record with an annotation; cancelled annotations are already dropped when
records are built). Tasks are grouped by the prediction's model_version, which names the prompt version,
so two prompts reviewed in one project are compared side by side.

Text metrics compare the LLM's label with the reviewer's corrected label; rating agreement compares the
judge's level with the level the reviewer set, on the tasks that have both. A reviewer's rating that started
from the judge's level (a prediction made before blind reviews pre-filled the control) is counted as possibly
anchored: such pairs inflate the agreement, and the report says how many there are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel import metrics
from prelabel.atomic import atomic_writer
from prelabel.judge import LEVELS, MAX_LEVEL
from prelabel.label_interface import TaskKind
from prelabel.records import ReviewedTask, review_contribution

NO_VERSION = "-"  # how a group without a model_version is shown


class VersionStats(BaseModel):
    """Review outcome for one prompt version (model_version None: tasks reviewed without a prediction)."""

    model_version: str | None
    n_reviewed: int
    accepted_unchanged: int
    accepted_share: float | None
    edited: int  # the reviewer submitted a label of their own
    n_label_pairs: int  # reviewed tasks holding both an LLM label and a reviewer label
    mean_edit_distance: float | None
    mean_rouge_l_f1: float | None
    n_rating_pairs: int  # reviewed tasks holding both a judge level and a reviewer level
    exact_agreement: float | None
    within_one_agreement: float | None
    kappa: float | None
    spearman: float | None
    mean_judge_level: float | None
    mean_reviewer_level: float | None
    accuracy: float | None = None  # classification only
    macro_f1: float | None = None  # classification only
    rating_only: int = 0  # no label text, only a rating of the LLM's label
    empty: int = 0  # neither label text nor rating
    n_anchored_pairs: int = 0  # rating pairs whose reviewer's rating started from the judge's (pre-filled)


class WorstCase(BaseModel):
    task_id: int
    source_id: str | None
    model_version: str | None
    edit_distance: float
    judge_level: int | None
    reviewer_level: int | None
    level_gap: int | None
    link: str | None = None


class PullReport(BaseModel):
    kind: TaskKind
    n_tasks: int
    n_reviewed: int
    versions: list[VersionStats]
    overall: VersionStats | None  # every reviewed task together; model_version None
    worst_cases: list[WorstCase]
    anchored_warning: str | None = None  # set when some rating pairs are possibly anchored

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def anchored_warning(n_anchored: int, n_pairs: int) -> str | None:
    """The warning line for rating pairs whose reviewer's rating may have started from the judge's level."""
    if n_anchored <= 0:
        return None
    return (
        f"{n_anchored} of {n_pairs} rated pairs are possibly anchored: the reviewer's rating control was "
        "pre-filled with the judge's level (a prediction made before blind reviews), so agreement on them "
        "is likely inflated"
    )


# -- per task --------------------------------------------------------------------------------------


def has_label_pair(task: ReviewedTask) -> bool:
    """The task holds an LLM label and a reviewer label to compare (a review without text holds none)."""
    return task.llm_label is not None and review_contribution(task) in ("edited", "unchanged")


def edit_distance(task: ReviewedTask) -> float | None:
    """Normalized edit distance between the LLM's and the reviewer's label, stripped as acceptance is."""
    if not has_label_pair(task) or task.llm_label is None or task.human_label is None:
        return None
    return metrics.normalized_edit_distance(task.llm_label.strip(), task.human_label.strip())


def _level(value: int | None) -> int | None:
    # A hand-edited config could yield a level off the five-point scale; such a pair is not comparable.
    return value if value is not None and 0 <= value <= MAX_LEVEL else None


def level_name(value: int | None) -> str | None:
    level = _level(value)
    return None if level is None else LEVELS[level]


def level_gap(task: ReviewedTask) -> int | None:
    judge, reviewer = _level(task.llm_level), _level(task.human_level)
    return None if judge is None or reviewer is None else abs(judge - reviewer)


def task_link(ls_url: str | None, project_id: int | str | None, task_id: int) -> str | None:
    """The Data Manager URL that opens the task, when the Label Studio URL and project are known."""
    if not ls_url or project_id is None:
        return None
    return f"{ls_url.rstrip('/')}/projects/{project_id}/data?task={task_id}"


# -- aggregation -----------------------------------------------------------------------------------


def version_stats(
    model_version: str | None,
    tasks: Sequence[ReviewedTask],
    kind: TaskKind = "summarization",
    class_labels: Sequence[str] | None = None,
) -> VersionStats:
    """Statistics over `tasks`; unreviewed tasks among them are ignored."""
    reviewed = [t for t in tasks if t.reviewed]
    contributions = [review_contribution(t) for t in reviewed]
    accepted = contributions.count("unchanged")
    labelled = [t for t in reviewed if has_label_pair(t)]
    distances = [d for t in labelled if (d := edit_distance(t)) is not None]
    rouge = [metrics.rouge_l(t.llm_label or "", t.human_label or "").f1 for t in labelled]
    levels = [(_level(t.llm_level), _level(t.human_level), t.rating_anchored) for t in reviewed]
    rated = [(j, h) for j, h, _ in levels if j is not None and h is not None]
    anchored = sum(1 for j, h, a in levels if j is not None and h is not None and a)
    judge = [j for j, _ in rated]
    human = [h for _, h in rated]

    accuracy = macro_f1 = None
    if kind == "classification" and labelled:
        y_pred = [(t.llm_label or "").strip() for t in labelled]
        y_true = [(t.human_label or "").strip() for t in labelled]
        report = metrics.precision_recall_f1(list(class_labels) if class_labels else None, y_true, y_pred)
        accuracy, macro_f1 = report.accuracy, report.macro.f1

    return VersionStats(
        model_version=model_version,
        n_reviewed=len(reviewed),
        accepted_unchanged=accepted,
        accepted_share=accepted / len(reviewed) if reviewed else None,
        edited=contributions.count("edited"),
        n_label_pairs=len(labelled),
        mean_edit_distance=metrics.mean(distances),
        mean_rouge_l_f1=metrics.mean(rouge),
        n_rating_pairs=len(rated),
        exact_agreement=metrics.exact_agreement(judge, human),
        within_one_agreement=metrics.within_one_agreement(judge, human),
        kappa=metrics.quadratic_weighted_kappa(judge, human, n_levels=len(LEVELS)),
        spearman=metrics.spearman(judge, human),
        mean_judge_level=metrics.mean(judge),
        mean_reviewer_level=metrics.mean(human),
        accuracy=accuracy,
        macro_f1=macro_f1,
        rating_only=contributions.count("rating_only"),
        empty=contributions.count("empty"),
        n_anchored_pairs=anchored,
    )


def worst_cases(
    tasks: Iterable[ReviewedTask],
    limit: int = 10,
    ls_url: str | None = None,
    project_id: int | str | None = None,
) -> list[WorstCase]:
    """Reviewed tasks the reviewer changed most: largest edit distance first, then the larger judge/reviewer
    level gap (a big rewrite the judge rated well is the case to read first), then task id."""
    cases = []
    for task in tasks:
        distance = edit_distance(task) if task.reviewed else None
        if distance is None:
            continue
        cases.append(
            WorstCase(
                task_id=task.task_id,
                source_id=task.source_id,
                model_version=task.model_version,
                edit_distance=distance,
                judge_level=task.llm_level,
                reviewer_level=task.human_level,
                level_gap=level_gap(task),
                link=task_link(ls_url, project_id, task.task_id),
            )
        )
    cases.sort(key=lambda c: (-c.edit_distance, -(c.level_gap if c.level_gap is not None else -1), c.task_id))
    return cases[: max(limit, 0)]


def _version_key(version: str | None) -> tuple[bool, str]:
    return (version is None, version or "")


def pull_report(
    tasks: Sequence[ReviewedTask],
    kind: TaskKind = "summarization",
    *,
    class_labels: Sequence[str] | None = None,
    ls_url: str | None = None,
    project_id: int | str | None = None,
    worst_limit: int = 10,
) -> PullReport:
    """Per-version statistics (sorted by version; tasks without a version last), the total, and worst cases."""
    reviewed = [t for t in tasks if t.reviewed]
    groups: dict[str | None, list[ReviewedTask]] = {}
    for task in reviewed:
        groups.setdefault(task.model_version, []).append(task)
    versions = [
        version_stats(version, groups[version], kind, class_labels) for version in sorted(groups, key=_version_key)
    ]
    overall = version_stats(None, reviewed, kind, class_labels) if reviewed else None
    return PullReport(
        kind=kind,
        n_tasks=len(tasks),
        n_reviewed=len(reviewed),
        versions=versions,
        overall=overall,
        worst_cases=worst_cases(reviewed, worst_limit, ls_url, project_id),
        anchored_warning=anchored_warning(overall.n_anchored_pairs, overall.n_rating_pairs) if overall else None,
    )


# -- corrections file ------------------------------------------------------------------------------


def correction_row(task: ReviewedTask) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "source_id": task.source_id,
        "model_version": task.model_version,
        "input": task.input_text,
        "llm_label": task.llm_label,
        "corrected_label": task.human_label,
        "judge_level": task.llm_level,
        "judge_rating": level_name(task.llm_level),
        "reviewer_level": task.human_level,
        "reviewer_rating": level_name(task.human_level),
        "review": review_contribution(task),
        "accepted_unchanged": task.accepted_unchanged,
        "edit_distance": edit_distance(task),
        "round": task.round,
        "inclusion_probability": task.inclusion_probability,
        "strategy": task.strategy,
        "rating_anchored": task.rating_anchored,
    }


def write_corrections_jsonl(tasks: Iterable[ReviewedTask], path: str | os.PathLike[str]) -> int:
    """Write one JSON line per reviewed task; returns how many. The file appears whole or not at all
    (temp file in the same directory, then os.replace), so a crashed pull never leaves half a file."""
    count = 0
    with atomic_writer(Path(path)) as handle:
        for task in tasks:
            if not task.reviewed:
                continue
            handle.write(json.dumps(correction_row(task), ensure_ascii=False) + "\n")
            count += 1
    return count
