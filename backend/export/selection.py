"""Which reviewed tasks become training examples, and the seeded train/validation split."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

from prelabel.export.options import DEFAULT_THRESHOLD, SelectionCounts, TrainingExample
from prelabel.records import ReviewedTask, dataset_label

SPLITS: tuple[str, ...] = ("train", "validation")


def normalize_text(text: str) -> str:
    """Whitespace-insensitive form used to spot duplicate inputs."""
    return " ".join(text.split())


def select_examples(
    tasks: Iterable[ReviewedTask], threshold: int = DEFAULT_THRESHOLD
) -> tuple[list[TrainingExample], SelectionCounts]:
    """Pick each task's label (`records.dataset_label`, the one rule), in task-id order, dropping exact
    duplicates of an earlier pick and tasks without input."""
    counts = SelectionCounts()
    examples: list[TrainingExample] = []
    seen: set[tuple[str, str]] = set()
    for task in sorted(tasks, key=lambda t: t.task_id):
        choice = dataset_label(task, threshold)
        if isinstance(choice, str):
            setattr(counts, choice, getattr(counts, choice) + 1)
            continue
        label, origin = choice
        text = task.input_text.strip()
        if not text:
            counts.dropped_no_input += 1
            continue
        key = (normalize_text(text), label)
        if key in seen:
            counts.dropped_duplicate += 1
            continue
        seen.add(key)
        if origin == "human":
            counts.human += 1
        else:
            counts.llm_accepted += 1
        examples.append(
            TrainingExample(
                task_id=task.task_id,
                input=text,
                output=label,
                origin=origin,
                source_id=task.source_id,
                llm_level=task.llm_level,
                human_level=task.human_level,
                rating_anchored=task.rating_anchored and task.human_level is not None,
                model_version=task.model_version,
                round=task.round,
            )
        )
    return examples, counts


def validation_size(n: int, fraction: float) -> int:
    """Validation examples for n examples: rounded half up, at least one when asked for, never all."""
    if n < 2 or fraction <= 0:
        return 0
    return min(max(1, math.floor(n * fraction + 0.5)), n - 1)


def split_examples(examples: Sequence[TrainingExample], fraction: float, seed: int) -> dict[str, list[TrainingExample]]:
    """Seeded shuffle of the task-id order: the split depends only on the examples and the seed."""
    ordered = sorted(examples, key=lambda e: e.task_id)
    random.Random(seed).shuffle(ordered)
    n_validation = validation_size(len(ordered), fraction)
    return {"train": ordered[n_validation:], "validation": ordered[:n_validation]}
