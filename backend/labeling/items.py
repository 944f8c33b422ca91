"""Reading the pool: each record of a JSONL, JSON or CSV file as an item with its stable source id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel

from prelabel.records import SOURCE_ID_FIELD
from prelabel.tasks_io import TaskFileError, csv_rows, numbered_records, record_unit

_ID_FIELDS = (SOURCE_ID_FIELD, "id", "fname", "uid", "uuid")


class IdTypeError(TaskFileError):
    """A record's id is neither a string nor an integer (a bool, a float, an object, a list)."""


def source_id(record: dict[str, Any], input_field: str) -> str:
    """The record's own id if it has one, else a hash of its input: stable across runs and files.

    An id must be a string or an integer: `true` or `1.0` would silently become the same id as "True" or
    another record's "1", so they are refused (IdTypeError names the field).
    """
    for field in _ID_FIELDS:
        value = record.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            kind = {bool: "a boolean", float: "a number with a fraction", dict: "an object", list: "a list"}.get(
                type(value), type(value).__name__
            )
            raise IdTypeError(f"field {field!r} is {kind} ({json.dumps(value)}): an id must be a string or an integer")
        if str(value).strip():
            return str(value)
    payload = json.dumps(record.get(input_field), sort_keys=True, ensure_ascii=False)
    return "sha1:" + hashlib.sha1(_bytes(payload)).hexdigest()[:16]


class Item(BaseModel):
    """One input record on its way to the labeler; `error` is set when the record itself is unreadable."""

    source_id: str
    task: dict[str, Any] | None = None
    error: str | None = None


def iter_items(path: Path, input_field: str) -> Iterator[Item]:
    """Items of a JSONL, JSON or CSV file, streamed (a JSON list is parsed whole: use JSONL for big pools).

    A record that cannot be read, or whose id is not a string or an integer, becomes a failed item named
    after its line ("line:7", "item:7" in a JSON list), with a reason naming the file and the line: not the
    end of the run. A record's own id seen before with the same content is the same item again (consumers label it
    once); with different content it is a failed item too, so two records never silently share an id.
    """
    if not path.exists():
        raise TaskFileError(f"{path}: no such file")
    unit = record_unit(path)
    first: dict[str, tuple[bytes, int]] = {}  # source id -> (content digest, where it was first seen)
    for number, parsed in numbered_records(path):
        if isinstance(parsed, str):
            yield _failed(path, unit, number, parsed)
            continue
        try:
            item = _item(parsed, input_field)
            assert item.task is not None
            # Without an id of its own the item is its input (the hash): records with the same input are one.
            digest = b"" if item.source_id.startswith("sha1:") else content_digest(item.task["data"])
        except IdTypeError as error:
            yield _failed(path, unit, number, str(error))
            continue
        except Exception as error:  # whatever else a record holds, it fails alone: the generator goes on
            yield _failed(path, unit, number, f"cannot be read: {type(error).__name__}: {error}")
            continue
        seen = first.setdefault(item.source_id, (digest, number))
        if seen[0] != digest:
            yield _failed(
                path,
                unit,
                number,
                f"source id {item.source_id!r} is already used by {unit} {seen[1]} with different content",
            )
            continue
        yield item


def _failed(path: Path, unit: str, number: int, reason: str) -> Item:
    return Item(source_id=f"{unit}:{number}", error=f"{path} {unit} {number}: {reason}")


def content_digest(data: dict[str, Any]) -> bytes:
    """A short digest of a record's content, to tell a repeated record from another one with its id (compared
    within one read of a file, never stored). Canonical JSON: keys sorted at every level, so key order does not
    matter. pydantic-core's encoder, at a third of json.dumps's time: it runs for every record of a pool."""
    try:
        payload = pydantic_core.to_json(_sorted_keys(data))
    except (TypeError, ValueError):  # a lone surrogate, or a key that is not text: the general path below
        try:
            text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
        except TypeError:  # a CSV row with extra fields has a None key beside the column names
            text = json.dumps(list(data.items()), ensure_ascii=False, default=str)
        payload = b"\x00" + _bytes(text)  # never equal to an encoding of the first kind
    return hashlib.blake2b(payload, digest_size=8).digest()


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("a key that is not text")
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def _bytes(text: str) -> bytes:
    """UTF-8 for hashing; a lone surrogate (JSON allows "\\ud800") is kept as its own bytes instead of
    raising. Text without one hashes exactly as before, so ids stay stable across versions."""
    return text.encode("utf-8", "surrogatepass")


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
        return sum(1 for _ in csv_rows(path)) - 1
    count = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                count += 1
    return count
