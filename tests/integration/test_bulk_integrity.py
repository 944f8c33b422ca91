"""`prelabel label` keeps its output honest: a file that is not prelabel's is refused untouched, one run holds
an output at a time, every item read is accounted for, a failing output stops the spending, reruns finish the
pool (items a passing judge failure left unrated are rated again), and a changed model_version is said plainly.

Real processes, real signals, a real full filesystem (a tiny tmpfs, as root) and real HTTP to the fake
providers; the store's fault (MODEL_DIR full or read-only) is the attribute the store itself sets."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from prelabel.engine import build_engine, close_engine
from prelabel.labeling.live import BulkSummary, Progress, label_file
from prelabel.labeling.output import BulkRecord, lock_path_for
from prelabel.records import ReviewedTask
from prelabel.review_stats import write_corrections_jsonl
from prelabel.scripts.label import exit_code, label
from prelabel.testing import FakeRequest
from tests.conftest import ROOT, ScriptedLLM
from tests.integration.test_bulk import CONFIG_PATH, SUMMARY, cli, count_lines, read_output, write_pool

WIDE = {"COLUMNS": "400"}  # rich wraps at 80 columns off a terminal; a wrapped path would not match


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in WIDE.items():
        monkeypatch.setenv(key, value)


def invoke(*args: str) -> Any:
    app = typer.Typer()
    app.command()(label)
    app.command("other")(lambda: None)  # two commands, so `label` is a subcommand as in the real CLI
    return CliRunner().invoke(app, ["label", *args, "-c", str(CONFIG_PATH), "--no-progress"], env=WIDE)


def flat(text: str) -> str:
    return " ".join(text.split())


def accounted(summary: BulkSummary) -> bool:
    return summary.seen == summary.labeled + summary.failed + summary.not_done


def annotator_requests(provider: Any) -> list[Any]:
    return [r for r in provider.requests if r.provider == "openai"]


def judge_requests(provider: Any) -> list[Any]:
    return [r for r in provider.requests if r.provider == "anthropic"]


def prompt_of(request: Any) -> str:
    return json.dumps(request.body.get("messages"), sort_keys=True)


# -- 1. the output file is prelabel's alone ------------------------------------------------------------------


def _pool(path: Path, dialogsum: list[dict[str, Any]]) -> None:
    write_pool(path, dialogsum, 3)


def _other_pool(path: Path, dialogsum: list[dict[str, Any]]) -> None:
    # A pool whose records even carry source_id and model_version keys.
    rows = [
        {"source_id": f"x-{n}", "model_version": "v1", "dialogue": d["dialogue"]} for n, d in enumerate(dialogsum[:3])
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _corrections(path: Path, dialogsum: list[dict[str, Any]]) -> None:
    task = ReviewedTask(
        task_id=1,
        source_id="item-0",
        input_text="A: hi",
        llm_label="x",
        model_version="v",
        human_label="y",
        annotation_id=7,
    )
    assert write_corrections_jsonl([task], path) == 1


def _csv(path: Path, dialogsum: list[dict[str, Any]]) -> None:
    path.write_text('id,dialogue\n1,"#Person1#: Hi."\n', encoding="utf-8")


def _one_line_without_newline(path: Path, dialogsum: list[dict[str, Any]]) -> None:
    # Starts as prelabel's lines do, but is a whole record of another kind: not a cut line to remove.
    path.write_text(json.dumps({"source_id": "a", "dialogue": "#Person1#: Hi."}), encoding="utf-8")


@pytest.mark.parametrize("make", [_pool, _other_pool, _corrections, _csv, _one_line_without_newline])
def test_an_output_that_is_not_prelabels_is_refused_and_left_byte_for_byte(
    make, make_settings, provider, dialogsum, tmp_path
):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 4)
    target = tmp_path / f"precious-{make.__name__.strip('_')}.jsonl"
    make(target, dialogsum)
    before = target.read_bytes()

    result = invoke("-i", str(pool), "-o", str(target))
    assert result.exit_code == 2, result.output
    assert f"{target} is not a prelabel output (line 1" in flat(result.output)
    assert target.read_bytes() == before  # today it is emptied and relabeled into, exit code 0
    assert provider.count == 0 and not lock_path_for(target).exists()


def test_an_empty_output_or_one_of_prelabels_records_with_a_cut_line_is_used(
    make_settings, provider, dialogsum, tmp_path
):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 3)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert invoke("-i", str(pool), "-o", str(empty)).exit_code == 0
    assert sorted(row["source_id"] for row in read_output(empty)) == sorted(ids)
    # A kill in the middle of the first write leaves only the start of a record: still prelabel's.
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b'{"sou')
    assert invoke("-i", str(pool), "-o", str(cut)).exit_code == 0
    assert sorted(row["source_id"] for row in read_output(cut)) == sorted(ids)


def test_the_input_named_as_output_is_refused_under_any_name(make_settings, provider, dialogsum, tmp_path):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 3)
    before = pool.read_bytes()
    hard = tmp_path / "labeled.jsonl"
    os.link(pool, hard)
    soft = tmp_path / "also.jsonl"
    soft.symlink_to(pool)
    for name in (pool, hard, soft):
        result = invoke("-i", str(pool), "-o", str(name))
        assert result.exit_code == 2, result.output
        assert f"--output {name} is the input file {pool}" in flat(result.output)
    assert pool.read_bytes() == before and provider.count == 0


def test_a_second_run_on_one_output_is_refused_at_once_naming_the_first_and_a_killed_run_leaves_no_lock(
    make_settings, provider, dialogsum, tmp_path
):
    provider.latency = 0.1
    make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 60)
    output, log_a, log_b = tmp_path / "out.jsonl", tmp_path / "a.log", tmp_path / "b.log"
    first = cli(log_a, "-i", str(pool), "-o", str(output), "--concurrency", "2")
    deadline = time.monotonic() + 120
    while count_lines(output) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first.poll() is None, log_a.read_text()

    started = time.monotonic()
    second = cli(log_b, "-i", str(pool), "-o", str(output), "--concurrency", "2")
    assert second.wait(timeout=60) == 2, log_b.read_text()
    text = flat(log_b.read_text())
    assert (
        f"{output} is being written by another prelabel run (pid {first.pid} on {socket.gethostname()}, started" in text
    )
    assert time.monotonic() - started < 30 and first.poll() is None  # refused at once; the first goes on

    first.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock with the process
    first.wait(timeout=30)
    third = cli(log_b, "-i", str(pool), "-o", str(output), "--concurrency", "8")
    assert third.wait(timeout=300) == 0, log_b.read_text()
    source_ids = [row["source_id"] for row in read_output(output)]
    assert sorted(source_ids) == sorted(ids)  # every line whole, none twice: the runs never interleaved
    assert not lock_path_for(output).exists()  # a run that ends removes its lock file


# -- every item read is accounted for ------------------------------------------------------------------------


def test_odd_ids_are_written_as_valid_utf8_and_a_rerun_finds_them(make_settings, provider, dialogsum, tmp_path):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 2)
    with pool.open("a", encoding="utf-8") as handle:
        # JSON allows a lone surrogate in a string; it has no UTF-8 form.
        handle.write('{"id": "\\ud800", "dialogue": "#Person1#: Odd id."}\n')
        handle.write('{"id": "caf\\u00e9 \\udcff", "dialogue": "#Person1#: Odder id."}\n')
    output = tmp_path / "out.jsonl"
    result = invoke("-i", str(pool), "-o", str(output))
    assert result.exit_code == 0, result.output
    text = output.read_bytes().decode("utf-8")  # strict: the whole file is valid UTF-8
    rows = [json.loads(line) for line in text.splitlines()]
    assert sorted(row["source_id"] for row in rows) == sorted(["item-0", "item-1", "\ud800", "caf\u00e9 \udcff"])
    assert all(row["error"] is None and row["rating"] == "good" for row in rows)

    calls = provider.count
    again = invoke("-i", str(pool), "-o", str(output))
    assert again.exit_code == 0, again.output  # nothing left: the odd ids were found as done
    assert provider.count == calls and output.read_bytes().decode("utf-8") == text


def test_a_progress_display_that_raises_is_the_runs_problem_and_no_item_vanishes(
    make_settings, provider, dialogsum, tmp_path
):
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 12)
    calls: list[Progress] = []

    def display(snapshot: Progress) -> None:
        calls.append(snapshot)
        if len(calls) == 3:
            raise RuntimeError("the terminal went away")

    output = tmp_path / "out.jsonl"
    summary = label_file(settings, SUMMARY, pool, output, concurrency=4, on_progress=display)
    assert sorted(row["source_id"] for row in read_output(output)) == sorted(ids)
    assert summary.labeled == 12 and summary.failed == 0 and accounted(summary) and summary.input_finished
    assert summary.problems == ["the progress display failed: RuntimeError: the terminal went away"]
    assert len(calls) == 3  # not called again after it failed
    assert exit_code(summary) == 1


# -- 2. faults stop the spending -----------------------------------------------------------------------------


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} failed here ({done.stderr.strip()}): a full filesystem needs it")


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 64 KiB tmpfs, filled but for two pages: room for the lock file and about ten output lines."""
    if os.geteuid() != 0:
        pytest.skip("a full filesystem is a tmpfs mounted with a size, which needs root (CI runs as root)")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point))
    try:
        filler = mount_point / "filler"
        filler.write_bytes(b"\0" * (14 * 4096))
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_under_the_output_stops_the_spending_and_a_rerun_finishes_the_pool(
    make_settings, provider, dialogsum, tmp_path, tiny_tmpfs
):
    provider.latency = 0.05
    make_settings()  # MODEL_DIR (the cache) on the roomy disk: only the output runs out of space
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 120)
    output, log = tiny_tmpfs / "out.jsonl", tmp_path / "cli.log"
    concurrency = 4

    process = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", str(concurrency))
    assert process.wait(timeout=300) == 1, log.read_text()
    text = flat(log.read_text())
    assert f"stopped: {output}: No space left on device" in text, text
    assert text.count("stopped:") == 1 and "Traceback" not in text
    rows = read_output(output)  # every line kept is whole: a half-written one was cut back
    kept = len(rows)
    assert 0 < kept < 30
    assert all(row["error"] is None and row["rating"] == "good" for row in rows)
    # No paid call after the stop beyond the items already in flight (without the stop: 240 calls).
    first_annotator = [r for r in annotator_requests(provider) if r.status == 200]
    first_judge = [r for r in judge_requests(provider) if r.status == 200]
    assert len(annotator_requests(provider)) <= kept + concurrency, text
    assert len(judge_requests(provider)) <= kept + concurrency, text
    assert "finished, but its line could not be written" in text and "rerun the same command" in text

    # Space back: the rerun finishes the pool and never pays again for an answer it already has.
    (tiny_tmpfs / "filler").unlink()
    provider.reset()
    rerun = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", str(concurrency))
    assert rerun.wait(timeout=300) == 0, log.read_text()
    rows = read_output(output)
    assert sorted(row["source_id"] for row in rows) == sorted(ids)  # every source id exactly once
    assert all(row["error"] is None and row["rating"] == "good" for row in rows)
    paid_before = {prompt_of(r) for r in first_annotator} | {prompt_of(r) for r in first_judge}
    asked_again = {prompt_of(r) for r in provider.requests} & paid_before
    assert not asked_again
    assert len(annotator_requests(provider)) == len(ids) - len(first_annotator)


def cli_with_file_size_limit(log: Path, limit: int, *args: str) -> subprocess.Popen[bytes]:
    """The real command in a process that may not grow any file past `limit` bytes: a write beyond it fails
    with EFBIG (SIGXFSZ ignored, as Python does), the way a quota or a full disk stops a write."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "prelabel.scripts.label", *args, "--no-progress"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_files,
        )


def test_an_output_that_cannot_grow_stops_the_spending_and_a_rerun_finishes_the_pool(
    make_settings, provider, dialogsum, tmp_path
):
    provider.latency = 0.05
    settings = make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 100)
    engine = build_engine(settings)
    version = engine.labeler(SUMMARY).model_version
    close_engine(engine)
    # The output of an earlier run on other items fills it up to 4 KB short of the limit; the cache and the
    # usage log stay far below it (8 MB leaves SQLite's write-ahead log its room).
    limit = 8 * 1024 * 1024
    output, log = tmp_path / "out.jsonl", tmp_path / "cli.log"
    line = BulkRecord(source_id="old-000000", label="x" * 300, rating="good", level=3, model_version=version).line()
    with output.open("wb") as handle:
        for n in range((limit - 4096) // len(line)):
            handle.write(line.replace(b"old-000000", f"old-{n:06d}".encode()))
    filled = output.stat().st_size
    concurrency = 4

    process = cli_with_file_size_limit(log, limit, "-i", str(pool), "-o", str(output), "--concurrency", "4")
    assert process.wait(timeout=300) == 1, log.read_text()
    text = flat(log.read_text())
    assert f"stopped: {output}: File too large" in text, text
    assert text.count(f"stopped: {output}") == 1 and "Traceback" not in text
    new_rows = read_output(output)[filled // len(line) :]  # every line whole: a half-written one was cut back
    assert output.stat().st_size <= limit and 0 < len(new_rows) < 20
    kept = len(new_rows)
    answered = [r for r in provider.requests if r.status == 200]
    assert len(annotator_requests(provider)) <= kept + concurrency, text
    assert len(judge_requests(provider)) <= kept + concurrency, text

    provider.reset()
    rerun = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "4")
    assert rerun.wait(timeout=300) == 0, log.read_text()
    rows = [row for row in read_output(output) if not row["source_id"].startswith("old-")]
    assert sorted(row["source_id"] for row in rows) == sorted(ids)  # every source id exactly once
    assert all(row["error"] is None and row["rating"] == "good" for row in rows)
    assert not {prompt_of(r) for r in provider.requests} & {prompt_of(r) for r in answered}  # none paid twice


def test_a_read_only_output_is_refused_before_any_call(make_settings, provider, dialogsum, tmp_path):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 3)
    folder = tmp_path / "results"
    folder.mkdir()
    output = folder / "out.jsonl"
    output.write_bytes(BulkRecord(source_id="item-0", error="task item-0: boom", model_version="v").line())
    before = output.read_bytes()
    if os.geteuid() == 0:  # root ignores permission bits: a read-only bind mount is read-only for root too
        view = tmp_path / "view"
        view.mkdir()
        _mount("--bind", str(folder), str(view))
        try:
            _mount("-o", "remount,bind,ro", str(view))
            result = invoke("-i", str(pool), "-o", str(view / "out.jsonl"))
        finally:
            subprocess.run(["umount", str(view)], check=False)
        named = view / "out.jsonl"
    else:
        folder.chmod(0o555)
        output.chmod(0o444)
        try:
            result = invoke("-i", str(pool), "-o", str(output))
        finally:
            folder.chmod(0o755)
        named = output
    assert result.exit_code == 2, result.output
    assert str(named) in flat(result.output)
    assert provider.count == 0 and output.read_bytes() == before


class FaultAfter:
    """The scripted LLM; after `n` annotator answers the store reports it can no longer write (as a full or
    read-only MODEL_DIR does), through the attribute the store sets."""

    def __init__(self, llm: ScriptedLLM, n: int):
        self.llm, self.n = llm, n
        self.store: Any = None
        self.annotator_calls = 0
        self._lock = threading.Lock()

    def __call__(self, request: FakeRequest) -> Any:
        if not self.llm.is_judge(request):
            with self._lock:
                self.annotator_calls += 1
                if self.annotator_calls == self.n:
                    self.store.fault = "MODEL_DIR/prelabel.db: database or disk is full"
        return self.llm(request)


def test_a_store_fault_stops_the_run_after_the_items_in_flight(make_settings, provider, llm, dialogsum, tmp_path):
    settings = make_settings()
    fault = FaultAfter(llm, n=6)
    provider.responder = fault
    provider.latency = 0.02
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 200)
    output = tmp_path / "out.jsonl"
    engine = build_engine(settings)
    fault.store = engine.store
    try:
        summary = label_file(settings, SUMMARY, pool, output, concurrency=4, engine=engine)
    finally:
        close_engine(engine)
    assert summary.stop_reason == "MODEL_DIR/prelabel.db: database or disk is full"
    assert fault.annotator_calls <= 6 + 4  # the ones in flight, then no paid call
    assert not summary.input_finished and summary.seen < 30  # it stopped reading the pool
    assert accounted(summary) and exit_code(summary) == 1
    rows = read_output(output)
    assert len(rows) == summary.labeled + summary.failed  # every finished item kept
    # Each line is rated, or says the run stopped before its judge (a rerun rates it) or its annotator call.
    stopped = [row for row in rows if "the run stopped: MODEL_DIR" in (row["error"] or row["unrated_reason"] or "")]
    assert stopped and all(row["rating"] == "good" for row in rows if row not in stopped)


# -- 3. reruns finish the pool -------------------------------------------------------------------------------


class JudgeTrouble:
    """The scripted LLM; the judge answers a made-up level for items whose dialogue says "Unratable"."""

    def __init__(self, llm: ScriptedLLM):
        self.llm = llm

    def __call__(self, request: FakeRequest) -> Any:
        if self.llm.is_judge(request) and "Unratable" in request.prompt_text:
            return {"rating": "superb", "reason": "made up."}
        return self.llm(request)


def test_a_rerun_rates_items_a_passing_judge_failure_left_unrated_for_the_judge_call_alone(
    make_settings, provider, llm, dialogsum, tmp_path
):
    settings = make_settings(PRELABEL_MAX_RETRIES="0")
    provider.responder = JudgeTrouble(llm)
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 6)
    with pool.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "unratable", "dialogue": "#Person1#: Unratable."}) + "\n")
    output = tmp_path / "out.jsonl"
    provider.fail_next(3, status=529, provider="anthropic")  # overloaded: three judge calls fail
    first = label_file(settings, SUMMARY, pool, output, concurrency=1)
    rows = {row["source_id"]: row for row in read_output(output)}
    passing = sorted(sid for sid, row in rows.items() if (row["unrated_reason"] or "").startswith("judge call failed"))
    assert len(passing) == 3 and first.unrated == 4
    assert rows["unratable"]["unrated_reason"].startswith("judge answer did not parse twice")
    # The summary counts them and names the commonest reasons (what `label` prints).
    assert first.outcomes.headline() == "3 rated, 4 unrated, 0 failed"
    reasons = dict(first.outcomes.top_unrated())
    assert sum(reasons.values()) == 4 and any(r.startswith("judge call failed") and n == 3 for r, n in reasons.items())

    provider.reset()
    again = label_file(settings, SUMMARY, pool, output, concurrency=1)
    assert again.rerated == 3 and again.labeled == 3 and again.already_done == len(ids) + 1 - 3
    assert annotator_requests(provider) == []  # the labels come from the cache
    assert len(judge_requests(provider)) == 3  # only the judge is asked, only for those three
    rows = {row["source_id"]: row for row in read_output(output)}
    assert sorted(rows) == sorted([*ids, "unratable"])
    assert all(rows[sid]["rating"] == "good" and rows[sid]["unrated_reason"] is None for sid in passing)
    assert rows["unratable"]["rating"] is None and "did not parse twice" in rows["unratable"]["unrated_reason"]


def test_a_changed_model_version_is_refused_by_default_and_relabeled_with_the_flag(
    make_settings, provider, dialogsum, tmp_path, monkeypatch
):
    make_settings()
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 5)
    output = tmp_path / "out.jsonl"
    assert invoke("-i", str(pool), "-o", str(output)).exit_code == 0
    old_version = read_output(output)[0]["model_version"]
    before = output.read_bytes()

    judge = tmp_path / "judge.txt"
    judge.write_text("Rate the summary.\nConversation:\n{input}\nSummary:\n{label}\n", encoding="utf-8")
    monkeypatch.setenv("PRELABEL_JUDGE_PROMPT", str(judge))
    provider.reset()
    refused = invoke("-i", str(pool), "-o", str(output))
    assert refused.exit_code == 2, refused.output
    text = flat(refused.output)
    assert f"{output} holds labels of model_version {old_version!r} (5 lines)" in text
    assert "this run's model_version is '" in text and "--relabel" in text and "new --output" in text
    assert output.read_bytes() == before and provider.count == 0

    relabeled = invoke("-i", str(pool), "-o", str(output), "--relabel")
    assert relabeled.exit_code == 0, relabeled.output
    rows = read_output(output)
    assert sorted(row["source_id"] for row in rows) == sorted(ids)
    new_versions = {row["model_version"] for row in rows}
    assert len(new_versions) == 1 and old_version not in new_versions
    assert flat(relabeled.output).count(f"labeled again (were {old_version})") == 1
    assert annotator_requests(provider) == [] and len(judge_requests(provider)) == 5  # same annotator prompt
