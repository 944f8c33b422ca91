"""The output file of a labeling run: one JSON line per item, appended with a single write, and what a rerun
reads back from it to resume (done items are skipped, failed ones tried again, a cut last line removed)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from prelabel.pipeline import LabelOutcome


class BulkRecord(BaseModel):
    """One line of the output JSONL."""

    source_id: str
    label: str | None = None
    rating: str | None = None
    level: int | None = None
    score: float | None = None
    reason: str | None = None
    unrated_reason: str | None = None
    error: str | None = None
    model_version: str | None = None
    warnings: list[str] | None = None

    @classmethod
    def from_outcome(cls, sid: str, outcome: LabelOutcome) -> BulkRecord:
        verdict = outcome.verdict
        return cls(
            source_id=sid,
            label=outcome.label if outcome.error is None else None,
            rating=verdict.level_name if verdict else None,
            level=verdict.level if verdict else None,
            score=outcome.score,
            reason=verdict.reason if verdict else None,
            unrated_reason=outcome.unrated_reason,
            error=outcome.error,
            model_version=outcome.model_version,
            warnings=outcome.warnings or None,
        )

    def line(self) -> bytes:
        return (
            json.dumps(
                self.model_dump(exclude_none=False, exclude={"warnings"} if not self.warnings else None),
                ensure_ascii=False,
            )
            + "\n"
        ).encode("utf-8")


class ResumeState(BaseModel):
    """What an earlier run left in the output file."""

    done: set[str] = set()
    labeled: int = 0
    retrying: int = 0  # failed items dropped from the file, to be tried again
    dropped_partial_line: bool = False
    dropped_unreadable: int = 0
    dropped_duplicates: int = 0


def prepare_output(path: Path, retry_failed: bool = True, repair: bool = True) -> ResumeState:
    """Read the output of an earlier run and (with `repair`) leave the file holding only lines to keep.

    A final line without its newline (the process was killed while writing it) is cut off. Lines of failed
    items (when retrying them), unreadable lines and repeated source ids are removed by rewriting the file
    to a temporary one and renaming it over the original, so a crash during the repair loses nothing.
    """
    state = ResumeState()
    if not path.exists():
        return state
    keep_end = 0  # byte offset just past the last complete line
    rewrite = False
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                state.dropped_partial_line = True
                break
            keep_end += len(raw)
            verdict = _classify_line(raw, state, retry_failed)
            if verdict != "keep" and verdict != "blank":
                rewrite = True
    if not repair:
        return state
    if rewrite:
        _rewrite(path, keep_end, retry_failed)
    elif state.dropped_partial_line:
        os.truncate(path, keep_end)
    return state


def _classify_line(raw: bytes, state: ResumeState, retry_failed: bool) -> str:
    if not raw.strip():
        return "blank"
    try:
        record = json.loads(raw)
        sid = record["source_id"]
    except (ValueError, KeyError, TypeError):
        state.dropped_unreadable += 1
        return "unreadable"
    sid = str(sid)
    if sid in state.done:
        state.dropped_duplicates += 1
        return "duplicate"
    if record.get("error") is not None and retry_failed:
        state.retrying += 1
        return "retry"
    state.done.add(sid)
    if record.get("error") is None:
        state.labeled += 1
    return "keep"


def _rewrite(path: Path, end: int, retry_failed: bool) -> None:
    scratch = ResumeState()
    temporary = path.with_name(path.name + ".resume-tmp")
    with path.open("rb") as source, temporary.open("wb") as target:
        position = 0
        for raw in source:
            position += len(raw)
            if position > end:
                break
            if _classify_line(raw, scratch, retry_failed) == "keep":
                target.write(raw)
        target.flush()
        os.fsync(target.fileno())
    os.replace(temporary, path)


class OutputWriter:
    """Appends one line per item with a single write() on an O_APPEND descriptor."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def previous_records(path: Path, limit: int) -> Iterator[dict[str, Any]]:
    """Up to `limit` labeled records of an earlier run's output (for estimates)."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for raw in handle:
            if limit <= 0:
                return
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("label") and record.get("error") is None:
                limit -= 1
                yield record
