"""`prelabel label` at concurrency 1,000 against the asyncio fake provider (prelabel.testing.async_provider, in a
process of its own): injected faults end every item labeled or failed with the provider's reason and a rerun
finishes the pool paying only for what is missing; a SIGKILL mid-run is resumed exactly; a provider slowing
from 0.2 s to 5 s per call under the default PRELABEL_TIMEOUT fails nothing.

Only the public surface is used (the command in a subprocess, its output file, its printed summary and exit
code, and what the fake itself counted), so the tests hold whatever runs the calls inside the command."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.run import FAKE_BUSY_LIMIT
from prelabel.settings import Settings
from prelabel.testing.async_provider import AsyncProviderProcess, AsyncProviderStats
from tests.integration.test_bulk import cli, count_lines, read_output, write_pool

pytestmark = pytest.mark.timeout(240)

# `--concurrency` takes up to 1,024 (PRELABEL_CONCURRENCY stops at 512), so the flag carries the 1,000.
CONCURRENCY = "1000"
ANNOTATOR, JUDGE = "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"
# What a provider failure reads like after the SDK's retries, one pattern per injected fault: a status (529 is
# 503 on OpenAI), the client's timeout, a 200 whose body is not JSON. Anything else (an internal error, a lost
# connection) is not what the fake injected.
PROVIDER_FAILURE = re.compile(r"(\w+Error \(HTTP (?:429|500|503|529)\): |APITimeoutError: |malformed response body: )")


@contextmanager
def async_fake(*args: str) -> Iterator[AsyncProviderProcess]:
    """The asyncio fake in its own process, its counts started afresh."""
    with AsyncProviderProcess(*args) as fake:
        fake.reset()
        yield fake


def point_at(make_settings: Callable[..., Settings], fake: AsyncProviderProcess, **env: str) -> None:
    """The command's environment (as benchmarks.run.provider_env sets it): both roles at `fake`, a wide console
    (rich wraps at 80 columns off a terminal), and `env` on top."""
    make_settings(
        PRELABEL_ANNOTATOR=ANNOTATOR,
        PRELABEL_JUDGE=JUDGE,
        OPENAI_BASE_URL=fake.base_url,
        ANTHROPIC_BASE_URL=fake.anthropic_base_url,
        COLUMNS="400",
        **env,
    )


def run(log: Path, pool: Path, output: Path, timeout: float = 120) -> tuple[int, str]:
    """One `prelabel label` run to its end: the exit code and what it printed."""
    process = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", CONCURRENCY)
    return process.wait(timeout=timeout), log.read_text(encoding="utf-8")


def figure(text: str, row: str) -> int:
    """A number of the printed summary table, by its row's name (0 for a row not shown)."""
    match = re.search(rf"^\W*{re.escape(row)}\W+([\d,]+)", text, re.MULTILINE)
    return int(match.group(1).replace(",", "")) if match else 0


def unrated_figure(text: str) -> int:
    match = re.search(r"^\W*labeled this run\W+[\d,]+ \(([\d,]+) unrated\)", text, re.MULTILINE)
    return int(match.group(1).replace(",", "")) if match else 0


def by_id(rows: list[dict[str, Any]], ids: list[str]) -> dict[str, dict[str, Any]]:
    """The output's rows by source id, checked to hold every id of the pool exactly once."""
    found = Counter(row["source_id"] for row in rows)
    twice = sorted(sid for sid, count in found.items() if count > 1)
    assert not twice, f"{len(twice)} ids written more than once, e.g. {twice[:5]}"
    assert set(found) == set(ids), (
        f"missing {sorted(set(ids) - set(found))[:5]}, extra {sorted(set(found) - set(ids))[:5]}"
    )
    return {row["source_id"]: row for row in rows}


def settle(fake: AsyncProviderProcess, timeout: float = 30) -> AsyncProviderStats:
    """The fake's stats once no call is in flight (a killed client's calls are answered to no one first)."""
    deadline = time.monotonic() + timeout
    while (stats := fake.stats()).in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stats.in_flight, stats
    return stats


def fake_not_the_limit(stats: AsyncProviderStats) -> None:
    """The fake's one event loop stayed well below a core: the run measured the command, not the fake."""
    assert stats.busy_share < FAKE_BUSY_LIMIT, f"the fake was busy {stats.busy_share:.0%} of a core: {stats}"


def test_thirty_percent_faults_at_concurrency_1000_end_listed_and_a_rerun_pays_only_for_them(
    make_settings, dialogsum, tmp_path
):
    pool, output = tmp_path / "pool.jsonl", tmp_path / "out.jsonl"
    ids = write_pool(pool, dialogsum, 1000)
    # A "timeout" fault holds its answer 5 s, past the client's 2 s; the SDK retries twice (Retry-After 0).
    faults = ("--fault-rate", "0.3", "--faults", "429,500,529,timeout,malformed", "--timeout-delay", "5")
    with async_fake("--latency", "0.2", *faults) as fake:
        point_at(make_settings, fake, PRELABEL_TIMEOUT="2", PRELABEL_MAX_RETRIES="2")
        code, text = run(tmp_path / "first.log", pool, output)
        stats = fake.stats()
    assert code == 1, text[-3000:]  # some items failed
    assert "Traceback" not in text
    assert set(stats.faults) == {"429", "500", "529", "timeout", "malformed"}, stats
    fake_not_the_limit(stats)

    rows = by_id(read_output(output), ids)
    failed = {sid: row for sid, row in rows.items() if row["error"] is not None}
    labeled = {sid: row for sid, row in rows.items() if row["error"] is None}
    unrated = {sid: row for sid, row in labeled.items() if row["rating"] is None}
    assert failed and unrated, "30% faults with 2 retries leave some items failed and some unrated"
    assert all(row["label"] is None and row["rating"] is None for row in failed.values())
    assert all(row["label"] for row in labeled.values())
    # Each reason is the provider's failure as the SDK reported it after its retries, on the right role.
    for sid, row in failed.items():
        prefix = f"task {sid}: annotator call failed: {ANNOTATOR}: "
        assert row["error"].startswith(prefix) and PROVIDER_FAILURE.match(row["error"], len(prefix)), row["error"]
    for row in unrated.values():
        prefix = f"judge call failed: {JUDGE}: "
        reason = row["unrated_reason"]
        assert reason.startswith(prefix) and PROVIDER_FAILURE.match(reason, len(prefix)), reason
    # What the command printed and its exit code agree with the file.
    assert figure(text, "labeled this run") == len(labeled) and unrated_figure(text) == len(unrated)
    assert figure(text, "failed") == len(failed) and figure(text, "done in earlier runs") == 0
    assert f"{len(labeled) - len(unrated):,} rated, {len(unrated):,} unrated, {len(failed):,} failed" in text

    # The faults stop (a fake without them, same MODEL_DIR): the rerun asks again for the failed items
    # (annotator and judge) and for the judges of the unrated ones (their labels are cached), nothing else.
    with async_fake("--latency", "0.2") as healthy:
        point_at(make_settings, healthy, PRELABEL_TIMEOUT="60")
        code, text = run(tmp_path / "rerun.log", pool, output)
        again = healthy.stats()
    assert code == 0, text[-3000:]
    assert again.received == 2 * len(failed) + len(unrated), again
    assert again.statuses == {"200": again.received}
    fake_not_the_limit(again)
    assert figure(text, "earlier failures tried again") == len(failed)
    assert figure(text, "earlier unrated items rated again") == len(unrated)
    assert figure(text, "done in earlier runs") == len(labeled) - len(unrated)
    assert figure(text, "labeled this run") == len(failed) + len(unrated) and figure(text, "failed") == 0

    final = by_id(read_output(output), ids)
    assert all(row["error"] is None and row["label"] and row["rating"] for row in final.values())
    kept = {sid: row for sid, row in labeled.items() if sid not in unrated}
    assert {sid: final[sid] for sid in kept} == kept  # the rated items' lines are the first run's, untouched


def test_sigkill_at_concurrency_1000_and_the_rerun_finishes_exactly(make_settings, dialogsum, tmp_path):
    pool, output, log = tmp_path / "pool.jsonl", tmp_path / "out.jsonl", tmp_path / "cli.log"
    ids = write_pool(pool, dialogsum, 1500)
    # 1 s per call: even a client holding all 1,000 items in flight at once is caught mid-run.
    with async_fake("--latency", "1.0") as fake:
        point_at(make_settings, fake, PRELABEL_TIMEOUT="60")
        process = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", CONCURRENCY)
        deadline = time.monotonic() + 120
        while count_lines(output) < 0.4 * len(ids) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, f"the run ended before it could be killed: {log.read_text()[-3000:]}"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        killed = settle(fake)

        # What the killed run left: whole lines (each parses) and at most one cut short at the end.
        raw = output.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]
        done = {row["source_id"]: row for row in map(json.loads, whole.splitlines())}
        assert len(done) == whole.count(b"\n"), "an id written twice by the killed run"
        assert 0.3 * len(ids) <= len(done) < len(ids)
        remaining = len(ids) - len(done)

        fake.reset()
        code, text = run(tmp_path / "rerun.log", pool, output)
        rerun = fake.stats()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    # No call for an item already in the output: at most annotator + judge for each item left (fewer when
    # the killed run had paid for answers of items it had in flight: they come from the cache).
    assert 0 < rerun.received <= 2 * remaining, (rerun, remaining)
    assert rerun.statuses == {"200": rerun.received}
    fake_not_the_limit(killed)
    fake_not_the_limit(rerun)
    assert figure(text, "done in earlier runs") == len(done)
    assert figure(text, "labeled this run") == remaining and figure(text, "failed") == 0
    assert ("an unfinished last line of an earlier run was removed" in text) == (raw != whole)

    assert output.read_bytes().endswith(b"\n")
    final = by_id(read_output(output), ids)  # every line parses: no partial line is left
    assert all(row["error"] is None and row["label"] and row["rating"] for row in final.values())
    assert {sid: final[sid] for sid in done} == done  # the killed run's lines are kept as they were


def test_a_provider_slowing_to_5_s_per_call_fails_nothing_under_the_default_timeout(
    make_settings, dialogsum, tmp_path, monkeypatch
):
    default_timeout = Settings.model_fields["prelabel_timeout"].default
    slowest = 5.0
    assert slowest < default_timeout / 2  # far from the client's timeout, even at the slowest
    pool, output, log = tmp_path / "pool.jsonl", tmp_path / "out.jsonl", tmp_path / "cli.log"
    ids = write_pool(pool, dialogsum, 1500)
    # Short enough that a client keeping all 1,000 items in flight is still working when the latency tops out:
    # the first items' judge calls and the last 500 items are answered at up to 5 s per call.
    ramp_s = 1.0
    samples: list[AsyncProviderStats] = []
    with async_fake("--ramp", "0.2", str(slowest), str(ramp_s)) as fake:
        point_at(make_settings, fake)
        monkeypatch.delenv("PRELABEL_TIMEOUT")  # the command's own default
        process = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", CONCURRENCY)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            samples.append(fake.stats())
            time.sleep(0.2)
        code = process.wait(timeout=30)
        stats = fake.stats()
    text = log.read_text(encoding="utf-8")
    assert code == 0, text[-3000:]

    rows = by_id(read_output(output), ids)
    assert all(row["error"] is None and row["label"] and row["rating"] for row in rows.values())
    assert figure(text, "labeled this run") == len(ids) and figure(text, "failed") == 0
    # The fake cannot tell a call the client gave up on from one it answered late, but the SDK retries after a
    # timeout: exactly one annotator and one judge call per item means no call timed out.
    assert stats.received == stats.served == 2 * len(ids), stats
    assert stats.statuses == {"200": 2 * len(ids)}
    # ...with the calls it was given in flight at once (no pool or connection limit queueing them).
    assert stats.max_in_flight >= 0.9 * int(CONCURRENCY), stats
    fake_not_the_limit(stats)
    # The run met the slow provider: a good share of its calls arrived once the latency was past 4.5 s.
    slow_from = next((s for s in samples if s.latency_now_s >= 0.9 * slowest), None)
    assert slow_from is not None, f"the latency never rose past {0.9 * slowest} s: {samples[-1:]}"
    assert stats.received - slow_from.received >= 0.2 * stats.received, (slow_from, stats)
