"""Reading what `prelabel quality` measures: the labeled items (a `prelabel label` output) and the reviews
(pull's corrections JSONL or a Label Studio JSON export), with one problem per bad line, each naming the file,
the line (or task) and the field. A bad line is left out and reported; the rest is still used."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prelabel.judge import MAX_LEVEL
from prelabel.records import ReviewedTask

INCLUSION_FIELD = "inclusion_probability"


class QualityInputError(Exception):
    """Input the quality report cannot be computed from; the message names the file, line and field."""


@dataclass(frozen=True)
class LabeledItem:
    source_id: str
    label: str
    level: int | None  # the judge's level; None when the label was not rated
    expected_level: float | None  # G-Eval expected level (score * 4), else the level


@dataclass(frozen=True)
class Review:
    where: str  # "FILE line N" or "FILE task N"
    source_id: str
    llm_label: str | None
    reviewer_level: int | None
    judge_level: int | None = None
    round: str | None = None
    inclusion_probability: float | None = None
    strategy: str | None = None
    rating_anchored: bool = False


@dataclass
class Labels:
    items: list[LabeledItem] = field(default_factory=list)
    failed: int = 0  # lines of items that got no label (an error or an empty label): not in the dataset
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Reviews:
    reviews: list[Review] = field(default_factory=list)
    unreviewed: int = 0  # export tasks without an annotation
    problems: list[str] = field(default_factory=list)


class _BadField(ValueError):
    pass


def _level(record: dict[str, Any], key: str) -> int | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LEVEL:
        raise _BadField(f"field `{key}`: expected a level 0..{MAX_LEVEL} or null, got {value!r}")
    return value


def _optional_text(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _BadField(f"field `{key}`: expected a string, got {value!r}")
    return str(value)


def _probability(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _BadField(f"field `{key}`: expected a probability in (0, 1], got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 < value <= 1:
        raise _BadField(f"field `{key}`: expected a probability in (0, 1], got {value!r}")
    return float(value)


def _json_lines(path: Path) -> list[tuple[int, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise QualityInputError(f"{path}: cannot read it ({error})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except ValueError as error:
            rows.append((number, _BadField(f"not JSON ({error})")))
    return rows


def _object(record: Any) -> dict[str, Any]:
    """A JSON line's record (_BadField when the line is not JSON or not an object)."""
    if isinstance(record, _BadField):
        raise record
    if not isinstance(record, dict):
        raise _BadField(f"a JSON {type(record).__name__}, not a record")
    return record


def read_labels(path: Path) -> Labels:
    """The labeled items of a `prelabel label` output file (BulkRecord lines)."""
    labels = Labels()
    seen: set[str] = set()
    for number, record in _json_lines(path):
        where = f"{path} line {number}"
        try:
            record = _object(record)
            source_id = record.get("source_id")
            if not isinstance(source_id, str) or not source_id:
                raise _BadField(f"field `source_id`: expected a non-empty string, got {source_id!r}")
            label = record.get("label")
            if label is not None and not isinstance(label, str):
                raise _BadField(f"field `label`: expected a string, got {type(label).__name__}")
            level = _level(record, "level")
            score = record.get("score")
            if score is not None and (
                isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1
            ):
                raise _BadField(f"field `score`: expected a number in [0, 1], got {score!r}")
        except _BadField as problem:
            labels.problems.append(f"{where}: {problem}")
            continue
        if record.get("error") is not None or not (label or "").strip():
            labels.failed += 1
            continue
        if source_id in seen:
            labels.duplicates += 1
            continue
        seen.add(source_id)
        expected = None if level is None else (score * MAX_LEVEL if score is not None else float(level))
        labels.items.append(LabeledItem(source_id, str(label), level, expected))
    if not labels.items:
        detail = f" ({labels.problems[0]})" if labels.problems else ""
        raise QualityInputError(f"{path}: no labeled item to measure{detail}")
    return labels


def read_reviews(path: Path, label_config: Path | None = None) -> Reviews:
    """Reviews from pull's corrections JSONL, or from a Label Studio JSON export (a list of tasks)."""
    try:
        head = path.read_text(encoding="utf-8").lstrip()[:1]
    except (OSError, UnicodeDecodeError) as error:
        raise QualityInputError(f"{path}: cannot read it ({error})") from None
    reviews = _export_reviews(path, label_config) if head == "[" else _corrections_reviews(path)
    if not reviews.reviews:
        detail = f" ({reviews.problems[0]})" if reviews.problems else ""
        raise QualityInputError(f"{path}: no usable review{detail}")
    return reviews


def _corrections_reviews(path: Path) -> Reviews:
    reviews = Reviews()
    for number, record in _json_lines(path):
        where = f"{path} line {number}"
        try:
            record = _object(record)
            source_id = record.get("source_id")
            if not isinstance(source_id, str | int) or isinstance(source_id, bool) or source_id == "":
                raise _BadField(f"field `source_id`: expected a non-empty string, got {source_id!r}")
            llm_label = record.get("llm_label")
            if llm_label is not None and not isinstance(llm_label, str):
                raise _BadField(f"field `llm_label`: expected a string, got {type(llm_label).__name__}")
            # A row without it comes from a pull before blind reviews, when every rating was pre-filled.
            anchored = record.get("rating_anchored", True)
            if not isinstance(anchored, bool | None):
                raise _BadField(f"field `rating_anchored`: expected true or false, got {anchored!r}")
            review = Review(
                where=where,
                source_id=str(source_id),
                llm_label=llm_label,
                reviewer_level=_level(record, "reviewer_level"),
                judge_level=_level(record, "judge_level"),
                round=_optional_text(record, "round"),
                inclusion_probability=_probability(record.get(INCLUSION_FIELD), INCLUSION_FIELD),
                strategy=_optional_text(record, "strategy"),
                rating_anchored=anchored is not False,
            )
        except _BadField as problem:
            reviews.problems.append(f"{where}: {problem}")
            continue
        reviews.reviews.append(review)
    return reviews


def _export_reviews(path: Path, label_config: Path | None) -> Reviews:
    from prelabel import label_config as shipped
    from prelabel.label_interface import LabelConfigError, parse_label_config
    from prelabel.records import INCLUSION_PROBABILITY_FIELD, reviewed_tasks

    config_path = label_config or shipped.path("summarization")
    try:
        export = json.loads(path.read_text(encoding="utf-8"))
        config = parse_label_config(config_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise QualityInputError(f"{path}: not a Label Studio JSON export ({error})") from None
    except (OSError, LabelConfigError) as error:
        raise QualityInputError(f"--label-config {config_path}: {error}") from None
    if not isinstance(export, list):
        raise QualityInputError(f"{path}: a Label Studio JSON export is a list of tasks, got {type(export).__name__}")
    reviews = Reviews()
    tasks = []
    for position, task in enumerate(export):
        if not isinstance(task, dict) or not isinstance(task.get("id"), int):
            reviews.problems.append(f"{path} task #{position + 1}: field `id`: not a task object with an integer id")
            continue
        tasks.append(task)
    for task in reviewed_tasks(config, tasks):
        where = f"{path} task {task.task_id}"
        reviews.problems.extend(f"{path}: {problem}" for problem in task.problems)
        if not task.reviewed:
            reviews.unreviewed += 1
            continue
        try:
            if not task.source_id:
                raise _BadField("field `data.source_id`: missing (tasks pushed by prelabel carry it)")
            if task.inclusion_probability is None and task.data.get(INCLUSION_PROBABILITY_FIELD) is not None:
                continue  # present but unreadable: reviewed_tasks named the task and the field in its problems
            reviews.reviews.append(_task_review(task, where, task.source_id, task.llm_label))
        except _BadField as problem:
            reviews.problems.append(f"{where}: {problem}")
    return reviews


def round_order(name: str | None) -> tuple[int, list[tuple[int, int | str]]]:
    """Rounds in the order push names them (round-2 before round-10); reviews without a round first."""
    if name is None:
        return (0, [])
    parts = re.split(r"(\d+)", name)
    return (1, [(0, int(p)) if p.isdigit() else (1, p) for p in parts if p])


def from_tasks(tasks: Sequence[ReviewedTask], min_judge_level: int | None = None) -> tuple[Labels, Reviews]:
    """A Label Studio project's tasks as labels (each task's LLM label and the judge's level) and reviews (the
    reviewer's rating of that label). `min_judge_level`: only the labels the judge rated at least this (the
    stratum an export takes unreviewed LLM labels from)."""
    labels, reviews = Labels(), Reviews()
    for task in tasks:
        reviews.problems.extend(task.problems)
        label = (task.llm_label or "").strip()
        if not label:
            labels.failed += 1
            continue
        if min_judge_level is not None and (task.llm_level is None or task.llm_level < min_judge_level):
            continue
        source = task.source_id or f"task {task.task_id}"
        expected = None
        if task.llm_level is not None:
            expected = task.llm_score * MAX_LEVEL if task.llm_score is not None else float(task.llm_level)
        labels.items.append(LabeledItem(source, label, task.llm_level, expected))
        if not task.reviewed:
            reviews.unreviewed += 1
        elif task.human_level is not None:
            try:
                reviews.reviews.append(_task_review(task, f"task {task.task_id}", source, label))
            except _BadField as problem:
                reviews.problems.append(f"task {task.task_id}: {problem}")
    return labels, reviews


def _task_review(task: ReviewedTask, where: str, source_id: str, label: str | None) -> Review:
    """A reviewed task's review of `label` (_BadField for a level off the five-point scale, which a hand-edited
    config can give)."""
    return Review(
        where=where,
        source_id=source_id,
        llm_label=label,
        reviewer_level=_level({"reviewer level": task.human_level}, "reviewer level"),
        judge_level=_level({"judge level": task.llm_level}, "judge level"),
        round=task.round,
        inclusion_probability=task.inclusion_probability,
        strategy=task.strategy,
        rating_anchored=task.rating_anchored,
    )
