"""Labeling a whole pool: streamed input, bounded concurrency, one output line per finished item, resumable.

The input is read one record at a time and at most `window` items are in flight, so memory does not grow
with the pool (only the set of source ids seen does). Each finished item is appended to the output JSONL at
once with a single write. Rerunning the same command reads the output first: items labeled before are
skipped, failed ones (and ones a passing judge failure left unrated) are dropped from the file and tried again,
and a last line cut short by a kill is removed, so every source id ends up in the output exactly once.

Every item read is accounted for (labeled, failed with its reason, or not done because the run was stopped),
and a fault that more calls cannot fix (the output cannot be written, MODEL_DIR is full) stops the run: no
new item starts and the engine makes no further paid call.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel.costs import RoleUsage, UsageMeter
from prelabel.engine import Engine, build_engine, close_engine
from prelabel.label_interface import LabelConfig
from prelabel.labeling.items import Item, iter_items
from prelabel.labeling.output import (
    BulkRecord,
    OutputWriter,
    claim_output,
    prepare_output,
    refuse_same_file,
)
from prelabel.pipeline import Labeler
from prelabel.pricing import load_prices
from prelabel.settings import Settings
from prelabel.store import BatchedLogStore
from prelabel.tally import Tally

MAX_LISTED_FAILURES = 20


class Progress(BaseModel):
    """A snapshot for progress displays."""

    done: int
    labeled: int
    failed: int
    unrated: int
    tokens: int
    cost_usd: float | None


class BulkSummary(BaseModel):
    """What one run did. Every item read is accounted for: seen == labeled + failed + not_done."""

    output: str
    model_version: str
    seen: int = 0  # distinct items read from the input this run (items done in earlier runs not counted)
    already_done: int = 0
    labeled: int = 0
    unrated: int = 0
    failed: int = 0  # with a reason: in the output with "error" set, or listed as not written
    unwritten: int = 0  # of the failed: finished, but the output could not take their line
    not_done: int = 0  # read, but the run was interrupted or stopped before they started
    duplicates: int = 0
    retried_failed: int = 0
    rerated: int = 0  # earlier items left unrated by a passing judge failure, rated again
    relabeled: dict[str, int] = {}  # model_version -> its earlier lines labeled again (relabel)
    dropped_partial_line: bool = False
    interrupted: bool = False
    stop_reason: str | None = None  # a fault stopped the run: no paid call was made after it
    input_finished: bool = False  # the whole input was read
    problems: list[str] = []  # faults besides the items' own (a progress display that raised)
    elapsed_s: float = 0.0
    failures: list[str] = []  # the first few "source id: reason"
    usage: list[RoleUsage] = []
    cost_usd: float | None = 0.0
    outcomes: Tally = Tally()  # this run's items: rated, unrated with reasons, failed with reasons

    @property
    def items_per_s(self) -> float:
        return (self.labeled + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every item of the input has a line in the output (failed ones included)."""
        return self.input_finished and not self.not_done and not self.unwritten and not self.interrupted

    @property
    def ok(self) -> bool:
        """Nothing failed and nothing was left undone: the exit code is 0 only then."""
        return self.complete and not self.failed and not self.problems and self.stop_reason is None


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
        relabel: bool = False,
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
        self.relabel = relabel
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.window)
        self._summary = BulkSummary(output=str(output), model_version=labeler.model_version)
        self._writer: OutputWriter | None = None

    def run(self, items: Iterator[Item]) -> BulkSummary:
        with claim_output(self.output):
            return self._run(items)

    def _run(self, items: Iterator[Item]) -> BulkSummary:
        state = prepare_output(
            self.output, self.retry_failed, model_version=self.labeler.model_version, relabel=self.relabel
        )
        summary = self._summary
        summary.already_done = len(state.done)
        summary.retried_failed = state.retrying
        summary.rerated = state.rerating
        summary.relabeled = state.relabeling
        summary.dropped_partial_line = state.dropped_partial_line
        done_before = state.done
        submitted: set[str] = set()  # an id repeated in the input is labeled once
        writer = self._writer = OutputWriter(self.output)
        started = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="prelabel-bulk")
        try:
            with StopOnSignal() as signalled:
                for item in items:
                    if signalled.is_set() or self._stopped():
                        break
                    if item.source_id in done_before:
                        continue
                    if item.source_id in submitted:
                        summary.duplicates += 1
                        continue
                    submitted.add(item.source_id)
                    with self._lock:
                        summary.seen += 1
                    if item.error is not None:
                        record = BulkRecord(
                            source_id=item.source_id, error=item.error, model_version=self.labeler.model_version
                        )
                        self._finish(record)
                        continue
                    cached = self.labeler.label_from_cache(item.task)
                    if cached is not None:  # nothing to wait for: no worker hand-off
                        self._finish(BulkRecord.from_outcome(item.source_id, cached))
                        continue
                    if not self._take_slot(signalled):  # stopped while waiting for a worker
                        with self._lock:
                            summary.not_done += 1
                        break
                    future = pool.submit(self._work, item.source_id, item.task)
                    future.add_done_callback(functools.partial(self._settled, item.source_id))
                else:
                    summary.input_finished = True
                # Ctrl-C or a fault: items not started yet are given back (the next run does them); the
                # ones in flight finish and are written.
                stopping = signalled.is_set() or self._stopped()
                pool.shutdown(wait=True, cancel_futures=stopping)
                summary.interrupted = signalled.is_set()
        finally:
            pool.shutdown(wait=True)
            writer.close()
            summary.stop_reason = self.engine.stop_reason
            summary.elapsed_s = time.perf_counter() - started
            if self.meter is not None:
                summary.usage = self.meter.roles()
                summary.cost_usd = self.meter.cost_usd
        return summary

    def _stopped(self) -> bool:
        """A fault stopped the run (the output could not be written, MODEL_DIR is full or read-only): no new
        item is started; the engine refuses any further paid call."""
        return self.engine.stop_reason is not None

    def _take_slot(self, signalled: threading.Event) -> bool:
        while not self._slots.acquire(timeout=0.05):
            if signalled.is_set() or self._stopped():
                return False
        if signalled.is_set() or self._stopped():
            self._slots.release()
            return False
        return True

    def _work(self, sid: str, task: Any) -> None:
        """One item in a worker: label it and write its line. Never raises: every item ends labeled, failed
        with its reason, or (when the output fails) listed as not written."""
        try:
            if self._stopped():  # waiting in the queue when a fault stopped the run: the next run does it
                with self._lock:
                    self._summary.not_done += 1
                return
            try:
                outcome = self.labeler.label_task(task)
            except Exception as error:  # label_task reports its own errors; this is a bug, kept to its item
                outcome = self.labeler.failed(task, f"internal error: {type(error).__name__}: {error}")
            self._finish(BulkRecord.from_outcome(sid, outcome))
        except Exception as error:
            self._count_failed(sid, f"internal error: {type(error).__name__}: {error}")
        finally:
            self._slots.release()

    def _settled(self, sid: str, future: Future[None]) -> None:
        # _work never raises; a future cancelled before it started (Ctrl-C, a fault) is counted here.
        if future.cancelled():
            with self._lock:
                self._summary.not_done += 1
            self._slots.release()
        elif future.exception() is not None:
            self._count_failed(sid, f"internal error: {future.exception()}")

    def _finish(self, record: BulkRecord) -> None:
        """Write the item's line and count it; a failing output stops the run."""
        assert self._writer is not None
        try:
            self._writer.write(record.line())
        except OSError as error:
            # Disk full, read-only, too large: nothing more can be kept, so nothing more is paid for. The stop
            # reason names the path once; each item says only that its line was lost.
            self.engine.stop(str(error))
            self._count_failed(record.source_id, "finished, but its line could not be written", unwritten=True)
            return
        with self._lock:
            summary = self._summary
            summary.outcomes.add(
                error=record.error, unrated_reason=record.unrated_reason, rated=record.level is not None
            )
            if record.error is not None:
                summary.failed += 1
                if len(summary.failures) < MAX_LISTED_FAILURES:
                    summary.failures.append(printable(f"{record.source_id}: {record.error}"))
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
        self._report(snapshot)

    def _count_failed(self, sid: str, reason: str, unwritten: bool = False) -> None:
        with self._lock:
            summary = self._summary
            summary.outcomes.add(error=reason, unrated_reason=None, rated=False)
            summary.failed += 1
            summary.unwritten += unwritten
            if len(summary.failures) < MAX_LISTED_FAILURES:
                summary.failures.append(printable(f"{sid}: {reason}"))

    def _report(self, snapshot: Progress) -> None:
        """The progress display: its failure is the run's problem (listed, exit non-zero), not the item's,
        whose line is written. It is not called again after it failed."""
        on_progress = self.on_progress
        if on_progress is None:
            return
        try:
            on_progress(snapshot)
        except Exception as error:
            with self._lock:
                if self.on_progress is None:
                    return
                self.on_progress = None
                problem = f"the progress display failed: {type(error).__name__}: {error}"
                self._summary.problems.append(printable(problem))


def printable(text: str) -> str:
    """Text safe to print on any terminal: a lone surrogate (from an id) becomes its escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def label_file(
    settings: Settings,
    config: LabelConfig,
    input_path: Path,
    output: Path,
    *,
    concurrency: int | None = None,
    input_field: str | None = None,
    retry_failed: bool = True,
    relabel: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    engine: Engine | None = None,
    meter: UsageMeter | None = None,
) -> BulkSummary:
    """Label every item of `input_path` not already in `output`, appending to `output`.

    Refused (OutputRefused, before any call) when the output is the input, is not a prelabel output, holds
    another model_version (unless `relabel`), or is being written by another run.
    """
    refuse_same_file(input_path, output)
    meter = meter or UsageMeter(load_prices(settings.prelabel_prices))
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
            relabel=relabel,
            on_progress=on_progress,
        )
        return run.run(iter_items(input_path, input_field or config.data_key))
    finally:
        if isinstance(engine.store, BatchedLogStore):
            engine.store.flush()
        if own_engine:
            close_engine(engine)


class StopOnSignal:
    """Ctrl-C or SIGTERM during a run asks it to stop: no new item is started, the items in flight finish and
    are written, and the caller gets the summary that says to rerun. The handler only sets a flag (and
    acknowledges a second or third press), so no exception ever lands half way through writing or counting an
    item. Only the main thread can set handlers; elsewhere, and where SIGINT is ignored, nothing changes."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(number) is not signal.SIG_IGN:  # nohup and background jobs keep theirs
                    self._previous[number] = signal.signal(number, self._handle)
        return self.event

    def _handle(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            # os.write, not logging or print: a signal handler may run while the main thread holds their locks.
            os.write(2, b"stopping: the items in flight finish and are written first\n")
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
