"""`prelabel label` end to end against the fake provider: resume after SIGKILL, rate limits as the server
sees them, injected faults, and the command's exit codes. Speed is measured in benchmarks/, not here."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from prelabel.label_interface import parse_label_config
from prelabel.labeling.live import label_file
from prelabel.labeling.output import BulkRecord, prepare_output
from prelabel.scripts.label import label
from prelabel.testing import MALFORMED, TIMEOUT, FakeReply, FakeRequest
from tests.conftest import ROOT, SUMMARY_CONFIG, ScriptedLLM

SUMMARY = parse_label_config(SUMMARY_CONFIG)
CONFIG_PATH = ROOT / "label_config" / "summarization.xml"


def write_pool(path: Path, dialogsum: list[dict[str, Any]], count: int) -> list[str]:
    """`count` items with distinct ids and distinct dialogues (so no call is a cache hit)."""
    ids = []
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            record = dialogsum[index % len(dialogsum)]
            ids.append(f"item-{index}")
            dialogue = record["dialogue"] + f"\n#Person1#: Reference {index}."
            handle.write(json.dumps({"id": ids[-1], "dialogue": dialogue}) + "\n")
    return ids


def read_output(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def final_set(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(r["source_id"], r["label"], r["rating"], r["error"]) for r in rows}


def cli(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """The real command in its own process; its output goes to a file (a full pipe would block it)."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "prelabel.scripts.label", *args, "--no-progress"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            # Ctrl-C as at a terminal: a shell's background job (CI) would hand the child SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def test_resume_after_sigkill_gives_the_uninterrupted_set(make_settings, provider, dialogsum, tmp_path):
    provider.latency = 0.03
    make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 400)

    # The reference: one uninterrupted run with its own cache.
    os.environ["MODEL_DIR"] = str(tmp_path / "store-reference")
    reference_out = tmp_path / "reference.jsonl"
    log = tmp_path / "cli.log"
    done = cli(log, "-i", str(pool), "-o", str(reference_out), "--concurrency", "8")
    assert done.wait(timeout=300) == 0, log.read_text()
    reference = read_output(reference_out)

    os.environ["MODEL_DIR"] = str(tmp_path / "store-killed")
    output = tmp_path / "killed.jsonl"
    kills = 0
    for threshold in (60, 200):  # kill it twice, at different points
        process = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "8")
        deadline = time.monotonic() + 120
        while count_lines(output) < threshold and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        kills += 1
        assert 0 < count_lines(output) < len(ids)
    # A kill in the middle of a write leaves half a line: simulate it, the next run must repair it.
    with output.open("ab") as handle:
        handle.write(b'{"source_id": "item-399", "label": "cut sh')
    resumed = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "8")
    assert resumed.wait(timeout=300) == 0, log.read_text()
    assert kills == 2

    rows = read_output(output)  # every line parses: the half line is gone
    source_ids = [row["source_id"] for row in rows]
    assert len(source_ids) == len(set(source_ids)) == len(ids)  # no duplicate, no loss
    assert set(source_ids) == set(ids)
    assert final_set(rows) == final_set(reference)
    assert all(row["error"] is None and row["rating"] == "good" for row in rows)


def test_partial_last_line_and_failures_are_repaired_on_resume(tmp_path):
    output = tmp_path / "out.jsonl"
    good = BulkRecord(source_id="a", label="x", model_version="v").line()
    failed = BulkRecord(source_id="b", error="task b: annotator call failed", model_version="v").line()
    output.write_bytes(good + failed + good + b'{"source_id": "c", "lab')
    state = prepare_output(output, retry_failed=True)
    assert state.done == {"a"} and state.retrying == 1 and state.dropped_partial_line
    assert state.dropped_duplicates == 1
    assert output.read_bytes() == good  # only the one good line is kept
    output.write_bytes(good + failed)
    kept = prepare_output(output, retry_failed=False)
    assert kept.done == {"a", "b"} and output.read_bytes() == good + failed


def test_rate_limits_hold_at_the_server(make_settings, provider, dialogsum, tmp_path):
    rpm = 600  # 10 per second, a burst of 10
    settings = make_settings(PRELABEL_ANNOTATOR_RPM=rpm, PRELABEL_JUDGE_RPM=rpm // 2)
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 45)
    summary = label_file(settings, SUMMARY, pool, tmp_path / "out.jsonl", concurrency=32)
    assert summary.labeled == 45

    for kind, limit in (("openai", rpm), ("anthropic", rpm // 2)):
        burst = max(1.0, limit / 60)
        per_second = (limit - burst) / 60
        assert provider.peak_in_window(60.0, provider=kind) <= limit
        # The per-minute limit, scaled to windows the test can afford. The server sees arrivals, not grants:
        # on a busy machine a granted call can reach it up to a few hundred ms late and bunch up with the next
        # ones, so the window the limiter kept is allowed half a second more. Without limits all 45 calls
        # arrive within a fraction of a second, far above these bounds.
        jitter_s = 0.5
        for window in (1.0, 2.0, 3.0):
            assert provider.peak_in_window(window, provider=kind) <= burst + per_second * (window + jitter_s) + 1


class Flaky:
    """The scripted LLM, with a judge that answers with a made-up level one time in ten."""

    def __init__(self, llm: ScriptedLLM, seed: int = 1):
        self.llm = llm
        self.rng = random.Random(seed)

    def __call__(self, request: FakeRequest) -> Any:
        if self.llm.is_judge(request) and self.rng.random() < 0.1:
            answer = {"rating": "superb", "reason": "made up."}
            return answer if request.tool else FakeReply(content=json.dumps(answer))
        return self.llm(request)


def test_thirty_percent_faults_end_labeled_or_listed(make_settings, provider, llm, dialogsum, tmp_path):
    provider.responder = Flaky(llm)
    provider.fault_rate = 0.3
    provider.fault_kinds = (429, 500, 529, TIMEOUT, MALFORMED)
    provider.timeout_delay = 1.0
    settings = make_settings(PRELABEL_TIMEOUT="0.3", PRELABEL_MAX_RETRIES="2")
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 1000)
    output = tmp_path / "out.jsonl"

    summary = label_file(settings, SUMMARY, pool, output, concurrency=64)
    rows = read_output(output)
    by_id = {row["source_id"]: row for row in rows}
    assert len(rows) == len(by_id) == 1000 and set(by_id) == set(ids)  # none dropped, none twice
    failed = [row for row in rows if row["error"] is not None]
    labeled = [row for row in rows if row["error"] is None]
    assert summary.failed == len(failed) > 0 and summary.labeled == len(labeled)
    assert all(row["label"] for row in labeled)
    assert all(row["error"].startswith(f"task {row['source_id']}: ") and len(row["error"]) > 30 for row in failed)
    unrated = [row for row in labeled if row["rating"] is None]
    assert unrated and all(row["unrated_reason"] for row in unrated)
    assert {fault for fault in (r.fault for r in provider.requests) if fault} >= {"429", "500", "timeout", "malformed"}

    # The faults stop; rerunning retries exactly the failed items and the ones a passing judge failure left
    # unrated, and keeps the rest: an answer that did not parse twice stays unrated with its reason.
    passing = [row for row in unrated if not row["unrated_reason"].startswith("judge answer did not parse twice")]
    kept_unrated = {row["source_id"]: row["unrated_reason"] for row in unrated if row not in passing}
    assert passing and kept_unrated
    provider.fault_rate = 0.0
    provider.responder = llm
    again = label_file(settings, SUMMARY, pool, output, concurrency=64)
    assert again.already_done == len(labeled) - len(passing) and again.retried_failed == len(failed)
    assert again.rerated == len(passing)
    assert again.labeled == len(failed) + len(passing) and again.failed == 0
    rows = read_output(output)
    assert sorted(row["source_id"] for row in rows) == sorted(ids)
    assert all(row["error"] is None for row in rows)
    assert {row["source_id"]: row["unrated_reason"] for row in rows if row["rating"] is None} == kept_unrated


def test_cli_exit_codes_and_bad_lines(make_settings, provider, dialogsum, tmp_path):
    make_settings()
    app = typer.Typer()
    app.command()(label)
    app.command("other")(lambda: None)  # two commands, so `label` is a subcommand as in the real CLI
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 5)
    with pool.open("a") as handle:
        handle.write("not json\n")
    output = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["label", "-i", str(pool), "-o", str(output), "-c", str(CONFIG_PATH), "--no-progress"]
    )
    assert result.exit_code == 1, result.output  # one item failed
    rows = read_output(output)
    assert len(rows) == 6 and [row["source_id"] for row in rows if row["error"]] == ["line:6"]
    calls = provider.count
    result = CliRunner().invoke(
        app, ["label", "-i", str(pool), "-o", str(output), "--no-progress", "--no-retry-failed"]
    )
    assert result.exit_code == 0 and provider.count == calls  # nothing left to do, nothing called
    result = CliRunner().invoke(app, ["label", "-i", str(pool), "-o", str(tmp_path / "new.jsonl"), "--dry-run"])
    assert result.exit_code == 0 and "estimate" in result.output and provider.count == calls


def test_cached_items_are_answered_at_once_and_each_hit_is_logged_once(make_settings, provider, dialogsum, tmp_path):
    from prelabel.store import Store

    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 10)
    label_file(settings, SUMMARY, pool, tmp_path / "first.jsonl", concurrency=4)
    assert provider.count == 20

    # A new judge prompt: every annotator answer is cached, no judge answer is. The cache-only attempt finds
    # the label, misses the verdict, and the item goes to a worker, which finds the label again: one hit each.
    judge = tmp_path / "judge.txt"
    judge.write_text(
        "Rate the summary of this conversation.\nConversation:\n{input}\nSummary:\n{label}\n", encoding="utf-8"
    )
    settings = make_settings(PRELABEL_JUDGE_PROMPT=str(judge))
    second = label_file(settings, SUMMARY, pool, tmp_path / "second.jsonl", concurrency=4)
    assert second.labeled == 10 and provider.count == 30
    totals = {row["role"]: row for row in Store(settings.store_path).usage_totals()}
    assert (totals["annotator"]["calls"], totals["annotator"]["cache_hits"]) == (20, 10)
    assert (totals["judge"]["calls"], totals["judge"]["cache_hits"]) == (20, 0)

    # Everything cached now: no provider call, no worker, and the output equals the worker-made one.
    third = label_file(settings, SUMMARY, pool, tmp_path / "third.jsonl", concurrency=4)
    assert third.labeled == 10 and provider.count == 30
    totals = {row["role"]: row for row in Store(settings.store_path).usage_totals()}
    assert totals["annotator"]["cache_hits"] == 20 and totals["judge"]["cache_hits"] == 10
    assert sorted(read_output(tmp_path / "third.jsonl"), key=lambda r: r["source_id"]) == sorted(
        read_output(tmp_path / "second.jsonl"), key=lambda r: r["source_id"]
    )


def test_unreadable_records_and_clashing_ids_fail_their_items_and_the_run_goes_on(
    make_settings, provider, dialogsum, tmp_path
):
    make_settings()
    app = typer.Typer()
    app.command()(label)
    app.command("other")(lambda: None)
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 4)
    lines = pool.read_bytes().splitlines(keepends=True)
    clash = json.dumps({"id": "item-0", "dialogue": "#Person1#: Something else."}).encode() + b"\n"
    again = lines[1]  # the same record twice: one item, no error
    flag = json.dumps({"id": True, "dialogue": "#Person1#: Hi."}).encode() + b"\n"
    pool.write_bytes(b"\xef\xbb\xbf" + b"".join(lines) + b'{"id": "x", "dialogue": "caf\xe9"}\n' + clash + again + flag)
    output = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["label", "-i", str(pool), "-o", str(output), "-c", str(CONFIG_PATH), "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    rows = {row["source_id"]: row for row in read_output(output)}
    assert sorted(rows) == ["item-0", "item-1", "item-2", "item-3", "line:5", "line:6", "line:8"]
    assert all(rows[f"item-{n}"]["error"] is None for n in range(4))  # the BOM line kept its id
    assert "line 5" in rows["line:5"]["error"] and "UTF-8" in rows["line:5"]["error"]
    assert "already used by line 1" in rows["line:6"]["error"]
    assert "'id'" in rows["line:8"]["error"] and str(pool) in rows["line:8"]["error"]
    # A rerun tries the failed items again and lists them again; the labeled ones stay.
    result = CliRunner().invoke(app, ["label", "-i", str(pool), "-o", str(output), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert sorted(row["source_id"] for row in read_output(output)) == sorted(rows)


def test_ctrl_c_pressed_three_times_still_ends_with_the_summary_and_a_resumable_output(
    make_settings, provider, dialogsum, tmp_path
):
    provider.latency = 0.5  # items stay in flight long enough for the second and third Ctrl-C to land
    make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 120)
    output, log = tmp_path / "out.jsonl", tmp_path / "cli.log"
    process = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "8")
    deadline = time.monotonic() + 120
    while count_lines(output) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, log.read_text()
    for _ in range(3):
        process.send_signal(signal.SIGINT)
        time.sleep(0.1)
    assert process.wait(timeout=60) == 130, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text
    assert "interrupted: rerun the same command to continue" in text
    stopped_at = count_lines(output)
    assert 8 <= stopped_at < len(ids)

    resumed = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "8")
    assert resumed.wait(timeout=300) == 0, log.read_text()
    source_ids = [row["source_id"] for row in read_output(output)]
    assert len(source_ids) == len(set(source_ids)) == len(ids)  # nothing lost, nothing twice
