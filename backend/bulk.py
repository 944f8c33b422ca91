"""Labeling a whole pool: streamed input, bounded concurrency, one output line per finished item, resumable.

The input is read one record at a time and at most `window` items are in flight, so memory does not grow
with the pool (only the set of source ids seen does). Each finished item is appended to the output JSONL at
once with a single write. Rerunning the same command reads the output first: items labeled before are
skipped, failed ones are dropped from the file and tried again, and a last line cut short by a kill is
removed, so every source id ends up in the output exactly once.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel.costs import RoleUsage, UsageMeter, load_prices
from prelabel.engine import Engine, build_engine, close_engine
from prelabel.label_interface import LabelConfig
from prelabel.pipeline import Labeler, LabelOutcome
from prelabel.push import source_id
from prelabel.settings import Settings
from prelabel.store import BatchedLogStore
from prelabel.tasks_io import TaskFileError, iter_records, jsonl_lines

MAX_LISTED_FAILURES = 20


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


class Item(BaseModel):
    """One input record on its way to the labeler; `error` is set when the record itself is unreadable."""

    source_id: str
    task: dict[str, Any] | None = None
    error: str | None = None


# -- the output file and resuming ------------------------------------------------------------------------


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


# -- the input -------------------------------------------------------------------------------------------


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
    for number, record in jsonl_lines(path):
        if isinstance(record, str):
            yield Item(source_id=f"line:{number}", error=f"line {number}: {record}")
        else:
            yield _item(record, input_field)


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


class Progress(BaseModel):
    """A snapshot for progress displays."""

    done: int
    labeled: int
    failed: int
    unrated: int
    tokens: int
    cost_usd: float | None


class BulkSummary(BaseModel):
    output: str
    model_version: str
    seen: int = 0  # distinct items read from the input this run
    already_done: int = 0
    labeled: int = 0
    unrated: int = 0
    failed: int = 0
    duplicates: int = 0
    retried_failed: int = 0
    dropped_partial_line: bool = False
    interrupted: bool = False
    elapsed_s: float = 0.0
    failures: list[str] = []  # the first few "source id: reason"; every failure is in the output
    usage: list[RoleUsage] = []
    cost_usd: float | None = 0.0

    @property
    def items_per_s(self) -> float:
        return (self.labeled + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0


class BulkRun:
    """Labels the items of an input file into an output JSONL with bounded concurrency."""

    def __init__(
        self,
        engine: Engine,
        labeler: Labeler,
        output: Path,
        *,
        concurrency: int,
        meter: UsageMeter | None = None,
        retry_failed: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
    ):
        self.engine = engine
        self.labeler = labeler
        self.output = output
        self.concurrency = max(1, concurrency)
        # Twice the workers, so a worker never waits for the reader; the bound keeps memory flat.
        self.window = self.concurrency * 2
        self.meter = meter
        self.retry_failed = retry_failed
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.window)
        self._summary = BulkSummary(output=str(output), model_version=labeler.model_version)

    def run(self, items: Iterator[Item]) -> BulkSummary:
        state = prepare_output(self.output, self.retry_failed)
        summary = self._summary
        summary.already_done = len(state.done)
        summary.retried_failed = state.retrying
        summary.dropped_partial_line = state.dropped_partial_line
        done_before = state.done
        submitted: set[str] = set()  # an id repeated in the input is labeled once
        writer = OutputWriter(self.output)
        started = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="prelabel-bulk")
        try:
            for item in items:
                if item.source_id in done_before:
                    continue
                if item.source_id in submitted:
                    summary.duplicates += 1
                    continue
                submitted.add(item.source_id)
                summary.seen += 1
                if item.error is not None:
                    self._finish(
                        writer,
                        BulkRecord(
                            source_id=item.source_id, error=item.error, model_version=self.labeler.model_version
                        ),
                        release=False,
                    )
                    continue
                cached = self.labeler.label_from_cache(item.task)
                if cached is not None:  # nothing to wait for: no worker hand-off
                    self._finish(writer, BulkRecord.from_outcome(item.source_id, cached), release=False)
                    continue
                self._slots.acquire()
                future = pool.submit(self.labeler.label_task, item.task)
                future.add_done_callback(lambda done, sid=item.source_id: self._done(writer, sid, done))
        except KeyboardInterrupt:
            summary.interrupted = True
            pool.shutdown(wait=True, cancel_futures=True)  # in-flight items finish and are written
        finally:
            pool.shutdown(wait=True)
            writer.close()
            summary.elapsed_s = time.perf_counter() - started
            if self.meter is not None:
                summary.usage = self.meter.roles()
                summary.cost_usd = self.meter.cost_usd
        return summary

    def _done(self, writer: OutputWriter, sid: str, future: Future[LabelOutcome]) -> None:
        if future.cancelled():  # interrupted before it started: the next run does it
            self._slots.release()
            return
        error = future.exception()
        if error is not None:
            outcome = self.labeler.failed({"id": sid}, f"internal error: {type(error).__name__}: {error}")
        else:
            outcome = future.result()
        self._finish(writer, BulkRecord.from_outcome(sid, outcome), release=True)

    def _finish(self, writer: OutputWriter, record: BulkRecord, release: bool) -> None:
        try:
            writer.write(record.line())
            with self._lock:
                summary = self._summary
                if record.error is not None:
                    summary.failed += 1
                    if len(summary.failures) < MAX_LISTED_FAILURES:
                        summary.failures.append(f"{record.source_id}: {record.error}")
                else:
                    summary.labeled += 1
                    summary.unrated += record.unrated_reason is not None
                snapshot = Progress(
                    done=summary.labeled + summary.failed,
                    labeled=summary.labeled,
                    failed=summary.failed,
                    unrated=summary.unrated,
                    tokens=self.meter.tokens if self.meter else 0,
                    cost_usd=self.meter.cost_usd if self.meter else None,
                )
            if self.on_progress is not None:
                self.on_progress(snapshot)
        finally:
            if release:
                self._slots.release()


def label_file(
    settings: Settings,
    config: LabelConfig,
    input_path: Path,
    output: Path,
    *,
    concurrency: int | None = None,
    input_field: str | None = None,
    retry_failed: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    engine: Engine | None = None,
    meter: UsageMeter | None = None,
) -> BulkSummary:
    """Label every item of `input_path` not already in `output`, appending to `output`."""
    meter = meter or UsageMeter(load_prices())
    own_engine = engine is None
    engine = engine or build_engine(settings, meter)
    try:
        labeler = engine.labeler(config)
        run = BulkRun(
            engine,
            labeler,
            output,
            concurrency=concurrency or settings.prelabel_concurrency,
            meter=meter,
            retry_failed=retry_failed,
            on_progress=on_progress,
        )
        with interrupt_on_sigterm():
            return run.run(iter_items(input_path, input_field or config.data_key))
    finally:
        if isinstance(engine.store, BatchedLogStore):
            engine.store.flush()
        if own_engine:
            close_engine(engine)


class interrupt_on_sigterm:
    """SIGTERM stops a run the way Ctrl-C does: in-flight items finish and are written."""

    def __enter__(self) -> None:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    @staticmethod
    def _handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
