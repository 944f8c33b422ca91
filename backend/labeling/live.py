"""Labeling a whole pool: streamed input, bounded concurrency, one output line per finished item, resumable.

The input is read one record at a time and at most `window` items are in flight, so memory does not grow
with the pool (only the set of source ids seen does). Each finished item is appended to the output JSONL at
once with a single write. Rerunning the same command reads the output first: items labeled before are
skipped, failed ones are dropped from the file and tried again, and a last line cut short by a kill is
removed, so every source id ends up in the output exactly once.
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

from pydantic import BaseModel

from prelabel.costs import RoleUsage, UsageMeter
from prelabel.engine import Engine, build_engine, close_engine
from prelabel.label_interface import LabelConfig
from prelabel.labeling.items import Item, iter_items
from prelabel.labeling.output import BulkRecord, OutputWriter, prepare_output
from prelabel.pipeline import Labeler, LabelOutcome
from prelabel.pricing import load_prices
from prelabel.settings import Settings
from prelabel.store import BatchedLogStore

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
        restore_signals: Callable[[], None] = _nothing
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
                future.add_done_callback(functools.partial(self._done, writer, item.source_id))
        except KeyboardInterrupt:
            summary.interrupted = True
            restore_signals = absorb_further_interrupts()
            pool.shutdown(wait=True, cancel_futures=True)  # in-flight items finish and are written
        finally:
            pool.shutdown(wait=True)
            writer.close()
            restore_signals()
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
            on_progress=on_progress,
        )
        with interrupt_on_sigterm():
            return run.run(iter_items(input_path, input_field or config.data_key))
    finally:
        if isinstance(engine.store, BatchedLogStore):
            engine.store.flush()
        if own_engine:
            close_engine(engine)


def _nothing() -> None:
    pass


def absorb_further_interrupts() -> Callable[[], None]:
    """Once a run is stopping, a second or third Ctrl-C (or SIGTERM) is acknowledged, not raised: the items in
    flight still finish and are written, and the caller still gets the summary that says to rerun. Returns the
    function that puts the previous handlers back. Only the main thread can set handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return _nothing
    previous = {number: signal.signal(number, _acknowledge) for number in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore


def _acknowledge(signum: int, frame: object) -> None:
    # os.write, not logging or print: a signal handler may run while the main thread holds their locks.
    os.write(2, b"stopping: the items in flight finish and are written first\n")


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
