"""A local model build that is killed or stopped leaves nothing behind: no process still compiling, no build
folder in the wheel cache. pip is held on a download from a server that never answers, so the test is quick and
needs no compiler work; the processes, signals and folders are real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prelabel.harness.local_model.runtime import BUILD_GROUP_FILE, clear_stale_builds

BUILD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from prelabel.harness.local_model.runtime import build_llama_wheel\n"
    "build_llama_wheel(Path(sys.executable), Path(sys.argv[1]))\n"
)


@pytest.fixture
def silent_index():
    """A package index that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/simple", held
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def _start_build(tmp_path: Path, index: str) -> tuple[subprocess.Popen[bytes], Path]:
    wheels = tmp_path / "wheels"
    env = dict(
        os.environ,
        PIP_INDEX_URL=index,
        PIP_NO_CACHE_DIR="1",
        PIP_DEFAULT_TIMEOUT="600",
        PIP_RETRIES="0",
        PRELABEL_CACHE_DIR=str(tmp_path / "cache"),
    )
    # The child gets SIGINT and SIGTERM at their defaults, as a terminal would give them.
    child = subprocess.Popen(
        [sys.executable, "-c", BUILD, str(wheels)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return child, wheels


def _group_of_running_build(wheels: Path, held: list, child: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = list(wheels.glob(f".build-*/{BUILD_GROUP_FILE}"))
        if files and files[0].read_text().strip() and held:
            return int(files[0].read_text())
        assert child.poll() is None, "the build ended before pip asked the index"
        time.sleep(0.1)
    raise AssertionError("pip never asked the index")


def _gone(group: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_build_stops_pip_and_removes_its_folder(tmp_path, silent_index, stop):
    index, held = silent_index
    child, wheels = _start_build(tmp_path, index)
    try:
        group = _group_of_running_build(wheels, held, child)
        child.send_signal(stop)
        assert child.wait(timeout=30) != 0
        assert _gone(group), "pip is still running after its build was stopped"
        assert not list(wheels.glob(".build-*")), "the build folder was left in the wheel cache"
    finally:
        child.kill()
        child.wait()


def test_a_killed_build_takes_pip_with_it_and_the_next_build_clears_the_folder(tmp_path, silent_index):
    index, held = silent_index
    child, wheels = _start_build(tmp_path, index)
    try:
        group = _group_of_running_build(wheels, held, child)
        child.kill()  # SIGKILL: no cleanup runs in the builder
        child.wait()
        assert _gone(group), "pip outlived the build that started it"
        stale = list(wheels.glob(".build-*"))
        assert len(stale) == 1  # nothing could remove it yet
        assert clear_stale_builds(wheels) == stale  # what the next build does first, under the install lock
        assert not list(wheels.glob(".build-*"))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
