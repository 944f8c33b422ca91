"""The store under MODEL_DIR when the machine or the disk misbehaves: a writer paused by SIGSTOP (as a sampling
profiler does) delays a run and never fails an item; a full, read-only or broken MODEL_DIR keeps every answer a
provider was paid for and stops further paid calls with one message naming the store's path."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.integration.test_bulk import SUMMARY, read_output, write_pool


def cli(log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`prelabel label` in its own process, its output in a file (a full pipe would block it)."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "prelabel.scripts.label", *args, "--no-progress"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


class Pauser(threading.Thread):
    """SIGSTOP / SIGCONT a process over and over, as a sampling profiler does: stopped 100-200 ms, then running
    20-60 ms, until it ends."""

    def __init__(self, process: subprocess.Popen[bytes], seed: int = 7):
        super().__init__(daemon=True)
        self.process = process
        self.rng = random.Random(seed)
        self.pauses = 0
        self.halt = threading.Event()
        self.stop_s, self.run_s = (0.1, 0.2), (0.02, 0.06)

    def run(self) -> None:
        try:
            while not self.halt.is_set() and self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGSTOP)
                self.pauses += 1
                time.sleep(self.rng.uniform(*self.stop_s))
                os.kill(self.process.pid, signal.SIGCONT)
                time.sleep(self.rng.uniform(*self.run_s))
        except ProcessLookupError:
            pass
        finally:
            try:
                os.kill(self.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def failures(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{row['source_id']}: {row['error']}" for row in rows if row["error"] is not None]


# A second process writing to the same store all along: cache entries and usage rows from 8 threads until the
# file `stop` exists; prints how many writes it made and every error.
OTHER_WRITER = """
import sys, threading, time, uuid
from pathlib import Path
from prelabel.providers import Completion
from prelabel.store import Store
store, stop, errors, writes = Store(Path(sys.argv[1])), Path(sys.argv[2]), [], [0]
def work():
    while not stop.exists():
        key, answer = uuid.uuid4().hex, Completion(text="x" * 200)
        try:
            store.save_completion(key, "openai", "m", answer)
            store.log_call(role="annotator", provider="openai", model="m", key=key, completion=answer)
            writes[0] += 1
        except Exception as error:
            errors.append(repr(error))
        time.sleep(0.002)  # a busy neighbour, not one that takes both cores
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print("writes", writes[0], "errors", len(errors), errors[:3], "fault", store.fault, flush=True)
"""


def test_a_paused_writer_delays_the_run_and_fails_no_item(make_settings, provider, dialogsum, tmp_path):
    provider.latency = 0.0
    settings = make_settings(PRELABEL_TIMEOUT="30")
    pool = tmp_path / "pool.jsonl"
    ids = write_pool(pool, dialogsum, 2000)
    output, log, stop = tmp_path / "out.jsonl", tmp_path / "cli.log", tmp_path / "stop"
    settings.store_path.parent.mkdir(parents=True)
    from prelabel.store import Store

    Store(settings.store_path)  # the schema first, so the other writer starts writing at once

    started = time.monotonic()
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_WRITER, str(settings.store_path), str(stop)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    paused = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "256")
    pauser = Pauser(paused)
    pauser.start()
    try:
        paused_rc = paused.wait(timeout=300)
    finally:
        pauser.halt.set()
        pauser.join(timeout=5)
        stop.touch()
        if paused.poll() is None:
            paused.kill()
            paused.wait()
        other_out, _ = other.communicate(timeout=60)
    elapsed = time.monotonic() - started

    rows = read_output(output)
    assert failures(rows) == [], log.read_text()[-3000:]
    assert paused_rc == 0, log.read_text()[-3000:]
    assert sorted(row["source_id"] for row in rows) == sorted(ids)  # every line labeled, none twice
    assert all(row["label"] and row["rating"] == "good" for row in rows)
    writes = int(other_out.split()[1])
    assert other.returncode == 0 and writes > 0 and " errors 0 [] fault None" in other_out, other_out
    assert pauser.pauses >= 20, f"paused only {pauser.pauses} times in {elapsed:.1f} s"
    print(f"paused {pauser.pauses} times; {elapsed:.1f} s; the other process wrote {writes} times")


# -- a full, read-only or unusable MODEL_DIR ---------------------------------------------------------------


def _can_mount() -> str | None:
    """Why tmpfs mounts cannot be made here (None when they can): they need root (CI runs as root)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None:
        return "no mount(8) on this machine"
    return None


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path`, unmounted afterwards whatever happens."""
    reason = _can_mount()
    if reason is not None:
        pytest.skip(reason)
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(path)], capture_output=True)
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)  # a process still has a file open


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file in `directory` until its file system is full; returns it (delete it to free the space).
    Unbuffered writes, so nothing is left to flush (and fail) on close; a disk already full fails the first one."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    try:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as error:  # already full (the store filled it): nothing to write, nothing to free
        assert error.errno == errno.ENOSPC, error
        return filler
    try:
        while True:
            os.write(fd, chunk)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    finally:
        os.close(fd)
    return filler


def tasks_of(dialogsum: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"item-{index}", "data": {"dialogue": dialogsum[index % len(dialogsum)]["dialogue"] + f" ({index})"}}
        for index in range(count)
    ]


class StopWatch(threading.Thread):
    """Notes how many provider calls had arrived when the engine first gave a stop reason."""

    def __init__(self, engine: Any, provider: Any):
        super().__init__(daemon=True)
        self.engine, self.provider = engine, provider
        self.calls_at_stop: int | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and self.calls_at_stop is None:
            if self.engine.stop_reason is not None:
                self.calls_at_stop = self.provider.count
            time.sleep(0.0005)


def test_a_disk_full_mid_run_keeps_every_paid_answer_and_stops_paid_calls(make_settings, provider, dialogsum, tmp_path):
    from prelabel.engine import build_engine, close_engine

    concurrency = 8
    with tmpfs(tmp_path / "disk", "8m") as disk:
        settings = make_settings(MODEL_DIR=str(disk / "model_dir"))
        store_path = settings.store_path
        tasks = tasks_of(dialogsum, 300)
        engine = build_engine(settings)
        labeler = engine.labeler(SUMMARY)
        watch = StopWatch(engine, provider)
        watch.start()
        filled: list[Path] = []

        def fill_when_busy() -> None:
            provider.wait_for(60, timeout=60)
            filled.append(fill(disk))

        filler = threading.Thread(target=fill_when_busy)
        filler.start()
        try:
            with ThreadPoolExecutor(concurrency) as pool:
                outcomes = list(pool.map(labeler.label_task, tasks))
        finally:
            filler.join()
            watch.halt.set()
            watch.join()
            close_engine(engine)

        reason = engine.stop_reason
        assert reason is not None and str(store_path) in reason and "database or disk is full" in reason, reason
        assert engine.store.fault == reason
        # No paid call after the stop beyond those already in flight.
        assert watch.calls_at_stop is not None
        assert provider.count - watch.calls_at_stop <= concurrency
        # Every paid answer is in an outcome: each annotator answer is a label, each judge answer a rating.
        requests = provider.requests
        annotator_calls = sum(request.provider == "openai" for request in requests)
        judge_calls = sum(request.provider == "anthropic" for request in requests)
        labeled = [outcome for outcome in outcomes if outcome.label]
        assert len(labeled) == annotator_calls and sum(o.verdict is not None for o in outcomes) == judge_calls
        stopped = [outcome for outcome in outcomes if not outcome.label]
        assert stopped and all(f"the run stopped: {reason}" in outcome.error for outcome in stopped)
        assert all(outcome.error is None or "the run stopped" in outcome.error for outcome in outcomes)

        # Space freed: a new run labels what is left, and answers again only what was never cached.
        filled[0].unlink(missing_ok=True)
        calls_before = provider.count
        engine = build_engine(make_settings(MODEL_DIR=str(disk / "model_dir")))
        try:
            again = [engine.labeler(SUMMARY).label_task(task) for task in tasks]
        finally:
            close_engine(engine)
        assert engine.stop_reason is None
        assert all(outcome.label and outcome.verdict is not None for outcome in again)
        assert provider.count - calls_before < 2 * len(tasks)  # the cached answers were not bought again


def test_a_read_only_model_dir_is_refused_before_any_paid_call(make_settings, provider, dialogsum, tmp_path):
    from prelabel.engine import build_engine
    from prelabel.faults import StoreUnavailable

    with tmpfs(tmp_path / "disk", "4m") as disk:
        settings = make_settings(MODEL_DIR=str(disk / "model_dir"))
        pool = tmp_path / "pool.jsonl"
        ids = write_pool(pool, dialogsum, 20)
        output, log = tmp_path / "out.jsonl", tmp_path / "cli.log"
        wide = {"COLUMNS": "400"}  # one message, one line
        assert cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "4", env=wide).wait(timeout=120) == 0
        assert provider.count == 40
        (disk / "model_dir" / "prelabel.sqlite3").unlink()  # a fresh store must be created...
        remount(disk, "ro")  # ...on a file system now read-only
        with pytest.raises(StoreUnavailable) as refused:
            build_engine(settings)
        assert str(refused.value).startswith(f"MODEL_DIR {settings.store_path}: cannot write the store: ")

        other = tmp_path / "other.jsonl"
        log.write_text("")
        process = cli(log, "-i", str(pool), "-o", str(other), "--concurrency", "4", env=wide)
        assert process.wait(timeout=120) == 2, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text and f"MODEL_DIR {settings.store_path}: cannot write the store: " in text
        assert len(text.strip().splitlines()) == 1, text  # one line, no traceback
        assert provider.count == 40  # refused before any paid call
        assert not other.exists() or other.read_text() == ""

        remount(disk, "rw")  # fixed: the same command runs
        assert cli(log, "-i", str(pool), "-o", str(other), "--concurrency", "4", env=wide).wait(timeout=120) == 0
        assert sorted(row["source_id"] for row in read_output(other)) == sorted(ids)


def test_a_model_dir_that_cannot_be_created_is_one_line_before_any_paid_call(make_settings, provider, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = make_settings(MODEL_DIR=str(blocker / "model_dir"))
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"id": "a", "dialogue": "#Person1#: Hello."}) + "\n")
    log = tmp_path / "cli.log"
    process = cli(log, "-i", str(pool), "-o", str(tmp_path / "out.jsonl"), env={"COLUMNS": "400"})
    assert process.wait(timeout=120) == 2, log.read_text()
    text = log.read_text()
    assert text.strip() == f"MODEL_DIR {settings.store_path}: cannot write the store: Not a directory", text
    assert provider.count == 0


def test_the_cli_on_a_disk_that_fills_mid_run_loses_no_item_and_a_rerun_finishes(
    make_settings, provider, dialogsum, tmp_path
):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        settings = make_settings(MODEL_DIR=str(disk / "model_dir"))
        provider.latency = 0.01
        pool = tmp_path / "pool.jsonl"
        ids = write_pool(pool, dialogsum, 600)
        output, log = tmp_path / "out.jsonl", tmp_path / "cli.log"
        process = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "16", env={"COLUMNS": "400"})
        try:
            assert provider.wait_for(100, timeout=120), log.read_text()
            filler = fill(disk)
            rc = process.wait(timeout=240)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        rows = read_output(output)
        written = [row["source_id"] for row in rows]
        assert len(written) == len(set(written)) and set(written) < set(ids), log.read_text()[-3000:]
        assert rc == 1, log.read_text()[-3000:]  # the run says it did not finish
        text = " ".join(log.read_text().split())
        message = f"MODEL_DIR {settings.store_path}: cannot write the store: database or disk is full"
        assert f"stopped: {message}" in text and "not done" in text
        # Every paid annotator answer is in the output: a label the provider was paid for is never dropped.
        annotator_calls = sum(request.provider == "openai" for request in provider.requests)
        labeled = [row for row in rows if row["label"]]
        assert len(labeled) == annotator_calls
        # An item a worker had taken up when the stop came was not sent: failed, "not attempted", tried again.
        assert all("not attempted: the run stopped" in row["error"] for row in rows if not row["label"])
        # Items whose judge was not asked after the stop say why; the rerun rates them.
        unrated = [row for row in rows if row["unrated_reason"]]
        assert all(message in row["unrated_reason"] for row in unrated)

        filler.unlink(missing_ok=True)  # space freed: the rerun finishes every item, each once
        again = cli(log, "-i", str(pool), "-o", str(output), "--concurrency", "16")
        assert again.wait(timeout=240) == 0, log.read_text()[-3000:]
        rows = read_output(output)
        assert sorted(row["source_id"] for row in rows) == sorted(ids)
        assert all(row["error"] is None and row["label"] for row in rows)
