"""Checking a written export: the manifest's checksums and counts, each format file's shape (Bedrock's rules
among them, as `bedrock_problems`), and the provenance file."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prelabel.export.formats import PARQUET_COLUMNS
from prelabel.export.layout import MANIFEST, PROVENANCE, PROVENANCE_KEYS, example_id, file_sha256, line_count
from prelabel.export.selection import SPLITS

_MAX_PROBLEMS_PER_FILE = 20  # one systematic fault would otherwise repeat on every line


def validate_export(directory: Path | str) -> list[str]:
    """Every problem found in an export directory, as readable lines; an empty list means valid.

    Checks the manifest's checksums and counts, each format file's shape, and the provenance file.
    """
    root = Path(directory)
    problems: list[str] = []
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return [f"{MANIFEST}: missing"]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return [f"{MANIFEST}: unreadable: {error}"]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return [f"{MANIFEST}: no 'files' table"]

    files: dict[str, Any] = manifest["files"]
    problems += _check_checksums(root, files)
    problems += _check_unlisted(root, files)

    splits = manifest.get("splits") or {}
    formats = (manifest.get("options") or {}).get("formats") or []
    for name in formats:
        if name not in _CHECKERS:
            problems.append(f"{MANIFEST}: unknown format {name!r}")
            continue
        ext = "parquet" if name == "parquet" else "jsonl"
        for split in SPLITS:
            relative = f"{name}/{split}.{ext}"
            path = root / relative
            expected = splits.get(split, 0)
            if not path.is_file():
                if expected:
                    problems.append(f"{relative}: missing ({expected} examples expected)")
                continue
            found, shape_problems = _CHECKERS[name](path, relative)
            problems += shape_problems
            if found is not None and found != expected:
                problems.append(f"{relative}: {found} examples, manifest says {expected}")

    problems += _check_provenance(root, splits)
    return problems


def _check_checksums(root: Path, files: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for relative, entry in files.items():
        path = root / relative
        if not path.is_file():
            problems.append(f"{relative}: listed in {MANIFEST} but missing")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{MANIFEST}: entry for {relative} is not an object")
            continue
        if entry.get("sha256") != file_sha256(path):
            problems.append(f"{relative}: sha256 does not match {MANIFEST}")
        if "lines" in entry and entry["lines"] != line_count(path):
            problems.append(f"{relative}: {line_count(path)} lines, {MANIFEST} says {entry['lines']}")
    return problems


def _check_unlisted(root: Path, files: dict[str, Any]) -> list[str]:
    listed = set(files) | {MANIFEST}
    return [
        f"{path.relative_to(root).as_posix()}: not listed in {MANIFEST}"
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() not in listed
    ]


def _read_jsonl(path: Path, relative: str) -> tuple[list[tuple[int, Any]], int, list[str]]:
    """(line number, parsed row) for each line that parses, the number of lines, and the problems."""
    rows: list[tuple[int, Any]] = []
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return rows, 0, [f"{relative}: unreadable: {error}"]
    if text and not text.endswith("\n"):
        problems.append(f"{relative}: last line has no newline")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            problems.append(f"{relative}:{number}: not JSON: {error.msg}")
    return rows, len(lines), problems


def _jsonl_checker(
    check_row: Callable[[Any], list[str]],
) -> Callable[[Path, str], tuple[int | None, list[str]]]:
    def check(path: Path, relative: str) -> tuple[int | None, list[str]]:
        rows, line_count, problems = _read_jsonl(path, relative)
        row_problems: list[str] = []
        for number, row in rows:
            row_problems += [f"{relative}:{number}: {problem}" for problem in check_row(row)]
        if len(row_problems) > _MAX_PROBLEMS_PER_FILE:
            hidden = len(row_problems) - _MAX_PROBLEMS_PER_FILE
            row_problems = row_problems[:_MAX_PROBLEMS_PER_FILE] + [f"{relative}: ... and {hidden} more"]
        return line_count, problems + row_problems

    return check


def _nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_keys(row: Any, required: set[str], optional: frozenset[str] = frozenset()) -> list[str]:
    if not isinstance(row, dict):
        return [f"expected an object, got {type(row).__name__}"]
    problems = []
    if missing := sorted(required - row.keys()):
        problems.append(f"missing keys {missing}")
    if extra := sorted(row.keys() - required - optional):
        problems.append(f"unexpected keys {extra}")
    return problems


def _check_turns(turns: Any, role_key: str, text_key: str, expected_roles: Sequence[str]) -> list[str]:
    if not isinstance(turns, list):
        return [f"expected a list of turns, got {type(turns).__name__}"]
    problems: list[str] = []
    roles: list[Any] = []
    for index, turn in enumerate(turns):
        keys = _check_keys(turn, {role_key, text_key})
        if keys:
            problems += [f"turn {index}: {p}" for p in keys]
            roles.append(None)
            continue
        roles.append(turn[role_key])
        if not _nonempty_string(turn[text_key]):
            problems.append(f"turn {index}: {text_key} must be a non-empty string")
    if roles != list(expected_roles):
        problems.append(f"roles {roles} should be {list(expected_roles)}")
    return problems


def _check_openai_row(row: Any) -> list[str]:
    problems = _check_keys(row, {"messages"})
    if problems:
        return problems
    return _check_turns(row["messages"], "role", "content", ("system", "user", "assistant"))


def bedrock_problems(row: Any) -> list[str]:
    """Amazon Bedrock's rules for Anthropic fine-tuning records: an optional string `system`, then at
    least two messages that start with the user, end with the assistant and alternate, each with non-empty
    content, and no other keys anywhere."""
    problems = _check_keys(row, {"messages"}, frozenset({"system"}))
    if problems:
        return problems
    if "system" in row and not isinstance(row["system"], str):
        problems.append("system must be a string")
    messages = row["messages"]
    if not isinstance(messages, list):
        return problems + ["messages must be a list"]
    if len(messages) < 2:
        problems.append(f"needs at least two messages, has {len(messages)}")
    roles: list[Any] = []
    for index, message in enumerate(messages):
        keys = _check_keys(message, {"role", "content"})
        if keys:
            problems += [f"message {index}: {p}" for p in keys]
            roles.append(None)
            continue
        roles.append(message["role"])
        if message["role"] not in ("user", "assistant"):
            problems.append(f"message {index}: role must be 'user' or 'assistant', got {message['role']!r}")
        if not _nonempty_string(message["content"]):
            problems.append(f"message {index}: content must be a non-empty string")
    if roles and roles[0] != "user":
        problems.append(f"first message must be from the user, not {roles[0]!r}")
    if roles and roles[-1] != "assistant":
        problems.append(f"last message must be from the assistant, not {roles[-1]!r}")
    for index in range(1, len(roles)):
        if roles[index] is not None and roles[index] == roles[index - 1]:
            problems.append(f"message {index}: roles must alternate, two {roles[index]!r} in a row")
    return problems


def _check_alpaca_row(row: Any) -> list[str]:
    problems = _check_keys(row, {"instruction", "input", "output"})
    if problems:
        return problems
    for key in ("instruction", "input", "output"):
        if not _nonempty_string(row[key]):
            problems.append(f"{key} must be a non-empty string")
    return problems


def _check_sharegpt_row(row: Any) -> list[str]:
    problems = _check_keys(row, {"conversations"})
    if problems:
        return problems
    return _check_turns(row["conversations"], "from", "value", ("system", "human", "gpt"))


def _check_parquet(path: Path, relative: str) -> tuple[int | None, list[str]]:
    # heavy import, only for Parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        return None, [f"{relative}: unreadable parquet: {error}"]
    problems: list[str] = []
    if table.column_names != list(PARQUET_COLUMNS):
        problems.append(f"{relative}: columns {table.column_names} should be {list(PARQUET_COLUMNS)}")
        return table.num_rows, problems
    for column in PARQUET_COLUMNS:
        if not pa.types.is_string(table.schema.field(column).type):
            problems.append(f"{relative}: column {column} is {table.schema.field(column).type}, not string")
        elif any(not _nonempty_string(value) for value in table.column(column).to_pylist()):
            problems.append(f"{relative}: column {column} has empty values")
    return table.num_rows, problems


_CHECKERS: dict[str, Callable[[Path, str], tuple[int | None, list[str]]]] = {
    "openai": _jsonl_checker(_check_openai_row),
    "bedrock": _jsonl_checker(bedrock_problems),
    "alpaca": _jsonl_checker(_check_alpaca_row),
    "sharegpt": _jsonl_checker(_check_sharegpt_row),
    "parquet": _check_parquet,
}


def _check_provenance(root: Path, splits: dict[str, Any]) -> list[str]:
    path = root / PROVENANCE
    if not path.is_file():
        return [f"{PROVENANCE}: missing"]
    rows, _, problems = _read_jsonl(path, PROVENANCE)
    expected_order = [(split, index) for split in SPLITS for index in range(int(splits.get(split, 0) or 0))]
    if len(rows) != len(expected_order):
        problems.append(f"{PROVENANCE}: {len(rows)} lines, manifest splits add up to {len(expected_order)}")
    for (number, row), (split, index) in zip(rows, expected_order, strict=False):
        keys = _check_keys(row, set(PROVENANCE_KEYS))
        if keys:
            problems += [f"{PROVENANCE}:{number}: {p}" for p in keys]
        elif row["split"] != split or row["example_id"] != example_id(split, index):
            problems.append(f"{PROVENANCE}:{number}: expected {example_id(split, index)}, got {row['example_id']!r}")
        elif row["origin"] not in ("human", "llm"):
            problems.append(f"{PROVENANCE}:{number}: origin must be 'human' or 'llm', got {row['origin']!r}")
        if len(problems) > _MAX_PROBLEMS_PER_FILE:
            problems.append(f"{PROVENANCE}: stopping after {_MAX_PROBLEMS_PER_FILE} problems")
            break
    return problems
