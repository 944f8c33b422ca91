"""Reading task files: JSONL, JSON (a list) or CSV, each record a Label Studio task or bare task data.

Files are read as people have them: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is skipped, and a record
that cannot be read (a line that is not UTF-8, a CSV field over the csv module's default limit, a JSONL line
that is not a JSON object) comes back as a reason for that record alone, named by its line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CSV_FIELD_LIMIT = 131072  # the csv module's default field limit: a longer field fails its record
_CSV_READ_LIMIT = 2**31 - 1  # read past the limit, so a long field does not throw the rest of the file off


class TaskFileError(ValueError):
    """A task file cannot be read; the message names the file and the line."""


def record_unit(path: Path) -> str:
    """How a record's place in the file is named: "item" for a JSON list, else "line"."""
    return "item" if path.suffix.lower() == ".json" else "line"


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL, JSON or CSV file, streamed where the format allows; a bad record ends the file."""
    unit = record_unit(path)
    for number, record in numbered_records(path):
        if isinstance(record, str):
            raise TaskFileError(f"{path} {unit} {number}: {record}")
        yield record


def numbered_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line or item number, record) for each record; a record that cannot be read comes as the reason
    instead, so a reader can decide whether it ends the file or only that item."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_records(path)
    elif suffix == ".json":
        yield from _json_records(path)
    else:
        yield from jsonl_lines(path)


def _is_utf8(text: str) -> bool:
    """False for text decoded with surrogateescape from bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig", errors="surrogateescape"))
    except json.JSONDecodeError as error:
        raise TaskFileError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, list):
        raise TaskFileError(f"{path}: a JSON task file must hold a list of tasks")
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            yield number, "not a JSON object"
        elif not _is_utf8(json.dumps(item, ensure_ascii=False)):
            yield number, "not valid UTF-8"
        else:
            yield number, item


def jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, record) for each non-blank line; a line that is not a JSON object comes as the reason."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not _is_utf8(line):
                yield number, "not valid UTF-8"
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, f"not valid JSON: {error.msg}"
                continue
            yield number, record if isinstance(record, dict) else "not a JSON object"


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line, fields) of each CSV row, the header included; fields longer than the csv module's
    default limit are read whole (the caller refuses them) instead of ending the file."""
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle)
        while True:
            start = reader.line_num + 1
            limit = csv.field_size_limit(_CSV_READ_LIMIT)
            try:
                row = next(reader, None)
            finally:
                csv.field_size_limit(limit)
            if row is None:
                return
            yield start, row


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Rows as csv.DictReader makes them (extra fields under None, missing ones None), blank rows skipped."""
    rows = csv_rows(path)
    header: list[str] | None = None
    for number, row in rows:
        if header is None:  # the first row, blank or not, as csv.DictReader takes it
            if not all(map(_is_utf8, row)):
                raise TaskFileError(f"{path} line {number}: the header is not valid UTF-8")
            header = row
            continue
        if not row:
            continue
        if any(len(field) > CSV_FIELD_LIMIT for field in row):
            yield number, f"a field is longer than {CSV_FIELD_LIMIT} characters (the csv module's limit)"
            continue
        if not all(map(_is_utf8, row)):
            yield number, "not valid UTF-8"
            continue
        record: dict[Any, Any] = dict(zip(header, row, strict=False))
        if len(row) > len(header):
            record[None] = row[len(header) :]
        for key in header[len(row) :]:
            record[key] = None
        yield number, record


def as_task(record: dict[str, Any], index: int) -> dict[str, Any]:
    """A Label Studio-shaped task ({id, data}) from a record that may be bare data."""
    if isinstance(record.get("data"), dict):
        return {"id": record.get("id", index), **record}
    return {"id": record.get("id", index), "data": record}


def read_tasks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise TaskFileError(f"{path}: no such file")
    return [as_task(record, index) for index, record in enumerate(iter_records(path), start=1)]
