"""Reading the pool: each record of a JSONL, JSON or CSV file as an item with its stable source id."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel.records import SOURCE_ID_FIELD
from prelabel.tasks_io import TaskFileError, iter_records, jsonl_lines

_ID_FIELDS = (SOURCE_ID_FIELD, "id", "fname", "uid", "uuid")


def source_id(record: dict[str, Any], input_field: str) -> str:
    """The record's own id if it has one, else a hash of its input: stable across runs and files."""
    for field in _ID_FIELDS:
        value = record.get(field)
        if isinstance(value, (str, int)) and str(value).strip():
            return str(value)
    payload = json.dumps(record.get(input_field), sort_keys=True, ensure_ascii=False)
    return "sha1:" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


class Item(BaseModel):
    """One input record on its way to the labeler; `error` is set when the record itself is unreadable."""

    source_id: str
    task: dict[str, Any] | None = None
    error: str | None = None


def iter_items(path: Path, input_field: str) -> Iterator[Item]:
    """Items of a JSONL, JSON or CSV file, streamed (a JSON list is parsed whole: use JSONL for big pools).

    A JSONL line that is not a JSON object becomes a failed item named after its line, not the end of the run.
    """
    if not path.exists():
        raise TaskFileError(f"{path}: no such file")
    if path.suffix.lower() in {".csv", ".json"}:
        for record in iter_records(path):
            yield _item(record, input_field)
        return
    for number, parsed in jsonl_lines(path):
        if isinstance(parsed, str):
            yield Item(source_id=f"line:{number}", error=f"line {number}: {parsed}")
        else:
            yield _item(parsed, input_field)


def _item(record: dict[str, Any], input_field: str) -> Item:
    data = record["data"] if isinstance(record.get("data"), dict) else record
    sid = source_id(data, input_field)
    if sid.startswith("sha1:") and data is not record:
        # A Label Studio task's own id, when its data carries none.
        outer = source_id({key: value for key, value in record.items() if key != "data"}, "\x00")
        if not outer.startswith("sha1:"):
            sid = outer
    return Item(source_id=sid, task={"id": sid, "data": data})


def count_records(path: Path) -> int | None:
    """The number of records, counted without parsing (None for a JSON list)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return None
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return sum(1 for _ in csv.reader(handle)) - 1
    count = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                count += 1
    return count
