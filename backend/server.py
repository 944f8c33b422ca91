"""Serving the backend from `prelabel serve` or the Dockerfile: Hypercorn (asyncio) in front of the Flask app.

Why not gunicorn's threads: a thread there reads the request itself, so a client that sends headers and part of a
body and stalls holds one of a handful of threads, and a few dozen such clients starve /health and /predict. Here
the event loop reads every request whole, under deadlines, before any thread sees it:

- headers must arrive within PRELABEL_READ_TIMEOUT of the connection opening (or of the previous answer on a
  kept-alive connection): Hypercorn's idle timeout, which only a complete request head stops;
- the body must arrive within PRELABEL_READ_TIMEOUT of the headers, else a 408 and the connection is closed;
- a body over the path's limit is not read: the app answers 413 from its Content-Length;
- only then does the Flask app run, in a thread pool of `threads` for /predict and one of its own for the light
  endpoints, so /health, /setup and /webhook never queue behind long /predict calls.

There is no server-side limit on how long the app may take to answer: /predict stops itself at
PRELABEL_PREDICT_DEADLINE (85 s by default, inside Label Studio's 100 s). The access log names the worker's pid.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(Uq)s HTTP/%(H)s" %(s)s %(b)s %(L)ss worker=%(p)s'
LIGHT_THREADS = 4  # /health, /setup, /webhook, /metrics: short calls, kept apart from /predict's long ones
GRACEFUL_TIMEOUT = 10.0

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class BufferedWSGI:
    """An ASGI app that reads a request whole, within `read_timeout` and `max_body(path)` bytes, then runs the
    WSGI app in a thread and sends its answer. Flask keeps its synchronous code; the loop holds the sockets."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        *,
        threads: int,
        read_timeout: float,
        max_body: Callable[[str], int],
        slow_paths: frozenset[str] = frozenset({"/predict"}),
    ):
        self.app = app
        self.threads = threads
        self.read_timeout = read_timeout
        self.max_body = max_body
        self.slow_paths = slow_paths
        self._pools: dict[str, ThreadPoolExecutor] = {}

    def pool(self, path: str) -> ThreadPoolExecutor:
        kind = "slow" if path in self.slow_paths else "light"
        if kind not in self._pools:
            size = self.threads if kind == "slow" else max(LIGHT_THREADS, 1)
            self._pools[kind] = ThreadPoolExecutor(size, thread_name_prefix=f"prelabel-{kind}")
        return self._pools[kind]

    def shutdown(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # websocket: not spoken; returning closes it

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name.decode("latin1").lower(): value.decode("latin1") for name, value in scope["headers"]}
        limit = self.max_body(scope["path"])
        declared = headers.get("content-length")
        body = b""
        if not (declared and declared.isdigit() and int(declared) > limit):  # an oversized body is never read
            try:
                body = await asyncio.wait_for(_read_body(receive, limit), self.read_timeout)
            except TimeoutError:
                await _send_error(send, 408, f"request body not received within {self.read_timeout:g} s")
                return
            except ConnectionError:
                return  # the client went away while sending
        environ = wsgi_environ(scope, headers, body)
        loop = asyncio.get_running_loop()
        status, response_headers, content = await loop.run_in_executor(
            self.pool(scope["path"]), _call_wsgi, self.app, environ
        )
        await send(
            {
                "type": "http.response.start",
                "status": int(status.split(" ", 1)[0]),
                "headers": [(name.encode("latin1"), value.encode("latin1")) for name, value in response_headers],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body, cut at `limit` + 1 bytes (the app then sees it is too large and answers 413)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or not message.get("more_body"):
            return b"".join(chunks)[: limit + 1]


async def _send_error(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps({"status": "error", "error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_environ(scope: Scope, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """PEP 3333's environ for an ASGI HTTP scope and its buffered body."""
    server = scope.get("server") or ("localhost", 80)
    root = scope.get("root_path", "")
    path = scope["path"][len(root) :] if scope["path"].startswith(root) else scope["path"]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.encode("utf8").decode("latin1"),
        "PATH_INFO": (path or "/").encode("utf8").decode("latin1"),
        "QUERY_STRING": scope["query_string"].decode("latin1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        # The whole body is here: Werkzeug may read to its end even without a Content-Length.
        "wsgi.input_terminated": True,
    }
    if scope.get("client"):
        environ["REMOTE_ADDR"] = scope["client"][0]
    for name, value in scope["headers"]:
        key = name.decode("latin1").upper().replace("-", "_")
        key = key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else f"HTTP_{key}"
        text = value.decode("latin1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    if "CONTENT_LENGTH" not in environ and body:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def _call_wsgi(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, list[Any], bytes]:
    """Run the WSGI app to the end of its answer (in a worker thread)."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Callable[[bytes], None]:
        started["status"], started["headers"] = status, headers
        return lambda data: None  # the legacy write() callable: Flask does not use it

    result = app(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return started["status"], started["headers"], content


def asgi_app(threads: int = 8) -> BufferedWSGI:
    """The backend as the server runs it, built in each worker process from the environment's settings."""
    from prelabel.app import body_limit, create_app
    from prelabel.settings import Settings

    settings = Settings()
    ours = logging.getLogger("prelabel")
    if not ours.handlers and not logging.getLogger().handlers:  # not started by `prelabel serve`
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"))
        ours.addHandler(handler)
        ours.setLevel(settings.log_level.upper())
    return BufferedWSGI(
        create_app(settings),
        threads=threads,
        read_timeout=settings.prelabel_read_timeout,
        max_body=lambda path: body_limit(settings, path),
    )


def server_config(host: str, port: int, workers: int, threads: int) -> Any:
    from hypercorn.config import Config

    from prelabel.settings import Settings

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.application_path = f"prelabel.server:asgi_app(threads={int(threads)})"
    # Above 1, each worker gets a socket of its own on the port (SO_REUSEPORT), so the kernel spreads new
    # connections over the workers; on one shared socket the first loop to wake would take every waiting one.
    config.workers = workers
    config.accesslog = "-"
    config.access_log_format = ACCESS_LOG_FORMAT
    config.errorlog = "-"
    # Until a request's head is complete the connection counts as idle, so this is also the headers' deadline.
    config.keep_alive_timeout = Settings().prelabel_read_timeout
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.backlog = 2048
    config.alpn_protocols = ["http/1.1"]
    return config


def run_server(host: str, port: int, workers: int = 1, threads: int = 8) -> None:
    """Serve until SIGINT or SIGTERM: one worker in this process, or `workers` processes, each replaced if it
    dies."""
    from hypercorn.asyncio.run import asyncio_worker

    config = server_config(host, port, workers, threads)
    if workers <= 1:
        asyncio_worker(config)  # stops on SIGINT / SIGTERM by itself
        return
    _supervise(config, workers)


def _supervise(config: Any, workers: int) -> None:
    import multiprocessing
    import signal
    from multiprocessing.connection import wait

    from hypercorn.asyncio.run import asyncio_worker

    # Forked, as gunicorn's workers were: they start at once with the modules this process has loaded.
    import prelabel.app  # noqa: F401

    context = multiprocessing.get_context("fork")
    stop = context.Event()
    sockets = [config.create_sockets() for _ in range(workers)]
    for group in sockets:
        for sock in group.insecure_sockets:
            # Listening now, not when the worker's loop starts: a connection the kernel gives to a worker that is
            # still importing waits in its queue instead of every early one going to the first worker up.
            sock.listen(config.backlog)

    def start(index: int) -> Any:
        process = context.Process(
            target=asyncio_worker,
            kwargs={"config": config, "sockets": sockets[index], "shutdown_event": stop},
            name=f"prelabel-worker-{index}",
        )
        process.start()
        return process

    # Workers ignore Ctrl-C (they inherit the ignored signal): this process tells them to stop.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes = [start(index) for index in range(workers)]
    signal.signal(signal.SIGINT, previous)
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), lambda *_: stop.set())
    log = logging.getLogger("prelabel")
    try:
        while not stop.is_set():
            wait([process.sentinel for process in processes], timeout=1.0)
            for index, process in enumerate(processes):
                if process.exitcode is not None and not stop.wait(0.2):  # a stop signal may be on its way
                    log.warning("backend worker %s exited (%s); starting another", process.pid, process.exitcode)
                    processes[index] = start(index)
    finally:
        stop.set()
        for process in processes:
            process.join(GRACEFUL_TIMEOUT + 5)
            if process.is_alive():
                process.terminate()
        for group in sockets:
            for sock in group.insecure_sockets:
                sock.close()
