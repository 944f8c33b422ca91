"""The SQLite schema of the store under MODEL_DIR: the one place that creates or changes its tables.

MIGRATIONS is an ordered list of numbered steps. The database records the number of the last one applied in
PRAGMA user_version (0 for a file from before numbered migrations, or a new one) and each applied step in the
table schema_migrations, with its time. `connect` opens the file and applies the steps it lacks in one
BEGIN IMMEDIATE transaction: several processes (the backend's workers, a CLI run) opening the same file at once
queue on SQLite's write lock, and each reads the version again once it holds the lock, so every step runs once.
A file from a newer prelabel (a version above the last one known here) is refused, never written.

To change the schema, append Migration(<last number + 1>, ...) to MIGRATIONS; never edit one that has shipped.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

log = logging.getLogger("prelabel")

# A step is one SQL statement, or a function that changes the data with the connection it is given (inside the
# migration's transaction; it must not commit).
Step: TypeAlias = str | Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migration:
    number: int
    description: str
    steps: tuple[Step, ...]


class SchemaError(RuntimeError):
    """The store's file cannot be used by this prelabel (e.g. it was written by a newer one)."""


MIGRATIONS: tuple[Migration, ...] = (
    # The layout from before numbered migrations, statement for statement, so a store written then is taken up
    # as it is (IF NOT EXISTS: it may hold all of these tables, or only the store's or the prompt versions').
    Migration(
        1,
        "LLM call cache and log, predictions, corrections, projects, prompt versions",
        (
            """CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    completion TEXT NOT NULL,
    created_at REAL NOT NULL
)""",
            """CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    role TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    cached INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms REAL NOT NULL DEFAULT 0,
    error TEXT
)""",
            """CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    project TEXT,
    task_id TEXT,
    model_version TEXT NOT NULL,
    label TEXT,
    level INTEGER,
    score REAL,
    reason TEXT,
    error TEXT
)""",
            "CREATE INDEX IF NOT EXISTS predictions_task ON predictions (task_id)",
            """CREATE TABLE IF NOT EXISTS corrections (
    annotation_id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    project TEXT,
    task_id TEXT,
    parent_prediction TEXT,
    corrected_label TEXT,
    reviewer_level INTEGER,
    was_cancelled INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL
)""",
            """CREATE TABLE IF NOT EXISTS projects (
    project TEXT PRIMARY KEY,
    label_config TEXT NOT NULL,
    updated_at REAL NOT NULL
)""",
            """CREATE TABLE IF NOT EXISTS prompt_versions (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    path TEXT NOT NULL,
    origin TEXT,
    created_at REAL NOT NULL
)""",
            "CREATE UNIQUE INDEX IF NOT EXISTS prompt_versions_content ON prompt_versions (kind, content_hash)",
        ),
    ),
    # The item memo of bulk runs (prelabel.labeling.memo): an item's finished output record, found by one key made
    # of its input and everything that shapes its record, with the two call cache entries it was answered from.
    Migration(
        2,
        "item memo: finished bulk records by input and labeler fingerprint",
        (
            """CREATE TABLE IF NOT EXISTS item_memo (
    key TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    annotator_key TEXT NOT NULL,
    judge_key TEXT,
    created_at REAL NOT NULL
) WITHOUT ROWID""",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].number

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (number INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
)


def connect(path: Path, busy_timeout_s: float = 30.0) -> sqlite3.Connection:
    """A connection to the store's file (created if missing) with its schema up to date.

    WAL mode with a 30 s busy timeout (0 for a connection that must never wait: "database is locked" at once),
    autocommit (callers open their own BEGIN IMMEDIATE transactions), rows as sqlite3.Row; usable from another
    thread than the one that opened it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        _checked_version(db, SCHEMA_VERSION)  # a newer prelabel's file is refused before anything is written
        enable_wal(db, busy_timeout_s)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        db.row_factory = sqlite3.Row
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def enable_wal(db: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Put the file in WAL mode (it stays so: later openers find it done).

    Switching needs an exclusive lock that SQLite does not wait for through the busy timeout: several processes
    opening a fresh file at once (the backend's workers, parallel `prelabel label` runs) would get "database is
    locked". A racing opener waits and tries again, up to `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def schema_version(db: sqlite3.Connection) -> int:
    """The number of the last migration applied to this database (0: none)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations the database lacks, in order, in one transaction; returns the numbers applied here
    (none when another process got there first). Raises SchemaError for a database newer than `migrations`."""
    numbers = [migration.number for migration in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3... in order, not {numbers}")
    latest = len(numbers)
    if _checked_version(db, latest) == latest:
        return []  # the usual case: one read, no lock
    db.execute("BEGIN IMMEDIATE")  # waits (busy timeout) while another connection migrates
    try:
        version = _checked_version(db, latest)  # again, under the lock: the other one may have done it all
        applied = []
        if version < latest:
            db.execute(_MIGRATIONS_TABLE)
            for migration in migrations[version:]:
                for step in migration.steps:
                    if isinstance(step, str):
                        db.execute(step)
                    else:
                        step(db)
                db.execute(
                    "INSERT INTO schema_migrations (number, description, applied_at) VALUES (?,?,?)",
                    (migration.number, migration.description, time.time()),
                )
                applied.append(migration.number)
            db.execute(f"PRAGMA user_version = {latest:d}")  # part of the transaction: commits with the steps
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already
            db.execute("ROLLBACK")
        raise
    if applied:
        log.info("%s: store schema version %d -> %d", _file_of(db), version, latest)
    return applied


def _checked_version(db: sqlite3.Connection, latest: int) -> int:
    version = schema_version(db)
    if version > latest:
        raise SchemaError(
            f"{_file_of(db)} has store schema version {version}, newer than this prelabel knows ({latest}): it was "
            "written by a newer prelabel. Upgrade prelabel, or point MODEL_DIR at another folder."
        )
    return version


def _file_of(db: sqlite3.Connection) -> str:
    for row in db.execute("PRAGMA database_list").fetchall():
        if row[1] == "main":
            return row[2] or "the in-memory store"
    return "the store"
