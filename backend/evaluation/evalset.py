"""The evaluation set: a seeded sample of the pool, written once and read back verbatim, and what an item's
input and reference look like to the evaluation."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel import metrics
from prelabel.atomic import write_atomic
from prelabel.dialogue import InputError, parse_dialogue, parse_text, render_dialogue
from prelabel.evaluation import EvaluationError
from prelabel.label_interface import LabelConfig, TaskKind
from prelabel.push import PoolItem, read_pool


class EvalSet(BaseModel):
    path: str
    items: list[PoolItem]
    sha256: str
    created: bool  # False: read back from the file of an earlier run
    pool_size: int | None = None

    @property
    def source_ids(self) -> list[str]:
        return [item.source_id for item in self.items]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_eval_set(path: Path) -> EvalSet:
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                items.append(PoolItem.model_validate_json(line))
            except ValueError as error:
                raise EvaluationError(f"{path} line {number}: not an evaluation set item: {error}") from None
    if not items:
        raise EvaluationError(f"{path}: the evaluation set is empty")
    return EvalSet(path=str(path), items=items, sha256=file_sha256(path), created=False)


def load_or_create_eval_set(
    eval_set_path: Path, pool_path: Path | None, input_field: str, size: int, seed: int
) -> EvalSet:
    """Read the evaluation set if the file exists (size and seed are then ignored), else draw it from the pool.

    The draw keeps pool order, so the file reads like the pool and diffs cleanly.
    """
    if eval_set_path.exists():
        return read_eval_set(eval_set_path)
    if pool_path is None:
        raise EvaluationError(f"{eval_set_path} does not exist and no pool was given to draw it from")
    if size < 1:
        raise EvaluationError(f"--size must be at least 1, got {size}")
    pool = read_pool(pool_path, input_field)
    if not pool:
        raise EvaluationError(f"{pool_path}: the pool is empty")
    chosen = sorted(random.Random(seed).sample(range(len(pool)), min(size, len(pool))))
    items = [pool[i] for i in chosen]
    write_atomic(eval_set_path, "".join(item.model_dump_json() + "\n" for item in items))
    return EvalSet(
        path=str(eval_set_path), items=items, sha256=file_sha256(eval_set_path), created=True, pool_size=len(pool)
    )


# -- an item as the evaluation sees it -------------------------------------------------------------


def task_for(item: PoolItem, config: LabelConfig, input_field: str) -> dict[str, Any]:
    """A Label Studio-shaped task whose id is the source id, with the input under the config's data key."""
    data = dict(item.record)
    if input_field != config.data_key and input_field in data:
        data[config.data_key] = data[input_field]
    return {"id": item.source_id, "data": data}


def input_features(kind: TaskKind, value: Any) -> tuple[dict[str, Any], str]:
    """Features to slice by, and the input as the prompts show it (for previews)."""
    try:
        if kind == "summarization":
            turns = parse_dialogue(value)
            text = render_dialogue(turns)
            return {"chars": len(text), "turns": len(turns), "words": len(metrics.tokenize(text))}, text
        text = parse_text(value)
    except InputError:
        return {}, str(value or "")
    return {"chars": len(text), "words": len(metrics.tokenize(text))}, text


def reference_class(value: Any, labels: Sequence[str]) -> str | None:
    """Ground truth mapped onto the config's class labels case-insensitively (kept as is when none match)."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    for label in labels:
        if text.lower() == label.lower():
            return label
    return text
