"""Slow clients cannot starve the backend: the real `prelabel serve` process, with fewer /predict threads than
there are stalled connections, still answers /health and /predict at once, and closes the stalled connections
itself at PRELABEL_READ_TIMEOUT."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from prelabel.harness.backend_process import serve_in_background
from prelabel.harness.labelstudio_server import free_port
from tests.conftest import SUMMARY_CONFIG, ls_task

STALLED = 32
READ_TIMEOUT = 3.0  # seconds; the default is longer, this keeps the test short


@pytest.fixture
def backend(make_settings, provider, tmp_path) -> Iterator[str]:
    # Four /predict threads and 32 stalled clients: a server whose threads read requests would be starved.
    make_settings(PRELABEL_READ_TIMEOUT=str(READ_TIMEOUT))
    with serve_in_background(free_port(), dict(os.environ), tmp_path / "serve.log", threads=4) as running:
        yield running.url


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def open_sockets(url: str, count: int) -> Iterator[list[socket.socket]]:
    sockets = [socket.create_connection(address(url), timeout=5) for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def assert_answers_promptly(url: str, dialogue: dict, rounds: int = 3) -> None:
    body = {"tasks": [ls_task(1, dialogue)], "project": "4.1", "label_config": SUMMARY_CONFIG}
    for _ in range(rounds):
        started = time.monotonic()
        assert requests.get(f"{url}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 1.0, "GET /health waited behind stalled clients"
        started = time.monotonic()
        answer = requests.post(f"{url}/predict", json=body, timeout=5)
        assert answer.status_code == 200 and "result" in answer.json()["results"][0]
        assert time.monotonic() - started < 1.0, "POST /predict waited behind stalled clients"


def closed_by_server(sock: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it was still open after `within` s."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def test_clients_that_stall_in_the_body_hold_no_thread_and_are_closed(backend, dialogsum):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    )
    with open_sockets(backend, STALLED) as stalled:
        for sock in stalled:
            sock.sendall(head + b'{"tasks": [{"id": 1, "data": {"dialogue": "A: hi')  # then nothing more
        opened = time.monotonic()
        assert_answers_promptly(backend, dialogsum[0])
        assert time.monotonic() - opened < READ_TIMEOUT, "the checks must run while the clients still stall"
        for sock in stalled:
            answer = closed_by_server(sock, within=READ_TIMEOUT + 5)
            assert answer is not None, "a stalled connection was left open past the read timeout"
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"request body not received within 3 s" in answer
        # Closed by the deadline, not before it.
        assert time.monotonic() - opened >= READ_TIMEOUT - 0.5
    assert_answers_promptly(backend, dialogsum[0], rounds=1)


def test_a_slowloris_on_headers_is_cut_off_while_others_are_served(backend, dialogsum):
    header = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200
    with open_sockets(backend, STALLED) as stalled:
        stop = threading.Event()
        broken: set[int] = set()

        def drip() -> None:
            """One header byte a second on every connection, for as long as the server keeps it open."""
            for position in range(len(header)):
                for index, sock in enumerate(stalled):
                    if index in broken:
                        continue
                    try:
                        sock.send(header[position : position + 1])
                    except OSError:
                        broken.add(index)
                if stop.wait(1.0):
                    return

        dripper = threading.Thread(target=drip, daemon=True)
        opened = time.monotonic()
        dripper.start()
        try:
            time.sleep(0.5)
            assert_answers_promptly(backend, dialogsum[0])
            for sock in stalled:
                # Still dripping, yet cut off: the head must be complete within the read timeout.
                assert closed_by_server(sock, within=READ_TIMEOUT + 5) is not None, "a slowloris kept its connection"
            assert time.monotonic() - opened < READ_TIMEOUT + 5
        finally:
            stop.set()
            dripper.join(timeout=5)
    assert_answers_promptly(backend, dialogsum[0], rounds=1)
