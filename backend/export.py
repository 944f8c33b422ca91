"""The fine-tuning dataset: reviewed tasks in, chat / instruction files out.

Each task contributes at most one example: the reviewer's label when there is one, else the LLM's label
when its rating reaches the threshold. Provenance (task, origin, levels, model version) goes to a side
file, never into the training text, so the model learns the task and not our bookkeeping.

Layout of an export directory:
    <out>/<format>/train.<ext>, <out>/<format>/validation.<ext>   one pair per format
    <out>/provenance.jsonl                                        one line per example, files' order
    <out>/manifest.json                                           counts, options, sha256 of every file
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from prelabel.judge import LEVELS, MAX_LEVEL, JudgeParseError, level_from_name
from prelabel.label_interface import TaskKind
from prelabel.records import ReviewedTask

FormatName = Literal["openai", "bedrock", "alpaca", "sharegpt", "parquet"]
FORMATS: tuple[FormatName, ...] = ("openai", "bedrock", "alpaca", "sharegpt", "parquet")
SPLITS: tuple[str, ...] = ("train", "validation")
Origin = Literal["human", "llm"]

MANIFEST = "manifest.json"
PROVENANCE = "provenance.jsonl"
MANIFEST_SCHEMA = "prelabel.export/1"

DEFAULT_INSTRUCTIONS: dict[str, str] = {
    "summarization": "Summarize the conversation between two users in one paragraph, keeping every important point.",
    "classification": "Classify the sentiment of the text as one of: {labels}.",
}
DEFAULT_THRESHOLD = LEVELS.index("good")

PARQUET_COLUMNS: tuple[str, ...] = ("instruction", "input", "output")
PROVENANCE_KEYS: tuple[str, ...] = (
    "example_id",
    "split",
    "task_id",
    "source_id",
    "origin",
    "llm_level",
    "human_level",
    "model_version",
    "round",
)
_MAX_PROBLEMS_PER_FILE = 20  # one systematic fault would otherwise repeat on every line


class ExportError(RuntimeError):
    """The export could not be written; any previous export at the target is left as it was."""


# -- options and results ---------------------------------------------------------------------------


class ExportOptions(BaseModel):
    """What to write and where. `instruction` defaults from `kind` (and `labels` for classification)."""

    out_dir: Path
    formats: list[FormatName] = Field(default_factory=lambda: list(FORMATS))
    kind: TaskKind = "summarization"
    labels: list[str] = []
    instruction: str | None = None
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    threshold: int = DEFAULT_THRESHOLD

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, value: list[FormatName]) -> list[FormatName]:
        if not value:
            raise ValueError(f"choose at least one format of {list(FORMATS)}")
        return list(dict.fromkeys(value))

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_level(cls, value: Any) -> int:
        # Accept "good", "3" or 3: the CLI and config files pass names, code passes ints.
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.isdigit():
                value = int(stripped)
            else:
                try:
                    return level_from_name(stripped)
                except JudgeParseError as error:
                    raise ValueError(str(error)) from None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LEVEL:
            raise ValueError(f"threshold must be a level 0..{MAX_LEVEL} or one of {list(LEVELS)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _resolve_instruction(self) -> ExportOptions:
        if self.instruction is None:
            if self.kind == "classification" and not self.labels:
                raise ValueError("classification needs its class labels for the default instruction")
            self.instruction = DEFAULT_INSTRUCTIONS[self.kind]
        self.instruction = self.instruction.replace("{labels}", ", ".join(self.labels)).strip()
        if not self.instruction:
            raise ValueError("instruction must not be empty")
        return self

    @property
    def threshold_name(self) -> str:
        return LEVELS[self.threshold]

    def manifest_options(self) -> dict[str, Any]:
        # The output path is left out so the same data exported anywhere yields a byte-identical manifest.
        return {
            "formats": list(self.formats),
            "kind": self.kind,
            "labels": list(self.labels),
            "instruction": self.instruction,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "threshold": self.threshold,
            "threshold_name": self.threshold_name,
        }


class SelectionCounts(BaseModel):
    """Why each input task was exported or not. Every task lands in exactly one bucket."""

    human: int = 0
    llm_accepted: int = 0
    dropped_low_rating: int = 0
    dropped_unrated: int = 0
    dropped_no_label: int = 0
    dropped_no_input: int = 0
    dropped_duplicate: int = 0

    @property
    def exported(self) -> int:
        return self.human + self.llm_accepted

    @property
    def dropped(self) -> int:
        return (
            self.dropped_low_rating
            + self.dropped_unrated
            + self.dropped_no_label
            + self.dropped_no_input
            + self.dropped_duplicate
        )

    @property
    def total(self) -> int:
        return self.exported + self.dropped


class TrainingExample(BaseModel):
    """One selected training pair and where it came from."""

    task_id: int
    input: str
    output: str
    origin: Origin
    source_id: str | None = None
    llm_level: int | None = None
    human_level: int | None = None
    model_version: str | None = None
    round: str | None = None


class ExportReport(BaseModel):
    out_dir: Path
    counts: SelectionCounts
    splits: dict[str, int]
    origins: dict[str, int]
    files: dict[str, Path]  # relative name ("openai/train.jsonl") -> absolute path
    manifest: Path
    provenance: Path


# -- selection -------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Whitespace-insensitive form used to spot duplicate inputs."""
    return " ".join(text.split())


def select_examples(
    tasks: Iterable[ReviewedTask], threshold: int = DEFAULT_THRESHOLD
) -> tuple[list[TrainingExample], SelectionCounts]:
    """Pick each task's label, in task-id order, dropping exact duplicates of an earlier pick.

    A reviewer's rating outranks the judge's: when a reviewer rated the LLM label but left no label of
    their own, their level decides whether the LLM label is kept.
    """
    counts = SelectionCounts()
    examples: list[TrainingExample] = []
    seen: set[tuple[str, str]] = set()
    for task in sorted(tasks, key=lambda t: t.task_id):
        human = (task.human_label or "").strip()
        llm = (task.llm_label or "").strip()
        if human:
            label, origin = human, "human"
        elif llm:
            level = task.human_level if task.reviewed and task.human_level is not None else task.llm_level
            if level is None:
                counts.dropped_unrated += 1
                continue
            if level < threshold:
                counts.dropped_low_rating += 1
                continue
            label, origin = llm, "llm"
        else:
            counts.dropped_no_label += 1
            continue
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


# -- format rows -----------------------------------------------------------------------------------


def openai_row(instruction: str, example: TrainingExample) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": instruction},
            {"role": "user", "content": example.input},
            {"role": "assistant", "content": example.output},
        ]
    }


def bedrock_row(instruction: str, example: TrainingExample) -> dict[str, Any]:
    return {
        "system": instruction,
        "messages": [
            {"role": "user", "content": example.input},
            {"role": "assistant", "content": example.output},
        ],
    }


def alpaca_row(instruction: str, example: TrainingExample) -> dict[str, Any]:
    return {"instruction": instruction, "input": example.input, "output": example.output}


def sharegpt_row(instruction: str, example: TrainingExample) -> dict[str, Any]:
    return {
        "conversations": [
            {"from": "system", "value": instruction},
            {"from": "human", "value": example.input},
            {"from": "gpt", "value": example.output},
        ]
    }


# json.dumps escapes control characters but leaves these raw, and str.splitlines() and some JSONL readers
# break lines at them.
_LINE_BREAKERS = {c: f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}
_ESCAPE_LINE_BREAKERS = str.maketrans(_LINE_BREAKERS)


def _json_line(row: dict[str, Any]) -> str:
    # ensure_ascii=False keeps non-English text readable; the few line-breaking characters stay escaped so
    # every reader sees one example per line.
    return json.dumps(row, ensure_ascii=False).translate(_ESCAPE_LINE_BREAKERS) + "\n"


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(_json_line(row))


def _jsonl_writer(
    row: Callable[[str, TrainingExample], dict[str, Any]],
) -> Callable[[Path, str, str, list[TrainingExample]], Path]:
    def write(folder: Path, split: str, instruction: str, examples: list[TrainingExample]) -> Path:
        path = folder / f"{split}.jsonl"
        _write_jsonl(path, (row(instruction, example) for example in examples))
        return path

    return write


def _write_parquet(folder: Path, split: str, instruction: str, examples: list[TrainingExample]) -> Path:
    # heavy import, only for Parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "instruction": pa.array([instruction] * len(examples), type=pa.string()),
            "input": pa.array([e.input for e in examples], type=pa.string()),
            "output": pa.array([e.output for e in examples], type=pa.string()),
        }
    )
    path = folder / f"{split}.parquet"
    pq.write_table(table, path)
    return path


_WRITERS: dict[str, Callable[[Path, str, str, list[TrainingExample]], Path]] = {
    "openai": _jsonl_writer(openai_row),
    "bedrock": _jsonl_writer(bedrock_row),
    "alpaca": _jsonl_writer(alpaca_row),
    "sharegpt": _jsonl_writer(sharegpt_row),
    "parquet": _write_parquet,
}


# -- export ----------------------------------------------------------------------------------------


def export_dataset(tasks: Iterable[ReviewedTask], options: ExportOptions) -> ExportReport:
    """Select, split and write every requested format, then swap the finished directory into place."""
    examples, counts = select_examples(tasks, options.threshold)
    if not examples:
        # An empty export would silently replace a useful one.
        raise ExportError(f"no task qualifies for export: {counts.model_dump()}")
    splits = split_examples(examples, options.validation_fraction, options.seed)

    target = Path(os.path.abspath(options.out_dir))
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir()
    try:
        written = _write_all(staging, splits, counts, options)
        problems = validate_export(staging)
        if problems:
            raise ExportError("the export failed its own validation:\n" + "\n".join(problems))
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    return ExportReport(
        out_dir=target,
        counts=counts,
        splits={split: len(rows) for split, rows in splits.items()},
        origins=_origins(examples),
        files={name: target / name for name in written},
        manifest=target / MANIFEST,
        provenance=target / PROVENANCE,
    )


def _origins(examples: Sequence[TrainingExample]) -> dict[str, int]:
    return {origin: sum(1 for e in examples if e.origin == origin) for origin in ("human", "llm")}


def _check_replaceable(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")
    # Only a previous export (or an empty folder) is replaced: a mistyped --out must not wipe a project.
    if any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise ExportError(f"{target} is not empty and holds no {MANIFEST}: refusing to replace it")


def _write_all(
    folder: Path, splits: dict[str, list[TrainingExample]], counts: SelectionCounts, options: ExportOptions
) -> list[str]:
    assert options.instruction is not None
    written: list[Path] = []
    for name in options.formats:
        format_dir = folder / name
        format_dir.mkdir()
        for split in SPLITS:
            if splits[split]:  # no empty validation file: some trainers reject one outright
                written.append(_WRITERS[name](format_dir, split, options.instruction, splits[split]))

    provenance = folder / PROVENANCE
    _write_jsonl(provenance, _provenance_rows(splits))
    written.append(provenance)

    files = {path.relative_to(folder).as_posix(): _file_entry(path) for path in written}
    all_examples = [e for split in SPLITS for e in splits[split]]
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "counts": {**counts.model_dump(), "exported": counts.exported, "total": counts.total},
        "splits": {split: len(splits[split]) for split in SPLITS},
        "origins": _origins(all_examples),
        "options": options.manifest_options(),
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return list(files)


def _provenance_rows(splits: dict[str, list[TrainingExample]]) -> Iterable[dict[str, Any]]:
    for split in SPLITS:
        for index, example in enumerate(splits[split]):
            yield {
                "example_id": f"{split}-{index:06d}",  # the example's line number within its split's files
                "split": split,
                "task_id": example.task_id,
                "source_id": example.source_id,
                "origin": example.origin,
                "llm_level": example.llm_level,
                "human_level": example.human_level,
                "model_version": example.model_version,
                "round": example.round,
            }


def _file_entry(path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    if path.suffix == ".parquet":
        entry["rows"] = _parquet_rows(path)
    else:
        entry["lines"] = _line_count(path)
    return entry


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _line_count(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq  # heavy import, only for Parquet

    return int(pq.ParquetFile(path).metadata.num_rows)


def _swap_into_place(staging: Path, target: Path) -> None:
    # Two renames: the old export stays whole until the new one is complete, and comes back on failure.
    backup: Path | None = None
    if target.exists():
        backup = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.old"
        os.rename(target, backup)
    try:
        os.rename(staging, target)
    except BaseException:
        if backup is not None:
            os.rename(backup, target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


# -- validation ------------------------------------------------------------------------------------


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
        if entry.get("sha256") != _sha256(path):
            problems.append(f"{relative}: sha256 does not match {MANIFEST}")
        if "lines" in entry and entry["lines"] != _line_count(path):
            problems.append(f"{relative}: {_line_count(path)} lines, {MANIFEST} says {entry['lines']}")
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
        elif row["split"] != split or row["example_id"] != f"{split}-{index:06d}":
            problems.append(f"{PROVENANCE}:{number}: expected {split}-{index:06d}, got {row['example_id']!r}")
        elif row["origin"] not in ("human", "llm"):
            problems.append(f"{PROVENANCE}:{number}: origin must be 'human' or 'llm', got {row['origin']!r}")
        if len(problems) > _MAX_PROBLEMS_PER_FILE:
            problems.append(f"{PROVENANCE}: stopping after {_MAX_PROBLEMS_PER_FILE} problems")
            break
    return problems
