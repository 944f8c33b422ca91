"""A fake OpenAI / Anthropic provider on asyncio (aiohttp) that keeps thousands of calls in flight, for the
throughput benchmarks: the threaded FakeProvider spends a thread per open connection, this one a coroutine.

    python -m prelabel.testing.async_provider [--port 0] [--latency 1.0 | --ramp 0.2 5 60]
        [--fault-rate 0.01 --faults 429,500,529,timeout]

Prints its root URL on the first line of stdout and serves until stdin closes, SIGTERM or SIGINT. The answers
are those of the threaded fake (one owner: provider_server's default_responder, to_reply and render_reply);
OpenAI at /v1/chat/completions, Anthropic at /v1/messages and /v1/messages/count_tokens.

GET /stats reports what the server itself saw and spent (AsyncProviderStats): calls received and answered,
the peak in flight, the connections seen, and its own CPU seconds (getrusage of this process), so a benchmark
can tell when the fake, not the client, is the limit. POST /stats/reset starts the counts and the latency ramp
again. `AsyncProviderProcess` runs one in a child process and reads its stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from .provider_server import (
    ANTHROPIC,
    MALFORMED,
    MALFORMED_BODY,
    OPENAI,
    TIMEOUT,
    FakeRequest,
    count_tokens_body,
    default_responder,
    error_body,
    render_reply,
    to_reply,
)

if TYPE_CHECKING:
    from aiohttp import web

FAULT_KINDS: tuple[str, ...] = ("429", "500", "529", TIMEOUT)


class LatencySchedule(BaseModel, frozen=True):
    """Seconds each call waits before its answer: `start`, rising linearly to `end` over `ramp_s` seconds after
    the first call (or the last stats reset), then `end`. A fixed latency has start == end."""

    start: float = Field(ge=0)
    end: float = Field(ge=0)
    ramp_s: float = Field(0.0, ge=0)

    @classmethod
    def fixed(cls, seconds: float) -> LatencySchedule:
        return cls(start=seconds, end=seconds)

    def at(self, elapsed: float) -> float:
        if self.ramp_s <= 0 or elapsed >= self.ramp_s:
            return self.end
        return self.start + (self.end - self.start) * max(0.0, elapsed) / self.ramp_s


class FaultPlan(BaseModel, frozen=True):
    """A share of calls answered with a fault: an HTTP status ("429", "500", "529" - 503 for OpenAI, which has
    no 529), "timeout" (the answer comes only after `timeout_delay` seconds) or "malformed" (broken JSON)."""

    rate: float = Field(0.0, ge=0, le=1)
    kinds: tuple[str, ...] = FAULT_KINDS
    timeout_delay: float = Field(120.0, ge=0)
    retry_after: str | None = "0"


class AsyncProviderStats(BaseModel):
    """GET /stats: counts since start or the last POST /stats/reset."""

    received: int  # calls whose request arrived
    served: int  # calls answered (any status)
    in_flight: int
    max_in_flight: int
    statuses: dict[str, int]  # answers by status code
    faults: dict[str, int]  # injected faults by kind (a "timeout" fault answers 200, late)
    connections: int  # distinct client connections (peer ports) seen; keep-alive keeps it near the concurrency
    cpu_s: float  # user + sys of the server process
    wall_s: float
    latency_now_s: float

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.cpu_s / self.served if self.served else 0.0

    @property
    def busy_share(self) -> float:
        """The server's CPU as a share of one core over the wall time (one event loop can use one core)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _State:
    """Counters of one server; all touched from the event loop thread only, so no lock."""

    def __init__(self, schedule: LatencySchedule, faults: FaultPlan, seed: int, api_key: str | None) -> None:
        self.schedule = schedule
        self.faults = faults
        self.api_key = api_key
        self.rng = random.Random(seed)
        self.reset()

    def reset(self) -> None:
        self.received = 0
        self.served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.statuses: Counter[str] = Counter()
        self.fault_counts: Counter[str] = Counter()
        self.peers: set[Any] = set()
        self.cpu0 = _cpu_s()
        self.wall0 = time.monotonic()
        self.first_call: float | None = None

    def latency(self) -> float:
        now = time.monotonic()
        if self.first_call is None:
            self.first_call = now
        return self.schedule.at(now - self.first_call)

    def stats(self) -> AsyncProviderStats:
        now = time.monotonic()
        return AsyncProviderStats(
            received=self.received,
            served=self.served,
            in_flight=self.in_flight,
            max_in_flight=self.max_in_flight,
            statuses=dict(self.statuses),
            faults=dict(self.fault_counts),
            connections=len(self.peers),
            cpu_s=_cpu_s() - self.cpu0,
            wall_s=now - self.wall0,
            latency_now_s=self.schedule.at(now - self.first_call) if self.first_call else self.schedule.start,
        )

    def pick_fault(self) -> str | None:
        if self.faults.rate > 0 and self.rng.random() < self.faults.rate:
            return self.rng.choice(self.faults.kinds)
        return None


def build_app(state: _State) -> web.Application:
    """The aiohttp application: the two providers' routes, /v1/models, /health and /stats."""
    from aiohttp import web

    def json_response(status: int, body: dict[str, Any] | bytes, headers: dict[str, str]) -> web.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return web.Response(status=status, body=raw, headers={**headers, "Content-Type": "application/json"})

    async def call(request: web.Request, provider: str) -> web.Response:
        state.received += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        state.peers.add(peer)
        status = 500
        try:
            status, response = await answer(request, provider)
            return response
        finally:
            state.in_flight -= 1
            state.served += 1
            state.statuses[str(status)] += 1

    async def answer(request: web.Request, provider: str) -> tuple[int, web.Response]:
        id_header = {"request-id" if provider == ANTHROPIC else "x-request-id": f"req_{uuid.uuid4().hex[:24]}"}
        latency = state.latency()
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            return 400, json_response(400, error_body(provider, 400, message=f"Invalid JSON body: {exc}"), id_header)
        headers = {k.lower(): v for k, v in request.headers.items()}
        fake = FakeRequest(
            provider, request.path, str(body.get("model", "")), list(body.get("messages") or []), body, headers
        )
        key = fake.api_key
        if not key or (state.api_key is not None and key != state.api_key):
            await asyncio.sleep(latency)
            return 401, json_response(401, error_body(provider, 401), id_header)
        fault = state.pick_fault()
        if fault is not None:
            state.fault_counts[fault] += 1
            if fault == TIMEOUT:
                # Then an ordinary answer, long after the client gave up.
                await asyncio.sleep(state.faults.timeout_delay)
            elif fault == MALFORMED:
                await asyncio.sleep(latency)
                return 200, json_response(200, MALFORMED_BODY, id_header)
            else:
                code = int(fault)
                code = 503 if code == 529 and provider == OPENAI else code
                extra = dict(id_header)
                if state.faults.retry_after is not None:
                    extra["retry-after"] = state.faults.retry_after
                await asyncio.sleep(latency)
                return code, json_response(code, error_body(provider, code), extra)
        await asyncio.sleep(latency)
        if request.path.endswith("/count_tokens"):
            return 200, json_response(200, count_tokens_body(fake), id_header)
        reply = to_reply(fake, default_responder(fake))
        return reply.status, json_response(reply.status, render_reply(fake, reply), id_header)

    async def openai_call(request: web.Request) -> web.Response:
        return await call(request, OPENAI)

    async def anthropic_call(request: web.Request) -> web.Response:
        return await call(request, ANTHROPIC)

    async def models(request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ("gpt-4o-mini", "claude-haiku-4-5")
        ]
        return web.json_response({"object": "list", "data": data})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(request: web.Request) -> web.Response:
        return web.Response(text=state.stats().model_dump_json(), content_type="application/json")

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return await stats(request)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", openai_call)
    app.router.add_post("/v1/messages", anthropic_call)
    app.router.add_post("/v1/messages/count_tokens", anthropic_call)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", reset)
    return app


async def serve(state: _State, port: int, stop: asyncio.Event) -> None:
    """Serve on 127.0.0.1:port (0: a free one), print the root URL, and stop when `stop` is set."""
    from aiohttp import web

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    # A deep accept queue: a thousand clients connect at once when a run starts.
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    state.reset()  # the start-up's CPU is not the calls'
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set `stop` when stdin closes (the parent went away), as prelabel.testing.serve does."""
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    try:
        loop.add_reader(fd, readable)
    except (PermissionError, ValueError, OSError):
        pass  # stdin is a file or /dev/null (not pollable): serve until a signal


async def _main(args: argparse.Namespace) -> None:
    schedule = LatencySchedule(start=args.ramp[0], end=args.ramp[1], ramp_s=args.ramp[2]) if args.ramp else None
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    state = _State(
        schedule or LatencySchedule.fixed(args.latency),
        FaultPlan(rate=args.fault_rate, kinds=kinds, timeout_delay=args.timeout_delay),
        args.seed,
        args.api_key,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _watch_stdin(loop, stop)
    await serve(state, args.port, stop)


def _fault_kinds(text: str) -> str:
    for kind in (k.strip() for k in text.split(",") if k.strip()):
        if kind not in (TIMEOUT, MALFORMED) and not (kind.isdigit() and 400 <= int(kind) <= 599):
            raise argparse.ArgumentTypeError(f"unknown fault {kind!r}: an HTTP status 400-599, timeout or malformed")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prelabel.testing.async_provider", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one, printed)")
    p.add_argument("--latency", type=float, default=0.25, help="seconds before each answer")
    p.add_argument(
        "--ramp",
        type=float,
        nargs=3,
        metavar=("FROM", "TO", "SECONDS"),
        help="a latency rising from FROM to TO seconds over SECONDS after the first call (overrides --latency)",
    )
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of calls answered with a fault (0..1)")
    p.add_argument(
        "--faults", type=_fault_kinds, default=",".join(FAULT_KINDS), help="fault kinds drawn from, comma-separated"
    )
    p.add_argument("--timeout-delay", type=float, default=120.0, help="seconds a 'timeout' fault holds the call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    return p


def _raise_open_files_limit() -> None:
    """Thousands of open connections need as many descriptors: lift the soft limit (often 1,024) to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
        except (ValueError, OSError):
            pass  # keep the soft limit; a run that needs more connections will say so in its errors


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    _raise_open_files_limit()
    asyncio.run(_main(args))


class AsyncProviderProcess:
    """The asyncio fake in a child process (its own GIL and core), with its stats read over HTTP."""

    def __init__(self, *args: str, python: str = sys.executable, start_timeout: float = 30.0) -> None:
        self.args = list(args)
        self.python = python
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> AsyncProviderProcess:
        self.process = subprocess.Popen(
            [self.python, "-m", "prelabel.testing.async_provider", *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.close()
            raise RuntimeError(
                f"the async fake provider did not start (python -m prelabel.testing.async_provider "
                f"{' '.join(self.args)}); its stderr is above"
            )
        return self

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> AsyncProviderProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """OpenAI base URL (…/v1)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic base URL (the SDK appends /v1/messages)."""
        return self.url

    def _stats(self, method: str, path: str) -> AsyncProviderStats:
        request = urllib.request.Request(f"{self.url}{path}", method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            return AsyncProviderStats.model_validate_json(response.read())

    def stats(self) -> AsyncProviderStats:
        return self._stats("GET", "/stats")

    def reset(self) -> AsyncProviderStats:
        """Zero the counts, the CPU baseline and the latency ramp; returns the fresh stats."""
        return self._stats("POST", "/stats/reset")


if __name__ == "__main__":
    main()
