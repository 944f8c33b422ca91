"""Pushing a random sample of an unlabeled pool to a Label Studio project as a review round.

Every task records its stable source id and its round, so each round draws items never pushed before and
every exported example traces back to its source.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from backend.dialogue import InputError, parse_dialogue, parse_text
from backend.label_config import LabelConfig
from backend.records import ROUND_FIELD, SOURCE_ID_FIELD
from backend.tasks_io import iter_records

if TYPE_CHECKING:
    from backend.labelstudio import LabelStudioClient
    from backend.pipeline import Engine

_ID_FIELDS = (SOURCE_ID_FIELD, "id", "fname", "uid", "uuid")


class PoolItem(BaseModel):
    source_id: str
    record: dict[str, Any]


class PushPlan(BaseModel):
    round: str
    items: list[PoolItem]
    pool_size: int
    already_pushed: int
    skipped: list[str] = []  # "source id: problem" for records that cannot become tasks


def source_id(record: dict[str, Any], input_field: str) -> str:
    """The record's own id if it has one, else a hash of its input: stable across runs and files."""
    for field in _ID_FIELDS:
        value = record.get(field)
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value)
    payload = json.dumps(record.get(input_field), sort_keys=True, ensure_ascii=False)
    return "sha1:" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def read_pool(path: Path, input_field: str) -> list[PoolItem]:
    items, seen = [], set()
    for record in iter_records(path):
        data = record.get("data") if isinstance(record.get("data"), dict) else record
        sid = source_id(data, input_field)
        if sid in seen:  # the same item twice in the pool is one item
            continue
        seen.add(sid)
        items.append(PoolItem(source_id=sid, record=data))
    return items


def plan_round(
    pool: list[PoolItem], pushed: set[str], sample: int | None, seed: int | None, round_name: str
) -> PushPlan:
    """Draw `sample` random items of the pool that were never pushed (all of them when sample is None)."""
    fresh = [item for item in pool if item.source_id not in pushed]
    if sample is not None and sample < len(fresh):
        fresh = random.Random(seed).sample(fresh, sample)
    already = sum(1 for item in pool if item.source_id in pushed)
    return PushPlan(round=round_name, items=fresh, pool_size=len(pool), already_pushed=already)


def task_data(
    item: PoolItem, config: LabelConfig, round_name: str, input_field: str | None, keep_fields: Iterable[str] = ()
) -> dict[str, Any]:
    """Label Studio task data: the input in the config's field (dialogues as turns), source id, round."""
    field = input_field or config.data_key
    value = item.record.get(field)
    where = f"source {item.source_id} field {field!r}"
    try:
        if config.kind == "summarization" and config.object_tag == "paragraphs":
            converted: Any = [turn.model_dump() for turn in parse_dialogue(value, field)]
        else:
            converted = parse_text(value, field) if config.kind == "classification" else value
            if converted is None:
                raise InputError(field, "is missing")
    except InputError as error:
        raise InputError(field, f"{where}: {error.problem}") from None
    data = {config.data_key: converted, SOURCE_ID_FIELD: item.source_id, ROUND_FIELD: round_name}
    for name in keep_fields:
        if name in item.record:
            data[name] = item.record[name]
    return data


def next_round_name(existing_rounds: set[str]) -> str:
    number = 1
    while f"round-{number}" in existing_rounds:
        number += 1
    return f"round-{number}"


class PushResult(BaseModel):
    project_id: int
    round: str
    task_ids: list[int]
    source_ids: list[str]
    pool_size: int
    already_pushed: int
    predicted: int = 0
    prediction_failures: list[str] = []
    skipped: list[str] = []
    model_version: str | None = None


def push_round(
    client: "LabelStudioClient",
    label_config_xml: str,
    project_title: str,
    pool_path: Path,
    *,
    sample: int | None = None,
    seed: int | None = None,
    round_name: str | None = None,
    input_field: str | None = None,
    keep_fields: Iterable[str] = (),
    engine: "Engine | None" = None,
    backend_url: str | None = None,
    basic_auth: tuple[str, str] | None = None,
) -> PushResult:
    """Create or reuse the project, draw a fresh sample, import it (with locally computed predictions when
    an engine is given), and optionally connect the ML backend and ask Label Studio for predictions."""
    from backend.label_config import parse_label_config
    from backend.model import prediction_for

    project = client.ensure_project(project_title, label_config_xml)
    config = parse_label_config(project.label_config or label_config_xml)
    pool = read_pool(pool_path, input_field or config.data_key)
    pushed = client.task_data_values(project.id, SOURCE_ID_FIELD)
    rounds = client.task_data_values(project.id, ROUND_FIELD)
    plan = plan_round(pool, pushed, sample, seed, round_name or next_round_name(rounds))

    tasks: list[dict[str, Any]] = []
    skipped: list[str] = []
    for item in plan.items:
        try:
            tasks.append({"data": task_data(item, config, plan.round, input_field, keep_fields)})
        except InputError as error:
            skipped.append(str(error))

    result = PushResult(
        project_id=project.id,
        round=plan.round,
        task_ids=[],
        source_ids=[task["data"][SOURCE_ID_FIELD] for task in tasks],
        pool_size=plan.pool_size,
        already_pushed=plan.already_pushed,
        skipped=skipped,
    )
    if engine is not None and tasks:
        labeler = engine.labeler(config)
        result.model_version = labeler.model_version
        outcomes = engine.run_batch(labeler, [{"id": f"source {task['data'][SOURCE_ID_FIELD]}", **task}
                                              for task in tasks])
        for task, outcome in zip(tasks, outcomes):
            if outcome.ok:
                task["predictions"] = [prediction_for(outcome, config)]
                result.predicted += 1
            else:  # no prediction stored: a later "retrieve predictions" can still fill it
                result.prediction_failures.append(outcome.error or "unknown error")
    result.task_ids = client.import_tasks(project.id, tasks) if tasks else []
    if backend_url:
        client.connect_backend(project.id, backend_url, basic_auth=basic_auth)
        if engine is None and result.task_ids:
            client.retrieve_predictions(project.id, result.task_ids)
            result.model_version = client.backend_model_version(project.id, backend_url)
    if result.model_version:
        client.set_model_version(project.id, result.model_version)
    return result
