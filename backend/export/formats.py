"""One row per training example in each format, and the writers of a split's file: JSON lines for OpenAI,
Bedrock, Alpaca and ShareGPT, a table of instruction, input and output for Parquet."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prelabel.export.options import TrainingExample

PARQUET_COLUMNS: tuple[str, ...] = ("instruction", "input", "output")


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


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(_json_line(row))


def _jsonl_writer(
    row: Callable[[str, TrainingExample], dict[str, Any]],
) -> Callable[[Path, str, str, list[TrainingExample]], Path]:
    def write(folder: Path, split: str, instruction: str, examples: list[TrainingExample]) -> Path:
        path = folder / f"{split}.jsonl"
        write_jsonl(path, (row(instruction, example) for example in examples))
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


# Format name -> the writer of one split's file in that format's folder; returns the file written.
WRITERS: dict[str, Callable[[Path, str, str, list[TrainingExample]], Path]] = {
    "openai": _jsonl_writer(openai_row),
    "bedrock": _jsonl_writer(bedrock_row),
    "alpaca": _jsonl_writer(alpaca_row),
    "sharegpt": _jsonl_writer(sharegpt_row),
    "parquet": _write_parquet,
}
