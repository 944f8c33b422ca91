"""The local store under MODEL_DIR: the LLM call cache, the usage log, served predictions, and reviewers'
corrections from the webhook.

One SQLite file in WAL mode, shared by several processes (gunicorn workers, `prelabel label` runs). Reads use
one connection per thread (WAL readers do not wait for writers). Every write of a process goes through one
writer thread with its own connection, which commits what the threads have queued together in one short
transaction: hundreds of threads polling SQLite's lock each on its own starve some of them past any busy
timeout (a run paused by SIGSTOP, as a sampling profiler does, failed items with "database is locked"). A
lock held by another process is waited for, with backoff, up to WRITE_DEADLINE_S: a slow or paused writer
delays a run, never fails it.

A write that fails because the disk or file cannot be written (prelabel.faults.storage_fault: disk full,
read-only, I/O error) sets `Store.fault` to one message naming the file: the engine then makes no further
paid call. A store that cannot be written at start is refused (StoreUnavailable). Its tables and their
migrations are backend/schema.py's.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prelabel.faults import StoreUnavailable, lock_contention, storage_fault, store_fault_message
from prelabel.providers import SCRUBBED, Completion
from prelabel.schema import connect

log = logging.getLogger("prelabel")

T = TypeVar("T")

# How long a write or read waits for a lock another process holds before it counts as a fault. Long: a process
# paused by a debugger or a profiler, or a slow disk, delays the others; it does not fail them.
WRITE_DEADLINE_S = 600.0
# At most this many queued writes per transaction, so one transaction stays short.
MAX_BATCH = 512


def cache_key(provider: str, model: str, base_url: str | None, params_json: str, prompt: str) -> str:
    """A call's identity: who answers, with which parameters (canonical JSON), to which prompt."""
    digest = hashlib.sha256()
    for part in (provider, model, base_url or "", params_json, prompt):
        encoded = part.encode("utf-8")
        digest.update(b"%d:" % len(encoded))  # length-prefixed, so no part can run into the next
        digest.update(encoded)
    return digest.hexdigest()


INSERT_CALL = (
    "INSERT INTO llm_calls (at, role, provider, model, cache_key, cached, input_tokens, output_tokens,"
    " latency_ms, error) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def call_row(
    role: str, provider: str, model: str, key: str, completion: Completion | None, error: str | None
) -> tuple[Any, ...]:
    """One llm_calls row; a cache hit spends no tokens."""
    usage = completion.usage if completion and not completion.cached else None
    return (
        time.time(),
        role,
        provider,
        model,
        key,
        int(bool(completion and completion.cached)),
        usage.input_tokens if usage else 0,
        usage.output_tokens if usage else 0,
        (completion.latency_s * 1000) if completion else 0.0,
        error,
    )


class StoreBusy(Exception):
    """A read found the store locked by another process and was asked not to wait."""


class Store:
    """The store; see the module's docstring. `fault` is None while it can write."""

    def __init__(self, path: Path, *, deadline_s: float = WRITE_DEADLINE_S, log_interval: float | None = None):
        self.path = Path(path)
        self._local = threading.local()
        # Set when the store can no longer write (disk full, read-only): the engine then stops paid calls.
        self.fault: str | None = None
        self._fault_lock = threading.Lock()
        self._deadline_s = deadline_s
        # Creates the file or brings its schema up to date now, and checks it can be written, before any call.
        self._writer = _Writer(self._open_for_writing(), self, deadline_s, log_interval)

    def _open_for_writing(self) -> sqlite3.Connection:
        try:
            db = connect(self.path)
        except (sqlite3.Error, OSError) as error:
            raise self._unavailable(error) from error
        try:
            db.execute("BEGIN IMMEDIATE")  # a read-only file or mount is refused here
            db.execute("ROLLBACK")
            with tempfile.TemporaryFile(dir=self.path.parent):  # SQLite creates its -wal and -shm files beside it
                pass
        except (sqlite3.Error, OSError) as error:
            db.close()
            raise self._unavailable(error) from error
        return db

    def _unavailable(self, error: BaseException) -> BaseException:
        """A startup failure as one message naming the file; any file-system error counts (e.g. a MODEL_DIR
        below a file cannot be created), a SQLite one when it is a storage fault (not a newer schema)."""
        reason = storage_fault(error)
        if reason is None and isinstance(error, OSError):
            reason = error.strerror or str(error)
        if reason is None:
            return error
        return StoreUnavailable(store_fault_message(self.path, reason))

    def note_fault(self, error: BaseException) -> str:
        """Record that the store could not write (the first reason is kept, logged once); returns the fault."""
        reason = storage_fault(error) or f"{type(error).__name__}: {error}"
        with self._fault_lock:
            if self.fault is None:
                self.fault = store_fault_message(self.path, reason)
                log.error("%s", self.fault)
            return self.fault

    def _connection(self, wait: bool = True) -> sqlite3.Connection:
        """This thread's read connection. The one for reads that must not wait (an event loop's) has SQLite's
        own busy handler off as well: it would sleep inside SQLite, holding up every call on the loop."""
        name = "db" if wait else "db_nowait"
        db = getattr(self._local, name, None)
        if db is None:
            db = connect(self.path, busy_timeout_s=30.0 if wait else 0.0)
            setattr(self._local, name, db)
        return db

    def _read(self, query: Callable[[sqlite3.Connection], T], wait: bool = True) -> T:
        """A read on this thread's connection; a lock (WAL recovery, a migration) is waited for, not raised,
        unless `wait` is False (an event loop must not sleep): StoreBusy then."""
        deadline = time.monotonic() + self._deadline_s
        delay = 0.005
        while True:
            try:
                return query(self._connection(wait))
            except sqlite3.OperationalError as error:
                if not lock_contention(error) or time.monotonic() > deadline:
                    raise
                if not wait:
                    raise StoreBusy(str(self.path)) from error
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(db)` in the writer's next transaction; its result, or the error that stopped it."""
        return self._writer.run(work)

    def flush(self) -> None:
        """Write every queued usage row now."""
        self._writer.run(_nothing)

    def close(self) -> None:
        """Write what is queued and stop the writer thread (a later write starts it again)."""
        self._writer.close()

    # -- LLM cache and usage -------------------------------------------------------------------------

    def cached_completion(self, key: str, wait: bool = True) -> Completion | None:
        """The cached answer, or None; None too when the store cannot be read (its fault is then set, so the
        engine makes no paid call in its place). With `wait` False a lock held by another process raises
        StoreBusy instead of being waited for."""
        try:
            row = self._read(
                lambda db: db.execute("SELECT completion FROM llm_cache WHERE key = ?", (key,)).fetchone(), wait
            )
        except (sqlite3.Error, OSError) as error:
            if storage_fault(error) is None:
                raise
            self.note_fault(error)
            return None
        if row is None:
            return None
        return cached_entry(row["completion"])

    def save_completion(self, key: str, provider: str, model: str, completion: Completion) -> Completion | None:
        """Cache an answer unless one is there already; returns that earlier answer, or None if this one was saved.

        The first answer wins: when two processes ask the same question at once, both serve the answer that
        was stored first, so one item never carries two different labels. Raises when the write failed (then
        `fault` is set); the caller still holds the answer.
        """
        earlier = self._write(_save_entry(key, provider, model, completion))
        return None if earlier is None else cached_entry(earlier)

    def save_completion_later(
        self,
        key: str,
        provider: str,
        model: str,
        completion: Completion,
        done: Callable[[Completion | None, BaseException | None], None],
    ) -> None:
        """`save_completion` without waiting, for an event loop: `done(earlier, error)` runs on the writer
        thread once the write is committed (`earlier` as save_completion returns it) or has failed."""

        def finished(job: _Job) -> None:
            if job.error is not None:
                done(None, job.error)
            else:
                done(None if job.result is None else cached_entry(job.result), None)

        self._writer.submit(_save_entry(key, provider, model, completion), finished)

    def queue_replace_completion(self, key: str, provider: str, model: str, completion: Completion) -> None:
        """Overwrite a cached answer that no longer parses (e.g. after the label set changed), without waiting:
        the answer in hand is served either way, and a failed write sets the store's fault."""
        entry = (key, provider, model, completion.model_dump_json(), time.time())
        self._writer.submit(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO llm_cache (key, provider, model, completion, created_at) VALUES (?,?,?,?,?)",
                entry,
            ),
            _ignore,
        )

    def log_call(
        self,
        *,
        role: str,
        provider: str,
        model: str,
        key: str,
        completion: Completion | None,
        error: str | None = None,
    ) -> None:
        """Log one call, committed before this returns. Never raises: a row that cannot be written sets `fault`."""
        row = call_row(role, provider, model, key, completion, error)
        try:
            self._write(lambda db: db.execute(INSERT_CALL, row))
        except Exception as failure:  # the usage log must never fail an item
            self.note_fault(failure)

    def queue_log_call(
        self, *, role: str, provider: str, model: str, key: str, completion: Completion | None, error: str | None = None
    ) -> None:
        """Log one call without waiting for its commit (an event loop must not): the row goes with the writer's
        next transaction, at most the store's log interval later."""
        self._writer.log_rows([call_row(role, provider, model, key, completion, error)])

    def usage_totals(self) -> list[dict[str, Any]]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT role, provider, model, COUNT(*) AS calls, SUM(cached) AS cache_hits,"
                " SUM(error IS NOT NULL) AS errors, SUM(input_tokens) AS input_tokens,"
                " SUM(output_tokens) AS output_tokens FROM llm_calls GROUP BY role, provider, model"
            ).fetchall()
        )
        return [dict(row) for row in rows]

    # -- predictions and projects --------------------------------------------------------------------

    def record_prediction(
        self,
        *,
        project: str | None,
        task_id: Any,
        model_version: str,
        label: str | None,
        level: int | None,
        score: float | None,
        reason: str | None,
        error: str | None,
    ) -> None:
        row = (time.time(), project, _text(task_id), model_version, label, level, score, reason, error)
        self._write(
            lambda db: db.execute(
                "INSERT INTO predictions (at, project, task_id, model_version, label, level, score, reason, error)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                row,
            )
        )

    def latest_prediction(self, task_id: Any) -> dict[str, Any] | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT * FROM predictions WHERE task_id = ? AND error IS NULL ORDER BY id DESC LIMIT 1",
                (_text(task_id),),
            ).fetchone()
        )
        return dict(row) if row else None

    def save_project_config(self, project: str, label_config: str) -> None:
        row = (project, label_config, time.time())
        self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO projects (project, label_config, updated_at) VALUES (?,?,?)", row
            )
        )

    def project_config(self, project: str) -> str | None:
        row = self._read(
            lambda db: db.execute("SELECT label_config FROM projects WHERE project = ?", (project,)).fetchone()
        )
        return row["label_config"] if row else None

    # -- reviewers' corrections ----------------------------------------------------------------------

    def record_correction(
        self,
        *,
        annotation_id: Any,
        action: str,
        project: str | None,
        task_id: Any,
        parent_prediction: Any,
        corrected_label: str | None,
        reviewer_level: int | None,
        was_cancelled: bool,
        payload: dict[str, Any],
    ) -> None:
        """Upsert by annotation id: an update replaces the earlier version."""
        row = (
            _text(annotation_id),
            time.time(),
            action,
            project,
            _text(task_id),
            _text(parent_prediction),
            corrected_label,
            reviewer_level,
            int(was_cancelled),
            json.dumps(payload, ensure_ascii=False),
        )
        self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO corrections (annotation_id, at, action, project, task_id, parent_prediction,"
                " corrected_label, reviewer_level, was_cancelled, deleted, payload)"
                " VALUES (?,?,?,?,?,?,?,?,?,0,?)",
                row,
            )
        )

    def delete_correction(self, annotation_id: Any) -> None:
        """Mark a correction deleted (kept for the audit trail, left out of corrections())."""
        row = (time.time(), _text(annotation_id))
        self._write(
            lambda db: db.execute(
                "UPDATE corrections SET deleted = 1, action = 'ANNOTATIONS_DELETED', at = ? WHERE annotation_id = ?",
                row,
            )
        )

    def corrections(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        query = "SELECT * FROM corrections" + ("" if include_deleted else " WHERE deleted = 0") + " ORDER BY at"
        return [dict(row) for row in self._read(lambda db: db.execute(query).fetchall())]

    def counts(self) -> dict[str, int]:
        return self._read(
            lambda db: {
                table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("llm_cache", "llm_calls", "predictions", "corrections")
            }
        )

    # -- the usage log between two positions (evaluation) ----------------------------------------------

    def last_call_id(self) -> int:
        """The id of the last logged LLM call (0 when none): calls logged later have larger ids."""
        return int(self._read(lambda db: db.execute("SELECT COALESCE(MAX(id), 0) FROM llm_calls").fetchone()[0]))

    def usage_between(self, after_id: int, upto_id: int | None = None) -> list[dict[str, Any]]:
        """The calls logged in (after_id, upto_id]: role, provider, model, cached, input_tokens, output_tokens,
        error, and for a cache hit `cached_completion`, the cache entry it was answered from (JSON text)."""
        query = (
            "SELECT c.role, c.provider, c.model, c.cached, c.input_tokens, c.output_tokens, c.error,"
            " k.completion AS cached_completion FROM llm_calls c LEFT JOIN llm_cache k ON k.key = c.cache_key"
            " WHERE c.id > ?" + (" AND c.id <= ?" if upto_id is not None else "")
        )
        args: tuple[int, ...] = (after_id,) if upto_id is None else (after_id, upto_id)
        return [dict(row) for row in self._read(lambda db: db.execute(query, args).fetchall())]

    # -- the item memo of bulk runs (prelabel.labeling.memo) ------------------------------------------------
    # A cached rerun reads a block of items with one query and never waits for a write. Its writes insert many
    # rows per statement: the writer thread then takes the GIL once per statement, not once per row, and leaves
    # the event loop's thread alone.

    def memo_records(self, keys: Sequence[str]) -> dict[str, tuple[str, str, str | None]]:
        """The item memo's rows for `keys` as key -> (record, annotator_key, judge_key), read MEMO_READ_BATCH
        keys per `WHERE key IN (...)`. Never waits (an event loop reads it): a store another process holds
        locked, or one that cannot be read (its fault is then set), answers with no rows, and the items take
        the per-item path."""
        found: dict[str, tuple[str, str, str | None]] = {}
        for start in range(0, len(keys), MEMO_READ_BATCH):
            chunk = list(keys[start : start + MEMO_READ_BATCH])
            try:
                rows = self._read(functools.partial(_memo_rows, chunk), wait=False)
            except StoreBusy:
                return found
            except (sqlite3.Error, OSError) as error:
                if storage_fault(error) is None:
                    raise
                self.note_fault(error)
                return found
            for key, record, annotator_key, judge_key in rows:
                found[key] = (record, annotator_key, judge_key)
        return found

    def queue_memo_records(self, rows: Sequence[tuple[str, str, str, str | None]]) -> None:
        """Queue item memo rows (key, record, annotator_key, judge_key) for the writer's next transaction, without
        waiting. A row replaces an earlier one for its key."""
        now = time.time()
        stamped = [(*row, now) for row in rows]
        self._writer.submit(lambda db: _insert_rows(db, _MEMO_INSERT, 5, stamped), _ignore)

    def queue_cache_hits(self, hits: Sequence[tuple[str, str, str, str]]) -> None:
        """Queue usage-log rows for calls answered from the cache, (role, provider, model, key) each, as the
        engine logs a cache hit (no tokens, no latency), for the writer's next transaction, without waiting."""
        now = time.time()
        rows = [(now, role, provider, model, key, 1, 0, 0, 0.0, None) for role, provider, model, key in hits]
        self._writer.submit(lambda db: _insert_rows(db, _CALLS_INSERT, 10, rows), _ignore)


# At most this many keys per memo read (SQLite's limit on a statement's variables is 32,766; before 3.32, 999).
MEMO_READ_BATCH = 512
# At most this many rows per multi-row INSERT (fewer when the variable limit is lower).
MAX_ROWS_PER_INSERT = 256
_MEMO_SELECT = "SELECT key, record, annotator_key, judge_key FROM item_memo WHERE key IN ("
_MEMO_INSERT = "INSERT OR REPLACE INTO item_memo (key, record, annotator_key, judge_key, created_at) VALUES "
_CALLS_INSERT = INSERT_CALL.partition(" VALUES ")[0] + " VALUES "


def _memo_rows(keys: list[str], db: sqlite3.Connection) -> list[Any]:
    return db.execute(_MEMO_SELECT + ",".join("?" * len(keys)) + ")", keys).fetchall()


def _insert_rows(db: sqlite3.Connection, head: str, width: int, rows: Sequence[tuple[Any, ...]]) -> None:
    """`rows` inserted with `head` ("INSERT ... VALUES "), as many rows per statement as SQLite allows."""
    per = max(1, min(MAX_ROWS_PER_INSERT, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        db.execute(head + ",".join([one] * len(chunk)), [value for row in chunk for value in row])


def cached_entry(raw: str | bytes) -> Completion:
    """A cache entry as the answer it holds. Its text was scrubbed of keys before it was saved, so it is not
    scrubbed again (the redaction is most of the cost of a cache read)."""
    completion = Completion.model_validate_json(raw, context=SCRUBBED)
    completion.cached, completion.latency_s = True, 0.0  # a fresh object: nothing else holds it
    return completion


def _save_entry(
    key: str, provider: str, model: str, completion: Completion
) -> Callable[[sqlite3.Connection], str | None]:
    """The write of one cache entry: None when it was saved, else the earlier entry's JSON (the first wins, so
    two processes asking the same question at once serve one answer)."""
    entry = (key, provider, model, completion.model_dump_json(), time.time())

    def save(db: sqlite3.Connection) -> str | None:
        inserted = db.execute(
            "INSERT OR IGNORE INTO llm_cache (key, provider, model, completion, created_at) VALUES (?,?,?,?,?)",
            entry,
        ).rowcount
        if inserted:
            return None
        return str(db.execute("SELECT completion FROM llm_cache WHERE key = ?", (key,)).fetchone()["completion"])

    return save


def _ignore(job: _Job) -> None:
    return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _nothing(db: sqlite3.Connection) -> None:
    return None


class _Job:
    """One queued write: `work(db)` inside the writer's transaction, then `done` is set and `callback` called."""

    __slots__ = ("work", "done", "result", "error", "callback")

    def __init__(self, work: Callable[[sqlite3.Connection], Any], callback: Callable[[_Job], None] | None = None):
        self.work = work
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.callback = callback  # runs on the writer thread (an event loop's call_soon_threadsafe)


class _Writer:
    """One connection and one thread performing every write of a Store, the writes queued meanwhile together.

    One transaction per batch instead of one per write: the threads of a process never race each other for
    SQLite's lock, and the process holds it only briefly. "Database is locked" (another process writing) is
    waited for with backoff up to `deadline_s`; any other failure of a batch sets the store's fault and is
    handed to every write of the batch. A write whose own statement fails (not the disk, not a lock) fails
    alone: it runs in a savepoint. The thread ends after a second without work and starts again on the next.
    Usage rows (`log_rows`) are written with the next batch, or `interval` seconds after they were queued.
    """

    IDLE_S = 1.0

    def __init__(self, db: sqlite3.Connection, store: Store, deadline_s: float, interval: float | None):
        self._db: sqlite3.Connection | None = db
        self._store = store
        self._deadline_s = deadline_s
        self._interval = interval
        self._cond = threading.Condition()
        self._jobs: list[_Job] = []
        self._rows: list[tuple[Any, ...]] = []
        self._rows_since = 0.0
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        job = _Job(work)
        with self._cond:
            self._jobs.append(job)
            self._wake()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def submit(self, work: Callable[[sqlite3.Connection], Any], callback: Callable[[_Job], None]) -> None:
        """Queue `work` without waiting: `callback(job)` runs on the writer thread once it is done."""
        with self._cond:
            self._jobs.append(_Job(work, callback))
            self._wake()

    def log_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Queue usage rows without waiting for them."""
        with self._cond:
            first = not self._rows
            if first:
                self._rows_since = time.monotonic()
            self._rows.extend(rows)
            if first or self._thread is None:  # later rows wait for the same timer: no wake-up per row
                self._wake()

    def close(self) -> None:
        with self._cond:
            if self._db is None and self._thread is None and not self._rows:
                return  # closed already
        try:
            self.run(_nothing)  # what is queued is written
        except Exception:  # it could not be (the store's fault is set and logged): the thread stops all the same
            pass
        with self._cond:
            thread, self._thread = self._thread, None
            db, self._db = self._db, None
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout=5)
        if db is not None:
            db.close()

    def _wake(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's connection and thread are not its own
            self._pid, self._db, self._thread = os.getpid(), None, None
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="prelabel-store-writer", daemon=True)
            self._thread.start()
        self._cond.notify()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while True:
                    if self._thread is not me:
                        return  # closed
                    now = time.monotonic()
                    rows_due = bool(self._rows) and (self._interval is None or now - self._rows_since >= self._interval)
                    if self._jobs or rows_due:
                        break
                    if not self._rows and now - idle_since >= self.IDLE_S:
                        self._thread = None
                        return
                    wait = self.IDLE_S if not self._rows else self._rows_since + (self._interval or 0) - now
                    self._cond.wait(max(wait, 0.001))
                jobs, self._jobs = self._jobs[:MAX_BATCH], self._jobs[MAX_BATCH:]
                rows, self._rows = self._rows, []
            self._commit(jobs, rows)

    def _commit(self, jobs: list[_Job], rows: list[tuple[Any, ...]]) -> None:
        deadline = time.monotonic() + self._deadline_s
        delay = 0.005
        while True:
            try:
                db = self._db or self._reopen()
                self._transaction(db, jobs, rows)
                break
            except Exception as error:
                if self._db is not None and self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite may have rolled back already
                if lock_contention(error) and time.monotonic() < deadline:
                    time.sleep(delay)  # another process holds the lock: wait, never fail for that
                    delay = min(delay * 2, 0.5)
                    continue
                self._store.note_fault(error)
                for job in jobs:
                    job.error = error
                break
        for job in jobs:
            job.done.set()
            if job.callback is not None:
                try:
                    job.callback(job)
                except Exception:  # e.g. the loop it reports to is closed: never the writer's end
                    log.exception("a store write's callback failed")

    def _reopen(self) -> sqlite3.Connection:
        self._db = connect(self._store.path)
        return self._db

    @staticmethod
    def _transaction(db: sqlite3.Connection, jobs: list[_Job], rows: list[tuple[Any, ...]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        if rows:
            db.executemany(INSERT_CALL, rows)
        for job in jobs:
            job.result, job.error = None, None
            db.execute("SAVEPOINT job")
            try:
                job.result = job.work(db)
            except Exception as error:
                if lock_contention(error) or storage_fault(error) is not None:
                    raise  # the whole batch: retried, or the store's fault
                db.execute("ROLLBACK TO job")
                job.error = error
            db.execute("RELEASE job")
        db.execute("COMMIT")


class BatchedLogStore(Store):
    """The store with the usage log (llm_calls) written in batches.

    Store.log_call waits for its row's commit; with dozens of threads and every cache hit logged, that wait
    would halve a cached rerun's speed. Here rows are queued and committed with the next write, or together
    every `interval` seconds. The cache itself is written before save_completion returns. At most `interval`
    seconds of usage rows are lost if the process is killed.
    """

    def __init__(self, path: Path, interval: float = 0.2, *, deadline_s: float = WRITE_DEADLINE_S):
        super().__init__(path, deadline_s=deadline_s, log_interval=interval)

    def log_call(
        self, *, role: str, provider: str, model: str, key: str, completion: Completion | None, error: str | None = None
    ) -> None:
        self._writer.log_rows([call_row(role, provider, model, key, completion, error)])
