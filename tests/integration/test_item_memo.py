"""The item memo of bulk runs (prelabel.labeling.memo): a cached rerun into a fresh output is answered with one
lookup per item, and is indistinguishable from one answered from the call cache: the same bytes, the same
usage-log rows, the same counts. Real HTTP to the fake providers; the store is the real SQLite file."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from prelabel.label_interface import parse_label_config
from prelabel.labeling import memo as memo_module
from prelabel.labeling.live import BulkSummary, Progress, label_file
from prelabel.labeling.memo import ItemMemo, memo_line, stored_record
from prelabel.labeling.output import BulkRecord
from prelabel.pipeline import Labeler
from tests.integration.test_bulk import SUMMARY, read_output, write_pool
from tests.integration.test_bulk_integrity import JudgeTrouble

# A classification with nowhere to show a rating: no judge is asked.
UNJUDGED_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="positive"/>
    <Choice value="negative"/>
  </Choices>
</View>"""
STORE_V0 = Path(__file__).resolve().parent.parent / "data" / "store_v0"
ITEMS = 30


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 7 items, so a pool of 30 crosses block boundaries (and ends on a partial block)."""
    monkeypatch.setattr(memo_module, "BLOCK", 7)


class Spy:
    """Counts memo hits and items labeled the usual way (read, then from the cache or by calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.hits = 0
        self.read = 0
        answer, readable = ItemMemo.answer, Labeler.readable

        def counted_answer(memo: ItemMemo, source_id: str, entry: Any) -> Any:
            record = answer(memo, source_id, entry)
            self.hits += record is not None
            return record

        def counted_readable(labeler: Labeler, task: Any) -> Any:
            self.read += 1
            return readable(labeler, task)

        monkeypatch.setattr(ItemMemo, "answer", counted_answer)
        monkeypatch.setattr(Labeler, "readable", counted_readable)

    def reset(self) -> None:
        self.hits = self.read = 0


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


def memo_rows(store_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store_path) as db:
        rows = db.execute("SELECT key, record, annotator_key, judge_key, created_at FROM item_memo ORDER BY key")
        result = rows.fetchall()
    db.close()
    return result


def usage_rows(store_path: Path, after_id: int = 0) -> list[tuple[Any, ...]]:
    """The usage log's rows after `after_id`, without their time."""
    with sqlite3.connect(store_path) as db:
        rows = db.execute(
            "SELECT role, provider, model, cache_key, cached, input_tokens, output_tokens, latency_ms, error"
            " FROM llm_calls WHERE id > ? ORDER BY id",
            (after_id,),
        ).fetchall()
    db.close()
    return rows


def last_call_id(store_path: Path) -> int:
    with sqlite3.connect(store_path) as db:
        value = db.execute("SELECT COALESCE(MAX(id), 0) FROM llm_calls").fetchone()[0]
    db.close()
    return int(value)


def counts(summary: BulkSummary) -> tuple[Any, ...]:
    return (summary.seen, summary.labeled, summary.unrated, summary.failed, summary.duplicates, summary.outcomes)


def without_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs from here on label as before the memo existed (the cache path), for comparison."""
    monkeypatch.setattr(memo_module, "fingerprint", lambda engine, labeler: None)


# -- a cached rerun ----------------------------------------------------------------------------------------


def test_a_rerun_is_answered_from_the_memo_exactly_as_the_cache_would_answer_it(
    make_settings, provider, dialogsum, tmp_path, spy, monkeypatch
):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, ITEMS)
    first = label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=8)
    assert first.labeled == ITEMS and provider.count == 2 * ITEMS
    assert len(memo_rows(settings.store_path)) == ITEMS  # every item finished on the live path was remembered

    spy.reset()
    before = last_call_id(settings.store_path)
    progress: list[Progress] = []
    memo_run = label_file(settings, SUMMARY, pool, tmp_path / "memo.jsonl", concurrency=8, on_progress=progress.append)
    assert provider.count == 2 * ITEMS  # no provider call
    assert (spy.hits, spy.read) == (ITEMS, 0)  # one lookup per item: nothing read, rendered or parsed
    memo_calls = usage_rows(settings.store_path, before)
    assert [snapshot.done for snapshot in progress] == list(range(1, ITEMS + 1))
    first_lines = (tmp_path / "first.jsonl").read_bytes().splitlines(keepends=True)
    memo_bytes = (tmp_path / "memo.jsonl").read_bytes()
    assert sorted(memo_bytes.splitlines(keepends=True)) == sorted(first_lines)  # byte for byte
    assert [row["source_id"] for row in read_output(tmp_path / "memo.jsonl")] == ids  # in input order

    # The same rerun answered from the call cache, as before the memo: the same file, log rows and counts.
    without_memo(monkeypatch)
    spy.reset()
    before = last_call_id(settings.store_path)
    cache_run = label_file(settings, SUMMARY, pool, tmp_path / "cache.jsonl", concurrency=8)
    assert provider.count == 2 * ITEMS and spy.hits == 0 and spy.read == ITEMS
    assert (tmp_path / "cache.jsonl").read_bytes() == memo_bytes
    cache_calls = usage_rows(settings.store_path, before)
    assert Counter(memo_calls) == Counter(cache_calls)
    assert len(memo_calls) == 2 * ITEMS and all(row[4] == 1 and row[5:8] == (0, 0, 0.0) for row in memo_calls)
    assert counts(memo_run) == counts(cache_run) and memo_run.outcomes.rated == ITEMS
    assert memo_run.complete and memo_run.ok


def test_a_resumed_run_with_repeated_items_keeps_its_accounting(make_settings, provider, dialogsum, tmp_path, spy):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, ITEMS)
    label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=8)
    lines = pool.read_text(encoding="utf-8").splitlines(keepends=True)
    pool.write_text("".join(lines + lines[20:22]), encoding="utf-8")  # two records again: the same items
    first_lines = (tmp_path / "first.jsonl").read_bytes().splitlines(keepends=True)
    first = {json.loads(line)["source_id"]: line for line in first_lines}
    output = tmp_path / "resumed.jsonl"
    output.write_bytes(b"".join(first[sid] for sid in ids[:10]))  # an earlier run wrote ten of them

    spy.reset()
    calls = provider.count
    summary = label_file(settings, SUMMARY, pool, output, concurrency=8)
    assert provider.count == calls and spy.hits == ITEMS - 10
    assert (summary.already_done, summary.seen, summary.labeled, summary.duplicates) == (10, ITEMS - 10, ITEMS - 10, 2)
    assert output.read_bytes() == b"".join(first[sid] for sid in ids)


def test_odd_ids_and_text_come_back_byte_for_byte(make_settings, provider, llm, dialogsum, tmp_path, spy):
    settings = make_settings(PRELABEL_MAX_INPUT_CHARS="150")  # long inputs are cut: lines carry a warning
    llm.rate = lambda conversation, label: 1  # another level than the default
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 3)
    with pool.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "\\ud800", "dialogue": "#Person1#: Odd id, caf\\u00e9 \\u2603."}\n')
        handle.write('{"id": "caf\\u00e9 \\udcff", "dialogue": "#Person1#: Odder id \\"quoted\\" \\\\ ok."}\n')
        handle.write('{"id": 7, "dialogue": "#Person1#: \\u00e9t\\u00e9 \\ud83d\\ude00."}\n')
    first = label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=1)
    assert first.labeled == 6 and first.failed == 0
    spy.reset()
    again = label_file(settings, SUMMARY, pool, tmp_path / "again.jsonl", concurrency=1)
    assert spy.hits == 6 and again.labeled == 6
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "first.jsonl").read_bytes()
    rows = read_output(tmp_path / "again.jsonl")
    assert any(row["warnings"] for row in rows) and all(row["level"] == 1 for row in rows)


@pytest.mark.parametrize(
    "record",
    [
        BulkRecord(
            source_id="a", label="Summary: hi", rating="good", level=3, score=2.9, reason="ok", model_version="v"
        ),
        BulkRecord(source_id="caf\u00e9 \u2603", label='\u00e9\U0001f600 "q" \\ \n', model_version="v", warnings=["w"]),
        BulkRecord(source_id="\ud800", label="x", unrated_reason="judge answer did not parse twice: x", warnings=[]),
        BulkRecord(source_id="b\udcff", label="\u00e9", level=0, score=0.0, model_version=None),
    ],
)
def test_a_stored_record_rebuilds_the_line_labeling_writes(record):
    stored = stored_record(record)
    assert stored is not None and "source_id" not in json.loads(stored)
    assert memo_line(record.source_id, stored) == record.line()
    for other in ("z", "\u00e9", "\udfff", "x\u2028y"):  # any id in front of the same stored record
        assert memo_line(other, stored) == record.model_copy(update={"source_id": other}).line()


def test_a_record_whose_text_has_no_utf8_form_is_not_kept():
    assert stored_record(BulkRecord(source_id="a", label="lone \ud800", model_version="v")) is None


# -- what misses the memo --------------------------------------------------------------------------------


def _judge_prompt(tmp_path: Path) -> dict[str, str]:
    judge = tmp_path / "judge.txt"
    judge.write_text("Rate this summary.\nConversation:\n{input}\nSummary:\n{label}\n", encoding="utf-8")
    return {"PRELABEL_JUDGE_PROMPT": str(judge)}


CHANGES = {
    "judge prompt": (_judge_prompt, True),
    "annotator params": (lambda tmp_path: {"PRELABEL_ANNOTATOR_MAX_TOKENS": "300"}, True),
    "judge model": (lambda tmp_path: {"PRELABEL_JUDGE": "anthropic:claude-sonnet-4-5"}, True),
    "inputs cut shorter": (lambda tmp_path: {"PRELABEL_MAX_INPUT_CHARS": "150"}, True),
    # These change no prompt: every call is a cache hit, yet the records differ (or may), so the memo misses.
    "input limit": (lambda tmp_path: {"PRELABEL_MAX_INPUT_CHARS": "30000"}, False),
    "prompt name (model_version)": (lambda tmp_path: {"PRELABEL_PROMPT_NAME": "renamed"}, False),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_whatever_shapes_a_record_misses_the_memo(change, make_settings, provider, dialogsum, tmp_path, spy):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 8)
    label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=4)
    calls = provider.count

    overrides, asks = CHANGES[change]
    changed = make_settings(**overrides(tmp_path))
    spy.reset()
    summary = label_file(changed, SUMMARY, pool, tmp_path / "changed.jsonl", concurrency=4)
    assert summary.labeled == 8 and summary.failed == 0
    assert spy.hits == 0 and spy.read == 8  # every item labeled the usual way
    assert (provider.count > calls) == asks
    if change == "prompt name (model_version)":
        assert all(row["model_version"].startswith("renamed@") for row in read_output(tmp_path / "changed.jsonl"))

    # Those records are remembered under the new fingerprint: the next run with it hits for every item.
    spy.reset()
    calls = provider.count
    label_file(changed, SUMMARY, pool, tmp_path / "again.jsonl", concurrency=4)
    assert spy.hits == 8 and provider.count == calls
    assert sorted((tmp_path / "again.jsonl").read_bytes().splitlines()) == sorted(
        (tmp_path / "changed.jsonl").read_bytes().splitlines()
    )


# -- what is kept ------------------------------------------------------------------------------------------


def test_failed_and_transiently_unrated_items_are_not_kept_and_a_rerun_asks_again(
    make_settings, provider, llm, dialogsum, tmp_path, spy
):
    settings = make_settings(PRELABEL_MAX_RETRIES="0")
    provider.responder = JudgeTrouble(llm)
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 6)
    with pool.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "unratable", "dialogue": "#Person1#: Unratable."}) + "\n")
        handle.write(json.dumps({"id": "empty", "dialogue": ""}) + "\n")  # bad input: fails without a call
    provider.fail_next(2, status=500, provider="openai")  # two items fail at the annotator
    provider.fail_next(2, status=529, provider="anthropic")  # two are left unrated by an overloaded judge
    first = label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=1)
    rows = {row["source_id"]: row for row in read_output(tmp_path / "first.jsonl")}
    failed = sorted(sid for sid, row in rows.items() if row["error"])
    transient = sorted(sid for sid, row in rows.items() if (row["unrated_reason"] or "").startswith("judge call"))
    assert len(failed) == 3 and "empty" in failed and len(transient) == 2 and first.failed == 3
    assert rows["unratable"]["unrated_reason"].startswith("judge answer did not parse twice")
    # Kept: the two rated items, and the one the judge could not rate twice (a rerun would not change it).
    kept = {row[1] for row in memo_rows(settings.store_path)}
    assert len(kept) == 3 and not any('"error": "' in record for record in kept)
    assert sum('"unrated_reason": "judge answer did not parse twice' in record for record in kept) == 1

    provider.reset()
    spy.reset()
    again = label_file(settings, SUMMARY, pool, tmp_path / "again.jsonl", concurrency=1)
    assert spy.hits == 3 and spy.read == 5  # the failed and the transiently unrated ones are labeled again
    asked = Counter(request.provider for request in provider.requests)
    assert asked == {"openai": 2, "anthropic": 4}  # two annotator calls; the judge for those two and the two
    assert not any("Unratable" in json.dumps(request.body) for request in provider.requests)
    again_rows = {row["source_id"]: row for row in read_output(tmp_path / "again.jsonl")}
    assert [sid for sid, row in again_rows.items() if row["error"]] == ["empty"]
    assert again_rows["unratable"] == rows["unratable"]
    assert all(again_rows[sid]["rating"] == "good" for sid in transient + [sid for sid in failed if sid != "empty"])
    assert again.failed == 1 and again.unrated == 1


def test_a_classification_without_a_judge_is_kept_with_its_one_call(make_settings, provider, sentiment, tmp_path, spy):
    settings = make_settings()
    config = parse_label_config(UNJUDGED_CONFIG)
    assert config.kind == "classification" and config.rating is None
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"id": f"s{n}", "text": row["text"]}) + "\n" for n, row in enumerate(sentiment[:9]))
    )
    first = label_file(settings, config, pool, tmp_path / "first.jsonl", concurrency=4)
    assert first.labeled == 9 and provider.count == 9
    spy.reset()
    before = last_call_id(settings.store_path)
    again = label_file(settings, config, pool, tmp_path / "again.jsonl", concurrency=4)
    assert spy.hits == 9 and provider.count == 9 and again.outcomes.unjudged == 9
    calls = usage_rows(settings.store_path, before)
    assert len(calls) == 9 and {row[0] for row in calls} == {"annotator"} and all(row[4] == 1 for row in calls)
    assert sorted((tmp_path / "again.jsonl").read_bytes().splitlines()) == sorted(
        (tmp_path / "first.jsonl").read_bytes().splitlines()
    )


def test_without_the_cache_the_memo_is_neither_read_nor_written(
    make_settings, provider, dialogsum, tmp_path, spy, monkeypatch
):
    settings = make_settings(PRELABEL_CACHE="0")
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 8)
    label_file(settings, SUMMARY, pool, tmp_path / "uncached.jsonl", concurrency=4)
    assert provider.count == 16 and memo_rows(settings.store_path) == []

    settings = make_settings(PRELABEL_CACHE="1")
    label_file(settings, SUMMARY, pool, tmp_path / "cached.jsonl", concurrency=4)
    kept = memo_rows(settings.store_path)
    assert len(kept) == 8

    lookups: list[int] = []
    original = memo_module.ItemMemo._look_up
    monkeypatch.setattr(
        memo_module.ItemMemo, "_look_up", lambda memo, block, skip: lookups.append(1) or original(memo, block, skip)
    )
    settings = make_settings(PRELABEL_CACHE="0")
    spy.reset()
    calls = provider.count
    label_file(settings, SUMMARY, pool, tmp_path / "uncached-again.jsonl", concurrency=4)
    assert provider.count == calls + 16  # asked afresh, as PRELABEL_CACHE=0 means
    assert spy.hits == 0 and lookups == [] and memo_rows(settings.store_path) == kept


# -- the store -----------------------------------------------------------------------------------------------


def test_a_store_from_before_the_memo_gains_it_and_serves_the_next_rerun(
    make_settings, provider, dialogsum, tmp_path, spy
):
    settings = make_settings()
    shutil.copytree(STORE_V0, settings.model_dir, ignore=shutil.ignore_patterns("*.py"))
    with sqlite3.connect(settings.store_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'item_memo'").fetchall() == []
    db.close()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 8)
    label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=4)
    assert len(memo_rows(settings.store_path)) == 8
    spy.reset()
    calls = provider.count
    label_file(settings, SUMMARY, pool, tmp_path / "again.jsonl", concurrency=4)
    assert spy.hits == 8 and provider.count == calls


def test_a_row_that_does_not_read_back_is_labeled_the_usual_way_and_replaced(
    make_settings, provider, dialogsum, tmp_path, spy
):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 8)
    label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=4)
    with sqlite3.connect(settings.store_path) as db:
        db.execute("UPDATE item_memo SET record = 'not a record' WHERE key = (SELECT MIN(key) FROM item_memo)")
    db.close()
    spy.reset()
    calls = provider.count
    again = label_file(settings, SUMMARY, pool, tmp_path / "again.jsonl", concurrency=4)
    assert spy.hits == 7 and spy.read == 1 and provider.count == calls  # that item from the call cache
    assert again.labeled == 8 and again.failed == 0
    assert sorted((tmp_path / "again.jsonl").read_bytes().splitlines()) == sorted(
        (tmp_path / "first.jsonl").read_bytes().splitlines()
    )
    spy.reset()
    label_file(settings, SUMMARY, pool, tmp_path / "third.jsonl", concurrency=4)
    assert spy.hits == 8  # its record, made again, replaced the row
