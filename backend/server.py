"""Running the backend under gunicorn, from `prelabel serve` or the Dockerfile (backend._wsgi:app)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import requests
from gunicorn.app.base import BaseApplication

ROOT = Path(__file__).resolve().parent.parent


class RunningBackend(NamedTuple):
    url: str
    pid: int  # the gunicorn master; its workers are its children


class BackendStartError(RuntimeError):
    """`prelabel serve` exited or did not answer /health in time; the message ends with its log."""


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from backend._wsgi import app

        return app


def run_gunicorn(host: str, port: int, workers: int = 1, threads: int = 8) -> None:
    _Gunicorn(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            # A worker holds no more connections than it has threads, so a request goes to a worker with a
            # free thread instead of queuing behind a busy one's long /predict while another idles. Without
            # spare connections keep-alive has nothing to hold them in: it is off.
            "worker_connections": threads,
            "keepalive": 0,
            # Longer than the predict deadline (85 s by default), shorter than nothing Label Studio waits for.
            "timeout": 120,
            "graceful_timeout": 10,
            "accesslog": "-",
            # The worker's pid on each line: with several workers, it tells which process answered.
            "access_log_format": '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms worker=%(p)s',
        }
    ).run()


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
            [sys.executable, "-m", "scripts.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--threads", str(threads)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
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
                raise error(f"the prelabel backend did not answer /health within {timeout:.0f} s:\n"
                            f"{log_tail(log_path)}")
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
