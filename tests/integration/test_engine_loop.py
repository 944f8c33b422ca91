"""The engine's event loop: the concurrency it keeps, the clamp the rate limits impose, what it refuses, and a
store locked by another process holding up no call on it."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import threading
import time

import pytest

from prelabel import gc_policy
from prelabel.concurrency import MAX_CONCURRENCY, clamp_to_rate_limits
from prelabel.engine import Engine, build_engine, close_engine
from prelabel.event_loop import EngineLoop, LoopClosed
from prelabel.label_interface import parse_label_config
from prelabel.labeling.live import label_file
from prelabel.store import Store, StoreBusy
from tests.conftest import SUMMARY_CONFIG, ls_task
from tests.integration.test_bulk import cli, read_output, write_pool

SUMMARY = parse_label_config(SUMMARY_CONFIG)


def test_the_clamp_keeps_a_concurrency_the_limits_allow_and_names_the_limit_it_lowers_to():
    assert clamp_to_rate_limits(500, {"annotator": None, "judge": None}) == (500, None)
    assert clamp_to_rate_limits(500, {"annotator": 600.0, "judge": 0}) == (500, None)
    used, note = clamp_to_rate_limits(1000, {"annotator": 3000.0, "judge": 120.0})
    assert used == 120 and note is not None
    assert "judge" in note and "PRELABEL_JUDGE_RPM" in note and "1,000" in note and "120" in note
    assert clamp_to_rate_limits(5, {"annotator": 0.5})[0] == 1  # never below one
    assert MAX_CONCURRENCY >= 1000


def test_label_runs_at_the_concurrency_asked_and_at_most_the_request_limit(
    make_settings, provider, dialogsum, tmp_path
):
    provider.latency = 0.3
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 40)
    settings = make_settings(PRELABEL_CONCURRENCY="2")
    summary = label_file(settings, SUMMARY, pool, tmp_path / "a.jsonl", concurrency=40)
    assert summary.labeled == 40 and provider.max_in_flight >= 35 and not summary.notes  # the run's, not the setting
    provider.reset()
    limited = make_settings(PRELABEL_ANNOTATOR_RPM="6000", PRELABEL_JUDGE_RPM="10")
    summary = label_file(limited, SUMMARY, pool, tmp_path / "b.jsonl", concurrency=40)
    assert summary.notes and "lowered to 10" in summary.notes[0]
    assert provider.max_in_flight <= 10


def test_the_command_prints_the_note_when_it_lowers_the_concurrency(make_settings, provider, dialogsum, tmp_path):
    make_settings(PRELABEL_ANNOTATOR_RPM="600", PRELABEL_JUDGE_RPM="600")
    pool, output, log = tmp_path / "pool.jsonl", tmp_path / "out.jsonl", tmp_path / "cli.log"
    write_pool(pool, dialogsum, 3)
    assert cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "2000").wait(timeout=120) == 0
    text = " ".join(log.read_text(encoding="utf-8").split())
    assert "concurrency 2,000 lowered to 600" in text and len(read_output(output)) == 3


def test_the_flag_refuses_a_concurrency_above_the_ceiling(make_settings, provider, dialogsum, tmp_path):
    make_settings()
    pool, log = tmp_path / "pool.jsonl", tmp_path / "cli.log"
    write_pool(pool, dialogsum, 1)
    code = cli(log, "-i", str(pool), "-o", str(tmp_path / "o.jsonl"), "--concurrency", str(MAX_CONCURRENCY + 1))
    assert code.wait(timeout=60) == 2 and "concurrency" in log.read_text(encoding="utf-8")


def test_the_blocking_facade_refuses_to_wait_on_its_own_loop(make_settings, provider, dialogsum):
    engine = Engine(make_settings())
    labeler = engine.labeler(SUMMARY)

    async def from_inside() -> str:
        try:
            labeler.label_task(ls_task(1, dialogsum[0]))
        except RuntimeError as error:
            return str(error)
        return "no error"

    assert "await instead" in engine.run(from_inside())
    assert labeler.label_task(ls_task(1, dialogsum[0])).ok  # from outside, it works


def test_a_closed_engine_refuses_work_and_closing_twice_is_harmless(make_settings, provider, dialogsum):
    engine = Engine(make_settings())
    loop = engine.loop
    assert engine.labeler(SUMMARY).label_task(ls_task(1, dialogsum[0])).ok
    engine.close()
    engine.close()
    with pytest.raises(LoopClosed):
        loop.run(asyncio.sleep(0))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")
def test_a_forked_child_is_told_to_build_its_own_engine_instead_of_hanging(make_settings, provider, dialogsum):
    engine = Engine(make_settings())
    assert engine.labeler(SUMMARY).label_task(ls_task(1, dialogsum[0])).ok  # the loop runs in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a loop no thread runs here
        try:
            engine.run(asyncio.sleep(0), timeout=5)
            message = b"ran"
        except RuntimeError as error:
            message = str(error).encode()
        except BaseException as error:  # anything else is a failure the parent reports
            message = repr(error).encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    assert "forked" in said and "build it in the process" in said


def test_the_collector_is_tuned_while_a_loop_runs_and_restored_after():
    before = gc.get_threshold()
    first, second = EngineLoop(), EngineLoop()
    try:
        assert gc.get_threshold()[0] >= gc_policy.THRESHOLDS[0] and gc.get_freeze_count() > 0
        first.close()
        assert gc.get_threshold()[0] >= gc_policy.THRESHOLDS[0]  # the other loop still runs
    finally:
        first.close()
        second.close()
    assert gc.get_threshold() == before


def test_a_store_locked_by_another_process_holds_up_no_call_on_the_loop(make_settings, provider, dialogsum):
    """Another process holding the store exclusively (a migration, WAL recovery) locks readers out. The cache
    lookup on the loop must not wait inside SQLite (every call in flight would stand still): it is refused at
    once and waits in a worker thread while the loop keeps running."""
    settings = make_settings()
    engine = build_engine(settings, store=Store(settings.store_path))
    try:
        labeler = engine.labeler(SUMMARY)
        engine.store.close()  # its writer's connection would keep the other process from locking the file
        other = sqlite3.connect(settings.store_path, isolation_level=None, check_same_thread=False)
        other.execute("PRAGMA locking_mode=EXCLUSIVE")
        other.execute("BEGIN EXCLUSIVE")
        other.execute("SELECT COUNT(*) FROM llm_cache").fetchone()
        with pytest.raises(StoreBusy):
            engine.store.cached_completion("any key", wait=False)
        ticks: list[float] = []

        async def ticking() -> None:
            for _ in range(20):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        async def both() -> bool:
            ticker = asyncio.create_task(ticking())
            outcome = await labeler.label(ls_task(2, dialogsum[1]))
            await ticker
            return outcome.ok

        def release() -> None:
            other.execute("COMMIT")
            other.close()

        threading.Timer(0.6, release).start()
        started = time.monotonic()
        assert engine.run(both())
        assert time.monotonic() - started >= 0.5  # it did wait for the lock...
        gaps = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
        assert max(gaps) < 0.3, gaps  # ...without the loop standing still
        assert provider.count == 2  # and then asked the provider, once per role
    finally:
        close_engine(engine)


def test_the_engines_own_concurrency_is_clamped_alike_for_predict_push_and_evaluate(make_settings, provider, dialogsum):
    provider.latency = 0.2
    engine = Engine(make_settings(PRELABEL_CONCURRENCY="50", PRELABEL_JUDGE_RPM="6000", PRELABEL_ANNOTATOR_RPM="4"))
    assert engine.concurrency == 4 and engine.concurrency_note and "PRELABEL_ANNOTATOR_RPM" in engine.concurrency_note
    unlimited = Engine(make_settings(PRELABEL_CONCURRENCY="50", PRELABEL_ANNOTATOR_RPM="0", PRELABEL_JUDGE_RPM="0"))
    assert unlimited.concurrency == 50 and unlimited.concurrency_note is None
    outcomes = unlimited.run_batch(unlimited.labeler(SUMMARY), [ls_task(i, dialogsum[i]) for i in range(30)])
    assert all(outcome.ok for outcome in outcomes) and provider.max_in_flight >= 25
