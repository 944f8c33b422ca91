"""Labeling a whole pool: streamed input, bounded concurrency, one output line per finished item, resumable.

The run is one coroutine on the engine's event loop: the input is read one record at a time and an item
becomes a task only when one of the `concurrency` slots is free, so memory does not grow with the pool (only
the set of source ids seen does), and an item answered wholly from the call cache is written at once, never
scheduled. The calling thread only waits, so Ctrl-C and SIGTERM reach StopOnSignal's handler at once. Each
finished item is appended to the output JSONL at once with a single write. Rerunning the same command reads
the output first: items labeled before are skipped, failed ones (and ones a passing judge failure left
unrated) are dropped from the file and tried again, and a last line cut short by a kill is removed, so every
source id ends up in the output exactly once.

Every item read is accounted for (labeled, failed with its reason, or not done because the run was stopped),
and a fault that more calls cannot fix (the output cannot be written, MODEL_DIR is full) stops the run: no
new item starts and the engine makes no further paid call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel.concurrency import clamp_to_rate_limits
from prelabel.costs import RoleUsage, UsageMeter
from prelabel.engine import Engine, build_engine, close_engine
from prelabel.label_interface import LabelConfig
from prelabel.labeling.items import Item, iter_items
from prelabel.labeling.memo import ItemMemo, Labeling, MemoHit
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

log = logging.getLogger("prelabel")

MAX_LISTED_FAILURES = 20
# A long stretch of cached items yields to the items in flight this often, so their answers are not held up.
CACHED_STRETCH = 256
# How often the run looks at the stop flag while its reader waits for a free slot.
STOP_POLL_S = 0.05


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
    notes: list[str] = []  # what the run chose for the user (a concurrency lowered to the rate limits)
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
    """Labels the items of an input file into an output JSONL with bounded concurrency, on the engine's loop."""

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
        self.meter = meter
        self.retry_failed = retry_failed
        self.relabel = relabel
        self.on_progress = on_progress
        self._lock = threading.Lock()  # the summary is also read by the waiting thread
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
        self._writer = OutputWriter(self.output)
        started = time.perf_counter()
        try:
            with StopOnSignal() as signalled:
                self.engine.run(self._drive(items, state.done, signalled))
                summary.interrupted = signalled.is_set()
        finally:
            self._writer.close()
            summary.stop_reason = self.engine.stop_reason
            summary.elapsed_s = time.perf_counter() - started
            if self.meter is not None:
                summary.usage = self.meter.roles()
                summary.cost_usd = self.meter.cost_usd
        return summary

    def note(self, text: str) -> None:
        """Something the run chose for the user, printed with its summary."""
        self._summary.notes.append(text)

    def _stopped(self) -> bool:
        """A fault stopped the run (the output could not be written, MODEL_DIR is full or read-only): no new
        item is started; the engine refuses any further paid call."""
        return self.engine.stop_reason is not None

    async def _drive(self, items: Iterator[Item], done_before: set[str], signalled: threading.Event) -> None:
        """Read the input, write what the cache answers at once, and keep up to `concurrency` items in flight.
        On Ctrl-C or a fault no new item starts; the items in flight finish and are written."""
        summary = self._summary
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        submitted: set[str] = set()  # an id repeated in the input is labeled once
        since_yield = 0
        probe = CacheProbe()
        memo = ItemMemo(self.engine, self.labeler)  # items labeled before: one lookup per block, written at once
        watcher = asyncio.create_task(self._watch(slots, signalled))
        try:
            for item, entry in memo.read_ahead(items, done_before):
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
                cached: BulkRecord | MemoHit | None = memo.answer(item.source_id, entry)
                read = None
                if cached is None:
                    read = self.labeler.readable(item.task)  # read once, for the cache and the live path alike
                    if read is not None and probe.worth_trying():
                        cached = memo.label_from_cache(item, read, entry)
                        probe.record(hit=cached is not None)
                if cached is not None:  # nothing to wait for: written now
                    self._finish(cached)
                    since_yield += 1
                    if since_yield >= CACHED_STRETCH:
                        since_yield = 0
                        await asyncio.sleep(0)
                    continue
                if not await self._take_slot(slots, signalled):  # stopped while waiting for a slot
                    with self._lock:
                        summary.not_done += 1
                    break
                task = asyncio.create_task(self._work(item.source_id, item.task, read, slots, memo.labeling(entry)))
                running.add(task)
                task.add_done_callback(running.discard)
            else:
                summary.input_finished = True
        finally:
            watcher.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            memo.close()

    async def _take_slot(self, slots: asyncio.Semaphore, signalled: threading.Event) -> bool:
        await slots.acquire()  # _watch frees one when a stop comes, so this never outwaits it
        if signalled.is_set() or self._stopped():
            slots.release()
            return False
        return True

    async def _watch(self, slots: asyncio.Semaphore, signalled: threading.Event) -> None:
        """Wake the reader waiting for a slot as soon as Ctrl-C or a fault asks the run to stop (the flag is
        set by a signal handler in another thread: polled, not awaited)."""
        while not (signalled.is_set() or self._stopped()):
            await asyncio.sleep(STOP_POLL_S)
        slots.release()

    async def _work(
        self,
        sid: str,
        task: Any,
        read: tuple[str, bool] | None,
        slots: asyncio.Semaphore,
        label: Labeling | None = None,
    ) -> None:
        """One item: label it (with `label` when given: the memo's, which remembers it) and write its line.
        Never raises: every item ends labeled, failed with its reason, or (when the output fails) listed as not
        written."""
        try:
            if self._stopped():  # a fault stopped the run since this item was read: the next run does it
                with self._lock:
                    self._summary.not_done += 1
                return
            outcome = await (label or self.labeler.label)(task, read)
            self._finish(BulkRecord.from_outcome(sid, outcome))
        except Exception as error:  # label reports its own errors; this is a bug, kept to its item
            self._count_failed(sid, f"internal error: {type(error).__name__}: {error}")
        finally:
            slots.release()

    def _finish(self, record: BulkRecord | MemoHit) -> None:
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
            summary.outcomes.add(error=record.error, unrated_reason=record.unrated_reason, rated=record.rated)
            if record.error is not None:
                summary.failed += 1
                if len(summary.failures) < MAX_LISTED_FAILURES:
                    summary.failures.append(printable(f"{record.source_id}: {record.error}"))
            else:
                summary.labeled += 1
                summary.unrated += record.unrated_reason is not None
            if self.on_progress is None:
                return
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
        roles = ["annotator", "judge"] if labeler.uses_judge else ["annotator"]
        concurrency, note = clamp_to_rate_limits(
            concurrency or settings.prelabel_concurrency, {role: settings.rate_limits(role)[0] for role in roles}
        )
        run = BulkRun(
            engine,
            labeler,
            output,
            concurrency=concurrency,
            meter=meter,
            retry_failed=retry_failed,
            relabel=relabel,
            on_progress=on_progress,
        )
        if note is not None:
            log.warning("%s", note)
            run.note(note)
        return run.run(iter_items(input_path, input_field or config.data_key))
    finally:
        if isinstance(engine.store, BatchedLogStore):
            try:
                engine.store.flush()
            except Exception as error:  # the last usage rows met a full disk: the store says so, once; the
                engine.store.note_fault(error)  # output lines, written already, are what counts
        if own_engine:
            close_engine(engine)


class CacheProbe:
    """Whether to try the next item from the cache alone before scheduling it.

    A cached item answered in place costs a fraction of a scheduled one, but the try costs a prompt render, a
    key and a lookup when it misses. After a streak of misses (a pool labeled for the first time), tries are
    spaced out, doubling up to every MAX_SPACING-th item, until one hits again. Skipped items lose nothing: the
    scheduled path reads the cache too.
    """

    MISS_STREAK = 32
    MAX_SPACING = 1024

    def __init__(self) -> None:
        self._streak = 0
        self._spacing = 0
        self._skip = 0

    def worth_trying(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def record(self, hit: bool) -> None:
        if hit:
            self._streak = self._spacing = 0
            return
        self._streak += 1
        if self._streak >= self.MISS_STREAK:
            self._spacing = min(max(2 * self._spacing, self.MISS_STREAK), self.MAX_SPACING)
            self._skip = self._spacing


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
