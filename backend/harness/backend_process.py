"""`prelabel serve` in a background process for the demo, the load test and the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import requests


class RunningBackend(NamedTuple):
    url: str
    pid: int  # the gunicorn master; its workers are its children


class BackendStartError(RuntimeError):
    """`prelabel serve` exited or did not answer /health in time; the message ends with its log."""


@contextmanager
def serve_in_background(
    port: int,
    env: dict[str, str],
    log_path: Path,
    *,
    workers: int = 1,
    threads: int = 8,
    timeout: float = 60.0,
    error: Callable[[str], Exception] = BackendStartError,
) -> Iterator[RunningBackend]:
    """`prelabel serve` on 127.0.0.1:`port` in its own process group with exactly `env`, its log in `log_path`;
    yields its URL and pid once /health answers, and stops the whole group (master and workers) on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prelabel",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise error(f"the prelabel backend exited ({process.returncode}):\n{log_tail(log_path)}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise error(
                    f"the prelabel backend did not answer /health within {timeout:.0f} s:\n{log_tail(log_path)}"
                )
            time.sleep(0.2)
        yield RunningBackend(url, process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
