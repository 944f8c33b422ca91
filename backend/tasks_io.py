"""Reading task files: JSONL, JSON (a list) or CSV, each record a Label Studio task or bare task data."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class TaskFileError(ValueError):
    """A task file cannot be read; the message names the file and the line."""


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL, JSON or CSV file, streamed where the format allows."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)
        return
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise TaskFileError(f"{path}: not valid JSON: {error}") from None
        if not isinstance(data, list):
            raise TaskFileError(f"{path}: a JSON task file must hold a list of tasks")
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise TaskFileError(f"{path}: item {index} is not an object")
            yield item
        return
    for number, record in jsonl_lines(path):
        if isinstance(record, str):
            raise TaskFileError(f"{path} line {number}: {record}")
        yield record


def jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, record) for each non-blank line; a line that is not a JSON object comes as the reason
    instead, so a reader can decide whether it ends the file or only that item."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, f"not valid JSON: {error.msg}"
                continue
            yield number, record if isinstance(record, dict) else "not a JSON object"


def as_task(record: dict[str, Any], index: int) -> dict[str, Any]:
    """A Label Studio-shaped task ({id, data}) from a record that may be bare data."""
    if isinstance(record.get("data"), dict):
        return {"id": record.get("id", index), **record}
    return {"id": record.get("id", index), "data": record}


def read_tasks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise TaskFileError(f"{path}: no such file")
    return [as_task(record, index) for index, record in enumerate(iter_records(path), start=1)]
