"""The local store under MODEL_DIR: the LLM call cache, the usage log, served predictions, and reviewers'
corrections from the webhook.

One SQLite file in WAL mode with a busy timeout, one connection per thread, so several gunicorn workers
and their threads can share it. Each write is one short transaction. Its tables and their migrations are
backend/schema.py's.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from prelabel.providers import Completion
from prelabel.schema import connect


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


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        # Set when the store can no longer write (disk full, read-only): the engine then stops paid calls.
        self.fault: str | None = None
        self._connection()  # creates the file or brings its schema up to date now, not at the first call

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
        return db

    def _transaction(self) -> _Transaction:
        return _Transaction(self._connection())

    # -- LLM cache and usage -------------------------------------------------------------------------

    def cached_completion(self, key: str) -> Completion | None:
        row = self._connection().execute("SELECT completion FROM llm_cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        completion = Completion.model_validate_json(row["completion"])
        completion.cached, completion.latency_s = True, 0.0  # a fresh object: nothing else holds it
        return completion

    def save_completion(self, key: str, provider: str, model: str, completion: Completion) -> Completion | None:
        """Cache an answer unless one is there already; returns that earlier answer, or None if this one was saved.

        The first answer wins: when two processes ask the same question at once, both serve the answer that
        was stored first, so one item never carries two different labels.
        """
        with self._transaction() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO llm_cache (key, provider, model, completion, created_at) VALUES (?,?,?,?,?)",
                (key, provider, model, completion.model_dump_json(), time.time()),
            ).rowcount
            if inserted:
                return None
            row = db.execute("SELECT completion FROM llm_cache WHERE key = ?", (key,)).fetchone()
        return Completion.model_validate_json(row["completion"]).model_copy(update={"cached": True})

    def replace_completion(self, key: str, provider: str, model: str, completion: Completion) -> None:
        """Overwrite a cached answer that no longer parses (e.g. after the label set changed)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO llm_cache (key, provider, model, completion, created_at) VALUES (?,?,?,?,?)",
                (key, provider, model, completion.model_dump_json(), time.time()),
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
        with self._transaction() as db:
            db.execute(INSERT_CALL, call_row(role, provider, model, key, completion, error))

    def usage_totals(self) -> list[dict[str, Any]]:
        rows = (
            self._connection()
            .execute(
                "SELECT role, provider, model, COUNT(*) AS calls, SUM(cached) AS cache_hits,"
                " SUM(error IS NOT NULL) AS errors, SUM(input_tokens) AS input_tokens,"
                " SUM(output_tokens) AS output_tokens FROM llm_calls GROUP BY role, provider, model"
            )
            .fetchall()
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
        with self._transaction() as db:
            db.execute(
                "INSERT INTO predictions (at, project, task_id, model_version, label, level, score, reason, error)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (time.time(), project, _text(task_id), model_version, label, level, score, reason, error),
            )

    def latest_prediction(self, task_id: Any) -> dict[str, Any] | None:
        row = (
            self._connection()
            .execute(
                "SELECT * FROM predictions WHERE task_id = ? AND error IS NULL ORDER BY id DESC LIMIT 1",
                (_text(task_id),),
            )
            .fetchone()
        )
        return dict(row) if row else None

    def save_project_config(self, project: str, label_config: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO projects (project, label_config, updated_at) VALUES (?,?,?)",
                (project, label_config, time.time()),
            )

    def project_config(self, project: str) -> str | None:
        row = self._connection().execute("SELECT label_config FROM projects WHERE project = ?", (project,)).fetchone()
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
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO corrections (annotation_id, at, action, project, task_id, parent_prediction,"
                " corrected_label, reviewer_level, was_cancelled, deleted, payload)"
                " VALUES (?,?,?,?,?,?,?,?,?,0,?)",
                (
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
                ),
            )

    def delete_correction(self, annotation_id: Any) -> None:
        """Mark a correction deleted (kept for the audit trail, left out of corrections())."""
        with self._transaction() as db:
            db.execute(
                "UPDATE corrections SET deleted = 1, action = 'ANNOTATIONS_DELETED', at = ? WHERE annotation_id = ?",
                (time.time(), _text(annotation_id)),
            )

    def corrections(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        query = "SELECT * FROM corrections" + ("" if include_deleted else " WHERE deleted = 0") + " ORDER BY at"
        return [dict(row) for row in self._connection().execute(query).fetchall()]

    def counts(self) -> dict[str, int]:
        db = self._connection()
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("llm_cache", "llm_calls", "predictions", "corrections")
        }

    # -- the usage log between two positions (evaluation) ----------------------------------------------

    def last_call_id(self) -> int:
        """The id of the last logged LLM call (0 when none): calls logged later have larger ids."""
        return int(self._connection().execute("SELECT COALESCE(MAX(id), 0) FROM llm_calls").fetchone()[0])

    def usage_between(self, after_id: int, upto_id: int | None = None) -> list[dict[str, Any]]:
        """The calls logged in (after_id, upto_id]: role, provider, model, cached, input_tokens, output_tokens,
        error, and for a cache hit `cached_completion`, the cache entry it was answered from (JSON text)."""
        query = (
            "SELECT c.role, c.provider, c.model, c.cached, c.input_tokens, c.output_tokens, c.error,"
            " k.completion AS cached_completion FROM llm_calls c LEFT JOIN llm_cache k ON k.key = c.cache_key"
            " WHERE c.id > ?" + (" AND c.id <= ?" if upto_id is not None else "")
        )
        args: tuple[int, ...] = (after_id,) if upto_id is None else (after_id, upto_id)
        return [dict(row) for row in self._connection().execute(query, args).fetchall()]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, so concurrent writers queue on the busy timeout instead of failing."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


class BatchedLogStore(Store):
    """The store with the usage log (llm_calls) written in batches by one thread.

    Store.log_call commits one transaction per call, cache hits included; with dozens of threads the
    writers queue on SQLite's lock (its busy handler sleeps in steps of milliseconds) and a cached rerun
    runs at half speed. Here rows are queued and committed together every `interval` seconds. The cache
    itself is still written at once by Store.save_completion. At most `interval` seconds of usage rows are
    lost if the process is killed.
    """

    def __init__(self, path: Path, interval: float = 0.2):
        super().__init__(path)
        self._rows: list[tuple[Any, ...]] = []
        self._rows_lock = threading.Lock()
        self._interval = interval
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._loop, name="prelabel-usage-log", daemon=True)
        self._writer.start()

    def log_call(
        self, *, role: str, provider: str, model: str, key: str, completion: Completion | None, error: str | None = None
    ) -> None:
        row = call_row(role, provider, model, key, completion, error)
        with self._rows_lock:
            self._rows.append(row)

    def flush(self) -> None:
        with self._rows_lock:
            rows, self._rows = self._rows, []
        if rows:
            with self._transaction() as db:
                db.executemany(INSERT_CALL, rows)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._writer.join(timeout=5)
        self.flush()
