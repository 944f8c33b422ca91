"""Reviewers' records for an evaluation: read from a corrections file written by `prelabel pull` or from a
Label Studio JSON export."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prelabel.evaluation import EvaluationError
from prelabel.label_interface import LabelConfig
from prelabel.records import ReviewedTask, reviewed_tasks


def reviewed_from_corrections(rows: Iterable[dict[str, Any]]) -> list[ReviewedTask]:
    """Records from a corrections file written by `prelabel pull` (every row there was reviewed).

    A row without `rating_anchored` comes from a pull before blind reviews, when every prediction pre-filled
    the reviewer's rating: its rating counts as possibly anchored."""
    tasks = []
    for number, row in enumerate(rows, start=1):
        task_id = row.get("task_id")
        tasks.append(
            ReviewedTask(
                task_id=task_id if isinstance(task_id, int) else number,
                source_id=None if row.get("source_id") is None else str(row["source_id"]),
                input_text=str(row.get("input") or ""),
                llm_label=row.get("llm_label"),
                llm_level=row.get("judge_level"),
                model_version=row.get("model_version"),
                human_label=row.get("corrected_label"),
                human_level=row.get("reviewer_level"),
                rating_anchored=row.get("rating_anchored", True) is not False,
                # The file holds reviewed tasks only; the annotation id is not in it, so the row number stands in.
                annotation_id=number,
            )
        )
    return tasks


def load_reviews(path: Path, config: LabelConfig | None = None) -> list[ReviewedTask]:
    """Reviewed records from a corrections JSONL (`prelabel pull`) or a Label Studio JSON export."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        export = json.loads(text)
        if not isinstance(export, list):
            raise EvaluationError(f"{path}: a Label Studio export is a JSON list of tasks")
        if config is None:
            raise EvaluationError(f"{path}: reading a Label Studio export needs the label config")
        return reviewed_tasks(config, export)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise EvaluationError(f"{path} line {number}: not valid JSON: {error.msg}") from None
    return reviewed_from_corrections(rows)
