"""The store's schema: numbered migrations recorded in the file, a store from before them taken up as it is,
several processes migrating one file at once, and a file from a newer prelabel refused."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prelabel.prompts import PromptRegistry
from prelabel.providers import CallParams
from prelabel.schema import MIGRATIONS, SCHEMA_VERSION, Migration, SchemaError, connect, migrate, schema_version
from prelabel.store import Store, cache_key

BEFORE_MIGRATIONS = Path(__file__).resolve().parent.parent / "data" / "store_v0"  # see tests/data/README.md
SUMMARY_KEY = "c550cb9cc172194174b547ac98c1267656001e0b9549c200c8fa773311562a92"
RATING_KEY = "202407d937a23ac3bf55602953f67b3716f87b808828c90d1c7a1ee49bad1c97"
PROMPT_TEXT = "Summarize the conversation in one sentence.\nConversation:\n{input}"


def layout(path: Path) -> list[tuple[str, str, str]]:
    """Every table and index with its CREATE statement, as SQLite keeps them."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()
    db.close()
    return rows


def recorded(path: Path) -> tuple[int, list[int]]:
    """The version in the file's header and the numbers in schema_migrations."""
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        numbers = [row[0] for row in db.execute("SELECT number FROM schema_migrations ORDER BY number")]
    db.close()
    return version, numbers


@pytest.fixture
def old_model_dir(tmp_path: Path) -> Path:
    """A copy of the MODEL_DIR written by the prelabel of commit 89fcba9 (the fixture itself stays as it is)."""
    model_dir = tmp_path / "model_dir"
    shutil.copytree(BEFORE_MIGRATIONS, model_dir, ignore=shutil.ignore_patterns("*.py"))
    with sqlite3.connect(model_dir / "prelabel.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()
    return model_dir


@pytest.mark.parametrize("first", ["store", "prompt registry"])
def test_a_store_from_before_migrations_is_migrated_and_reads_back(old_model_dir: Path, first: str) -> None:
    path = old_model_dir / "prelabel.sqlite3"
    if first == "prompt registry":
        PromptRegistry(old_model_dir, path).versions()
    store = Store(path)
    registry = PromptRegistry(old_model_dir, path)
    assert recorded(path) == (SCHEMA_VERSION, list(range(1, SCHEMA_VERSION + 1)))

    # cache: the same question has the same key, so the answer cached before is a hit
    params = CallParams(max_tokens=64).cache_fields()
    assert cache_key("openai", "gpt-4o-mini", None, params, "Summarize: #Person1#: Hello.") == SUMMARY_KEY
    hit = store.cached_completion(SUMMARY_KEY)
    assert hit is not None and hit.cached
    assert (hit.text, hit.usage.input_tokens, hit.usage.output_tokens) == ("Person1 says hello.", 21, 5)
    rating = store.cached_completion(RATING_KEY)
    assert rating is not None and json.loads(rating.text) == {"rating": "good", "reason": "faithful"}

    # the call log
    totals = {row["role"]: row for row in store.usage_totals()}
    assert totals["annotator"] == {
        "role": "annotator",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "calls": 2,
        "cache_hits": 1,
        "errors": 0,
        "input_tokens": 21,
        "output_tokens": 5,
    }
    assert (totals["judge"]["calls"], totals["judge"]["errors"], totals["judge"]["input_tokens"]) == (2, 1, 40)

    # predictions and projects
    prediction = store.latest_prediction(17)
    assert prediction is not None
    assert (prediction["project"], prediction["label"], prediction["level"], prediction["score"]) == (
        "3",
        "Person1 says hello.",
        3,
        2.91,
    )
    assert prediction["model_version"] == "summarize@0123abcd:gpt-4o-mini+claude-haiku-4-5"
    assert store.latest_prediction(18) is None  # its only prediction failed
    assert store.project_config("3") == '<View><Text name="dialogue" value="$dialogue"/></View>'

    # corrections, the deleted one kept for the audit trail
    [correction] = store.corrections()
    assert (correction["annotation_id"], correction["task_id"], correction["parent_prediction"]) == ("101", "17", "55")
    assert (correction["corrected_label"], correction["reviewer_level"]) == ("Person1 greets.", 2)
    assert json.loads(correction["payload"]) == {"annotation": {"id": 101, "result": []}}
    deleted = [row for row in store.corrections(include_deleted=True) if row["deleted"]]
    assert [(row["annotation_id"], row["action"]) for row in deleted] == [("102", "ANNOTATIONS_DELETED")]
    assert store.counts() == {"llm_cache": 2, "llm_calls": 4, "predictions": 2, "corrections": 2}

    # the prompt version, found by name and by its text
    version = registry.get("summarize-55c7d9df")
    assert version is not None
    assert (version.kind, version.content_hash, version.origin) == (
        "summarization",
        "55c7d9df",
        "label studio project 3, task 17",
    )
    assert version.path.endswith("/prompts/summarize-55c7d9df.txt")
    assert [v.name for v in registry.versions()] == ["summarize-55c7d9df"]
    assert registry.save(PROMPT_TEXT, "summarization", base_name="other") == version
    assert (old_model_dir / "prompts" / "summarize-55c7d9df.txt").read_text(encoding="utf-8") == PROMPT_TEXT

    # and it takes new rows
    store.record_prediction(
        project="3", task_id=19, model_version="v2", label="x", level=2, score=2.0, reason=None, error=None
    )
    assert store.latest_prediction(19)["label"] == "x"  # type: ignore[index]
    assert registry.save("Other {input}", "summarization", name="other").name == "other"


def test_migration_1_is_the_layout_from_before_migrations(old_model_dir: Path, tmp_path: Path) -> None:
    before = layout(old_model_dir / "prelabel.sqlite3")
    first_only = tmp_path / "first.sqlite3"
    db = sqlite3.connect(first_only, isolation_level=None)
    assert migrate(db, MIGRATIONS[:1]) == [1]
    db.close()
    bookkeeping = [row for row in layout(first_only) if row[1] == "schema_migrations"]
    assert layout(first_only) == sorted(before + bookkeeping, key=lambda row: row[1])

    # Brought up to date, the old file and a fresh one are laid out alike: the later migrations' tables added.
    Store(old_model_dir / "prelabel.sqlite3")
    Store(tmp_path / "fresh.sqlite3")
    added = {row[1] for row in layout(tmp_path / "fresh.sqlite3")} - {row[1] for row in layout(first_only)}
    assert added == {"item_memo"}
    assert layout(tmp_path / "fresh.sqlite3") == layout(old_model_dir / "prelabel.sqlite3")


def test_a_store_from_before_migrations_gains_the_item_memo(old_model_dir: Path) -> None:
    path = old_model_dir / "prelabel.sqlite3"
    store = Store(path)
    assert recorded(path)[1][-1] == 2
    rated, unjudged, record = "a" * 64, "b" * 64, '{"label": "x"}'
    assert store.memo_records([rated, unjudged]) == {}  # the table is there, and empty
    store.queue_memo_records([(rated, record, SUMMARY_KEY, RATING_KEY), (unjudged, record, SUMMARY_KEY, None)])
    store.flush()
    assert store.memo_records([rated, "c" * 64, unjudged]) == {
        rated: (record, SUMMARY_KEY, RATING_KEY),
        unjudged: (record, SUMMARY_KEY, None),
    }
    store.queue_memo_records([(rated, '{"label": "y"}', SUMMARY_KEY, RATING_KEY)])  # a later record replaces it
    store.flush()
    assert store.memo_records([rated]) == {rated: ('{"label": "y"}', SUMMARY_KEY, RATING_KEY)}
    store.close()


def test_a_fresh_store_gets_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "model_dir" / "prelabel.sqlite3"
    Store(path)
    assert recorded(path) == (SCHEMA_VERSION, [migration.number for migration in MIGRATIONS])
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT description, applied_at FROM schema_migrations ORDER BY number").fetchall()
    db.close()
    assert [description for description, _ in rows] == [migration.description for migration in MIGRATIONS]
    assert all(abs(applied_at - time.time()) < 60 for _, applied_at in rows)

    # the prompt registry alone creates the same file
    other = tmp_path / "other" / "prelabel.sqlite3"
    assert PromptRegistry(other.parent, other).versions() == []
    assert recorded(other) == recorded(path)
    assert layout(other) == layout(path)

    # opening it again applies nothing
    db = connect(path)
    assert migrate(db) == [] and schema_version(db) == SCHEMA_VERSION
    db.close()
    assert recorded(path) == (SCHEMA_VERSION, [migration.number for migration in MIGRATIONS])


def test_a_store_from_a_newer_prelabel_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "prelabel.sqlite3"
    Store(path).record_prediction(
        project="1", task_id=1, model_version="v", label="a", level=3, score=3.0, reason=None, error=None
    )
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()

    message = (
        rf"{path} has store schema version {SCHEMA_VERSION + 1}, newer than this prelabel knows \({SCHEMA_VERSION}\)"
    )
    with pytest.raises(SchemaError, match=message + r".*newer prelabel.*MODEL_DIR"):
        Store(path)
    with pytest.raises(SchemaError, match=message):
        PromptRegistry(tmp_path, path).versions()
    assert path.read_bytes() == before  # untouched


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    def fail(db: sqlite3.Connection) -> None:
        raise RuntimeError("step failed")

    migrations = (Migration(1, "one", ("CREATE TABLE one (x)",)), Migration(2, "two", ("CREATE TABLE two (x)", fail)))
    db = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
    with pytest.raises(RuntimeError, match="step failed"):
        migrate(db, migrations)
    assert schema_version(db) == 0 and not db.in_transaction
    assert db.execute("SELECT name FROM sqlite_master").fetchall() == []  # all or nothing
    assert migrate(db, migrations[:1]) == [1]
    db.close()


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.sqlite3", isolation_level=None)
    with pytest.raises(ValueError, match=r"numbered 1, 2, 3... in order, not \[1, 3\]"):
        migrate(db, (Migration(1, "one", ()), Migration(3, "three", ())))
    db.close()


# -- several processes at once -----------------------------------------------------------------------

# Migrates the store at argv[1] once all argv[3] processes are ready (files in argv[2]), so they race; prints
# what it applied.
RACE = """
import json, os, sqlite3, sys, time
from pathlib import Path
from prelabel.schema import connect, enable_wal, migrate, schema_version

path, ready, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < count:
    time.sleep(0.005)
db = sqlite3.connect(path, timeout=30, isolation_level=None)  # as schema.connect opens it
enable_wal(db)
applied = migrate(db)
connect(Path(path)).close()  # and opens it as the store does
print(json.dumps({"applied": applied, "version": schema_version(db)}))
"""

# Migrates argv[1] with a migration whose first step takes a second and notes each run in argv[2]. The
# "second" process starts only once the first is inside that step, so it finds version 0, waits for the lock,
# and must find the work done when it gets it.
SLOW = """
import json, sqlite3, sys, time
from pathlib import Path
from prelabel.schema import Migration, migrate, schema_version

path, runs, role = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def slow(db):
    with runs.open("a") as handle:
        handle.write("run\\n")
    time.sleep(1.0)

if role == "second":
    while not runs.exists():
        time.sleep(0.01)
db = sqlite3.connect(path, timeout=30, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
before = schema_version(db)
applied = migrate(db, (Migration(1, "slow", (slow, "CREATE TABLE slow (x)")),))
print(json.dumps({"before": before, "applied": applied, "version": schema_version(db)}))
"""


def run_all(commands: list[list[str]]) -> list[dict[str, object]]:
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for command in commands
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_processes_migrating_one_file_at_once_all_succeed_and_it_runs_once(tmp_path: Path) -> None:
    path = tmp_path / "prelabel.sqlite3"
    ready = tmp_path / "ready"
    ready.mkdir()
    results = run_all([[sys.executable, "-c", RACE, str(path), str(ready), "4"] for _ in range(4)])
    assert all(result["version"] == SCHEMA_VERSION for result in results)
    applied = sorted((result["applied"] for result in results), key=len)  # type: ignore[arg-type]
    assert applied == [[]] * 3 + [list(range(1, SCHEMA_VERSION + 1))]
    assert recorded(path) == (SCHEMA_VERSION, list(range(1, SCHEMA_VERSION + 1)))
    Store(path).record_prediction(
        project=None, task_id=1, model_version="v", label="a", level=None, score=None, reason=None, error=None
    )


def test_a_process_that_waited_for_the_lock_finds_the_migration_done(tmp_path: Path) -> None:
    path, runs = tmp_path / "s.sqlite3", tmp_path / "runs.txt"
    first, second = run_all([[sys.executable, "-c", SLOW, str(path), str(runs), role] for role in ("first", "second")])
    assert runs.read_text() == "run\n"  # the step ran once
    assert first == {"before": 0, "applied": [1], "version": 1}
    assert second == {"before": 0, "applied": [], "version": 1}  # saw version 0, then nothing left to do
