"""The store under MODEL_DIR when the machine or the disk misbehaves: a writer paused by SIGSTOP (as a sampling
profiler does) delays a run and never fails an item; a full, read-only or broken MODEL_DIR keeps every answer a
provider was paid for and stops further paid calls with one message naming the store's path."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.integration.test_bulk import read_output, write_pool


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
