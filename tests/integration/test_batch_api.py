"""`prelabel label --batch-api` against a fake of both providers' batch APIs, driven by the real SDKs over HTTP:
both provider pairings, jobs split at the limits, partial failures, expiry, and resume after the process died."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from prelabel.label_interface import parse_label_config
from prelabel.labeling.batch import BatchOptions, BatchStateError, StateFile, label_file_batch
from prelabel.labeling.live import label_file
from prelabel.pricing import BUILTIN_PRICES
from prelabel.providers.batch import BatchLimits, custom_id
from prelabel.scripts.label import label
from prelabel.testing import ANTHROPIC, OPENAI, FakeReply, FakeRequest
from prelabel.testing.batch_server import FakeBatchServer
from tests.conftest import ROOT, SENTIMENT_CONFIG, SUMMARY_CONFIG, ScriptedLLM
from tests.integration.test_bulk import read_output, write_pool

SUMMARY = parse_label_config(SUMMARY_CONFIG)
SENTIMENT = parse_label_config(SENTIMENT_CONFIG)
FAST = {"poll_interval_s": 0.02}


@pytest.fixture
def provider(llm: ScriptedLLM) -> Iterator[FakeBatchServer]:
    """The fake batch server stands in for the fake provider, so `make_settings` points both roles at it."""
    with FakeBatchServer(llm, seed=0) as fake:
        yield fake


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    result = {row["source_id"]: row for row in rows}
    assert len(result) == len(rows), "an item is in the output twice"
    return result


def first_turn(dialogue: str) -> str:
    return dialogue.splitlines()[0].split(":", 1)[-1].strip()


def role_of(request: FakeRequest, llm: ScriptedLLM) -> str:
    return "judge" if llm.is_judge(request) else "annotator"


def test_openai_annotator_anthropic_judge_split_at_the_limits(make_settings, provider, llm, dialogsum, tmp_path):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 7)
    pool_rows = {json.loads(line)["id"]: json.loads(line) for line in pool.read_text().splitlines()}
    output = tmp_path / "out.jsonl"
    # Small limits on both sides: annotator jobs of 3 requests at most, judge jobs of 2. A judge job goes out
    # for each annotator job as it ends, so the judge side splits 3, 3, 1 into 2+1, 2+1, 1.
    provider.limits = {OPENAI: (3, 200_000_000), ANTHROPIC: (2, 256_000_000)}
    provider.polls_until_done = 3
    options = BatchOptions(
        **FAST,
        limits={
            "openai": BatchLimits(max_requests=3, max_bytes=200_000_000),
            "anthropic": BatchLimits(max_requests=2, max_bytes=256_000_000),
        },
    )
    events: list[str] = []

    summary = label_file_batch(settings, SUMMARY, pool, output, options=options, on_event=events.append)

    rows = by_id(read_output(output))
    assert set(rows) == set(ids)
    for sid, row in rows.items():
        assert row["error"] is None and row["unrated_reason"] is None
        assert row["label"] == f"Summary: {first_turn(pool_rows[sid]['dialogue'])}"
        assert row["rating"] == "good" and row["level"] == 3 and row["score"] == 0.75
        assert row["model_version"] == summary.model_version
    assert summary.labeled == 7 and summary.failed == 0 and summary.live_retries == 0
    openai_batches, anthropic_batches = provider.created(OPENAI), provider.created(ANTHROPIC)
    assert [len(b.entries) for b in openai_batches] == [3, 3, 1]
    assert sorted(len(b.entries) for b in anthropic_batches) == [1, 1, 1, 2, 2]
    assert {role_of(r, llm) for b in openai_batches for r in b.requests} == {"annotator"}
    assert {role_of(r, llm) for b in anthropic_batches for r in b.requests} == {"judge"}
    assert provider.count == 0  # no live call
    assert len(summary.jobs_submitted) == 8 and summary.jobs_pending == []
    assert not StateFile(output).path.exists()  # nothing left open
    assert any("submitted openai batch" in event for event in events)

    # The judge read each item's own label; custom ids are unique per job and map back to the item.
    for batch in anthropic_batches:
        for entry, request in zip(batch.entries, batch.requests):
            sid = next(s for s in ids if custom_id(s) == entry["custom_id"])
            assert rows[sid]["label"] in request.prompt_text
            assert request.tool is not None and request.tool.name == "rate_label"
            assert entry["params"]["tool_choice"] == {"type": "tool", "name": "rate_label"}

    # Usage at half the list price.
    usage = {u.role: u for u in summary.usage}
    annotator = usage["annotator (batch)"]
    assert annotator.calls == 7 and annotator.input_tokens > 0
    full = BUILTIN_PRICES["gpt-4o-mini"].cost(annotator.input_tokens, annotator.output_tokens)
    assert annotator.cost_usd == pytest.approx(full / 2)
    assert usage["judge (batch)"].calls == 7

    # The cache is filled: a live run of the same pool calls nothing and writes the same records.
    live = label_file(settings, SUMMARY, pool, tmp_path / "live.jsonl")
    assert live.labeled == 7 and provider.count == 0
    live_rows = by_id(read_output(tmp_path / "live.jsonl"))
    assert {sid: (r["label"], r["rating"]) for sid, r in live_rows.items()} == {
        sid: (r["label"], r["rating"]) for sid, r in rows.items()
    }


def test_batch_requests_are_the_live_requests(make_settings, provider, llm, dialogsum, tmp_path):
    """Same prompt and parameters: a live call's body equals the batch line's body for the same item."""
    settings = make_settings(PRELABEL_CACHE="0", MODEL_DIR=str(tmp_path / "live-store"))
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 2)
    label_file(settings, SUMMARY, pool, tmp_path / "live.jsonl")
    live = {
        (
            r.provider,
            role_of(FakeRequest(r.provider, r.path, r.model, r.body.get("messages", []), r.body, {}), llm),
            r.body["messages"][0]["content"],
        ): r.body
        for r in provider.requests
    }
    settings = make_settings(MODEL_DIR=str(tmp_path / "batch-store"))
    label_file_batch(settings, SUMMARY, pool, tmp_path / "batch.jsonl", options=BatchOptions(**FAST))
    submitted = [
        (b.provider, entry, request) for b in provider.created() for entry, request in zip(b.entries, b.requests)
    ]
    assert len(submitted) == 4
    for kind, entry, request in submitted:
        body = entry["body"] if kind == OPENAI else entry["params"]
        assert body == live[(kind, role_of(request, llm), body["messages"][0]["content"])]


def test_anthropic_annotator_openai_judge_classification(make_settings, provider, sentiment, tmp_path):
    settings = make_settings(PRELABEL_ANNOTATOR="anthropic:claude-haiku-4-5", PRELABEL_JUDGE="openai:gpt-4o-mini")
    provider.polls_until_done = 2
    pool = tmp_path / "pool.jsonl"
    records = sentiment[:6]
    pool.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in records))  # no ids: sha1 source ids
    output = tmp_path / "out.jsonl"

    summary = label_file_batch(settings, SENTIMENT, pool, output, options=BatchOptions(**FAST))

    rows = read_output(output)
    assert len(rows) == 6 and summary.labeled == 6 and summary.failed == 0
    assert all(row["source_id"].startswith("sha1:") for row in rows)
    assert {row["label"] for row in rows} <= {"positive", "negative"}
    assert all(row["rating"] == "good" for row in rows)
    # The OpenAI judge asked for log-probabilities in its batch lines, and the G-Eval score came from them.
    judge_lines = [entry for batch in provider.created(OPENAI) for entry in batch.entries]
    assert len(judge_lines) == 6 and all(line["body"]["logprobs"] is True for line in judge_lines)
    assert all(line["body"]["response_format"]["json_schema"]["name"] == "rate_label" for line in judge_lines)
    assert all(0.74 < row["score"] < 0.76 for row in rows)
    annotator_requests = [entry for batch in provider.created(ANTHROPIC) for entry in batch.entries]
    assert all(entry["params"]["tool_choice"]["name"] == "choose_label" for entry in annotator_requests)
    assert provider.count == 0


def test_partial_failure_unparseable_answers_and_rerun(make_settings, provider, llm, dialogsum, tmp_path):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 8)
    pool_rows = {json.loads(line)["id"]: json.loads(line) for line in pool.read_text().splitlines()}
    marker = {sid: f"Reference {sid.split('-')[1]}." for sid in ids}

    def about(request: FakeRequest, sid: str) -> bool:
        return marker[sid] in request.prompt_text

    def request_error(request: FakeRequest) -> tuple[int, str] | None:
        if not llm.is_judge(request) and (about(request, "item-2") or about(request, "item-5")):
            return 500, "The server had an error processing your request."
        if llm.is_judge(request) and about(request, "item-3"):
            return 529, "Overloaded"
        return None

    batch_answers: dict[str, int] = {}

    def responder(request: FakeRequest) -> Any:
        # item-4's judge answers "superb" in the batch; the live retry gets a real level.
        if llm.is_judge(request) and about(request, "item-4") and not batch_answers.get("item-4"):
            batch_answers["item-4"] = 1
            return {"rating": "superb", "reason": "made up."}
        # item-6's summary is empty in the batch and again live: the item fails with both reasons.
        if not llm.is_judge(request) and about(request, "item-6"):
            return FakeReply(content="   ")
        return llm(request)

    provider.responder = responder
    provider.request_error = request_error
    output = tmp_path / "out.jsonl"
    summary = label_file_batch(settings, SUMMARY, pool, output, options=BatchOptions(**FAST))

    rows = by_id(read_output(output))
    assert set(rows) == set(ids)  # none lost, none twice
    for sid in ("item-2", "item-5"):
        assert rows[sid]["label"] is None
        assert rows[sid]["error"].startswith(f"task {sid}: annotator call failed: batch batch_")
        assert "HTTP 500" in rows[sid]["error"] and "error processing your request" in rows[sid]["error"]
    assert rows["item-6"]["error"].startswith("task item-6: annotator call failed: unusable answer twice")
    assert rows["item-3"]["error"] is None and rows["item-3"]["rating"] is None
    assert rows["item-3"]["label"] == f"Summary: {first_turn(pool_rows['item-3']['dialogue'])}"
    assert rows["item-3"]["unrated_reason"].startswith("judge call failed: batch msgbatch_")
    assert "overloaded_error: Overloaded" in rows["item-3"]["unrated_reason"]
    assert rows["item-4"]["rating"] == "good" and rows["item-4"]["unrated_reason"] is None
    assert summary.failed == 3 and summary.labeled == 5 and summary.unrated == 1
    assert sorted(f.split(":")[0] for f in summary.failures) == ["item-2", "item-5", "item-6"]
    assert summary.live_retries == 2  # item-4's judge, item-6's annotator
    live_calls = [(r.provider, r.path) for r in provider.requests]
    assert sorted(live_calls) == [(ANTHROPIC, "/v1/messages"), (OPENAI, "/v1/chat/completions")]
    assert not StateFile(output).path.exists()

    # The provider recovers; a rerun submits exactly the failed items again, rates item-3 (its judge was only
    # overloaded; its label comes from the cache) and keeps the rest.
    provider.request_error = None
    provider.responder = llm
    before = len(provider.created(OPENAI))
    again = label_file_batch(settings, SUMMARY, pool, output, options=BatchOptions(**FAST))
    new_annotator = provider.created(OPENAI)[before:]
    assert sorted(len(b.entries) for b in new_annotator) == [3]
    assert again.retried_failed == 3 and again.labeled == 4 and again.failed == 0 and again.already_done == 4
    rows = by_id(read_output(output))
    assert set(rows) == set(ids) and all(row["error"] is None for row in rows.values())
    assert rows["item-3"]["rating"] == "good" and rows["item-3"]["unrated_reason"] is None


def test_expired_requests_are_resubmitted_once(make_settings, provider, dialogsum, tmp_path):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 5)
    provider.expire_plan = [2]  # the first (annotator) batch runs 2 requests, then expires
    summary = label_file_batch(settings, SUMMARY, pool, tmp_path / "out.jsonl", options=BatchOptions(**FAST))

    annotator_batches = provider.created(OPENAI)
    assert [len(b.entries) for b in annotator_batches] == [5, 3]
    first_expired = {e["custom_id"] for e in annotator_batches[0].entries[2:]}
    assert {e["custom_id"] for e in annotator_batches[1].entries} == first_expired
    assert summary.resubmitted == 3 and summary.labeled == 5 and summary.failed == 0
    rows = by_id(read_output(tmp_path / "out.jsonl"))
    assert set(rows) == set(ids) and all(row["rating"] == "good" for row in rows.values())


def test_expired_again_is_listed_with_its_reason(make_settings, provider, dialogsum, tmp_path):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 5)
    output = tmp_path / "out.jsonl"
    # Annotator batch: 3 run, 2 expire, and their resubmission expires too. Judge batch (the 3 labeled): 1 runs,
    # 2 expire, and their resubmission expires too.
    provider.expire_plan = [3, 0, 1, 0]
    summary = label_file_batch(settings, SUMMARY, pool, output, options=BatchOptions(**FAST))

    rows = by_id(read_output(output))
    assert set(rows) == set(ids)
    failed = {sid: row for sid, row in rows.items() if row["error"]}
    unrated = {sid: row for sid, row in rows.items() if row["error"] is None and row["rating"] is None}
    assert len(failed) == 2 and len(unrated) == 2
    assert all("annotator call failed" in row["error"] and "batch_expired" in row["error"] for row in failed.values())
    assert all("could not be executed before the completion window expired" in row["error"] for row in failed.values())
    assert all(
        row["unrated_reason"].startswith("judge call failed: batch msgbatch_")
        and row["unrated_reason"].endswith("request expired")
        for row in unrated.values()
    )
    assert summary.failed == 2 and summary.unrated == 2 and summary.resubmitted == 4
    assert [len(b.entries) for b in provider.created()] == [5, 2, 3, 2]

    # Nothing expires any more: a rerun tries the failed items again and rates the two whose judge request
    # expired (a passing failure, as on the live path).
    again = label_file_batch(settings, SUMMARY, pool, output, options=BatchOptions(**FAST))
    assert again.retried_failed == 2 and again.labeled == 4 and again.failed == 0
    rows = by_id(read_output(output))
    assert len(rows) == 5 and all(row["rating"] == "good" for row in rows.values())


def test_no_resubmission_lists_expired_at_once(make_settings, provider, dialogsum, tmp_path):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 4)
    provider.expire_plan = [1]
    summary = label_file_batch(
        settings, SUMMARY, pool, tmp_path / "out.jsonl", options=BatchOptions(**FAST, resubmit_unrun=0)
    )
    assert summary.failed == 3 and summary.labeled == 1 and summary.resubmitted == 0
    assert [len(b.entries) for b in provider.created(OPENAI)] == [4]


def test_split_by_bytes(make_settings, provider, dialogsum, tmp_path):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 6)
    sizes = [len(line) for line in pool.read_bytes().splitlines()]
    limit = int(max(sizes) * 2.6) + 2000  # about two requests per file, with room for the prompt and params
    provider.limits = {OPENAI: (50_000, limit), ANTHROPIC: (100_000, 256_000_000)}
    options = BatchOptions(**FAST, limits={"openai": BatchLimits(max_requests=50_000, max_bytes=limit)})
    summary = label_file_batch(settings, SUMMARY, pool, tmp_path / "out.jsonl", options=options)
    files = [provider.files[b.input_file_id] for b in provider.created(OPENAI)]
    assert len(files) >= 2 and sum(len(f.splitlines()) for f in files) == 6
    assert all(len(f) <= limit for f in files)
    for current, following in itertools.pairwise(files):  # a file is closed only when the next line would not fit
        assert len(current) + len(following.splitlines(keepends=True)[0]) > limit
    assert summary.labeled == 6


def test_a_changed_prompt_does_not_collect_old_jobs(make_settings, provider, dialogsum, tmp_path):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 2)
    output = tmp_path / "out.jsonl"
    provider.hold = {OPENAI}
    summary = label_file_batch(settings, SUMMARY, pool, output, options=BatchOptions(**FAST, wait=False))
    assert len(summary.jobs_pending) == 1 and StateFile(output).path.exists()
    prompt = tmp_path / "other.txt"
    prompt.write_text("Summarize:\n{input}")
    with pytest.raises(BatchStateError, match="open batch job"):
        label_file_batch(
            make_settings(PRELABEL_ANNOTATOR_PROMPT=str(prompt)), SUMMARY, pool, output, options=BatchOptions(**FAST)
        )


def cli(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "prelabel.scripts.label", *args, "--no-progress"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def test_resume_after_the_process_died(make_settings, provider, llm, dialogsum, tmp_path):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 6)
    output = tmp_path / "out.jsonl"
    state_path = StateFile(output).path
    log = tmp_path / "cli.log"
    args = ("-i", str(pool), "-o", str(output), "--batch-api", "--batch-poll", "0.05")

    # 1. The annotator job is submitted, then the process is killed while it waits.
    provider.hold = {OPENAI, ANTHROPIC}
    process = cli(log, *args)
    deadline = time.monotonic() + 60
    while not state_path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    polls_before = len([c for c in provider.batch_calls if c[0] == "GET"])
    while len([c for c in provider.batch_calls if c[0] == "GET"]) < polls_before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # it is polling
    assert process.poll() is None, log.read_text()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    state = json.loads(state_path.read_text())
    submitted = [b.id for b in provider.created()]
    assert len(submitted) == 1 and [job["id"] for job in state["jobs"]] == submitted
    assert sorted(state["jobs"][0]["source_ids"]) == sorted(ids)
    assert "sk-test" not in state_path.read_text() + log.read_text()  # keys are never written
    assert not output.exists() or output.read_text() == ""

    # 2. The next run collects the annotator job, submits the judge job, and is killed while it waits for it.
    provider.hold = {ANTHROPIC}
    process = cli(log, *args)
    while len(provider.created()) < 2 and process.poll() is None and time.monotonic() < deadline + 60:
        time.sleep(0.02)
    judge_polls = 0
    while judge_polls < 2 and process.poll() is None and time.monotonic() < deadline + 60:
        time.sleep(0.02)
        judge_polls = provider.created(ANTHROPIC)[0].polls if provider.created(ANTHROPIC) else 0
    assert process.poll() is None, log.read_text()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    created = provider.created()
    assert [b.provider for b in created] == [OPENAI, ANTHROPIC]  # the annotator job was not submitted again
    state = json.loads(state_path.read_text())
    assert {job["id"]: job["merged"] for job in state["jobs"]} == {created[0].id: True, created[1].id: False}

    # 3. In process: the third run collects the judge job without submitting anything.
    provider.release()
    app = typer.Typer()
    app.command()(label)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["label", *args, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"resumed batch jobs: {created[1].id}" in result.output
    assert len(provider.created()) == 2 and provider.count == 0
    rows = by_id(read_output(output))
    assert set(rows) == set(ids) and all(row["rating"] == "good" and row["error"] is None for row in rows.values())
    assert not state_path.exists()


def test_no_wait_submits_and_a_rerun_collects(make_settings, provider, dialogsum, tmp_path):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 3)
    output = tmp_path / "out.jsonl"
    app = typer.Typer()
    app.command()(label)
    app.command("other")(lambda: None)
    args = ["label", "-i", str(pool), "-o", str(output), "--batch-api", "--batch-poll", "0.02", "--no-progress"]
    provider.polls_until_done = 2
    first = CliRunner().invoke(app, [*args, "--no-batch-wait"])
    assert first.exit_code == 0, first.output
    assert "still running" in first.output and len(provider.created()) == 1
    second = CliRunner().invoke(app, [*args, "--no-batch-wait"])  # the annotator job ends: the judge job goes out
    assert second.exit_code == 0 and len(provider.created()) == 2 and "still running" in second.output
    third = CliRunner().invoke(app, args)
    assert third.exit_code == 0, third.output
    assert len(provider.created()) == 2
    assert sorted(row["source_id"] for row in read_output(output)) == sorted(ids)
