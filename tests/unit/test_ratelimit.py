"""The token bucket behind client-side rate limits, on a fake clock, and its cross-process form shared
through a file (several processes against one file)."""

from __future__ import annotations

import math
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from prelabel.families import ModelRef
from prelabel.providers import CallParams, Completion, Usage
from prelabel.ratelimit import (
    BUSY_RETRY_S,
    RateLimitedClient,
    SharedTokenBucket,
    TokenBucket,
    bucket_path,
    estimate_prompt_tokens,
    limited,
    wait_for,
)
from prelabel.settings import Settings
from tests.conftest import run_async


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def times_of(bucket: TokenBucket, clock: Clock, count: int, amount: float = 1.0) -> list[float]:
    times = []
    for _ in range(count):
        bucket.acquire(amount)
        times.append(clock.now)
    return times


def max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize("rpm", [30, 60, 600, 3000])
def test_no_60_second_window_holds_more_than_the_limit(rpm):
    clock = Clock()
    bucket = TokenBucket(rpm, clock=clock, sleep=clock.sleep)
    times = times_of(bucket, clock, rpm * 3)
    assert max_in_window(times, 60.0) <= rpm
    # and the limit is used: three minutes of requests take about three minutes
    assert times[-1] == pytest.approx(3 * 60, rel=0.05)


def test_tokens_per_minute_with_requests_larger_than_one_second_of_budget():
    clock = Clock()
    bucket = TokenBucket(6000, clock=clock, sleep=clock.sleep)  # 100 tokens of burst
    times = times_of(bucket, clock, 30, amount=500)  # each request is 5 s of budget
    spent_per_window = max_in_window(times, 60.0) * 500
    assert spent_per_window <= 6000 + 500  # at most one request of debt
    assert times[-1] >= (30 * 500 - 100) / (6000 / 60) * 0.95


def test_settle_charges_real_usage():
    clock = Clock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)
    bucket.acquire(5)
    bucket.settle(100)  # the call used 100 more than estimated
    waited = bucket.acquire(1)
    assert waited > 9  # about 95 units of debt at ~9.8 units/s


class EchoClient:
    ref = ModelRef.parse("openai:gpt-4o-mini")

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, prompt: str, params: CallParams) -> Completion:
        self.calls += 1
        return Completion(text="ok", usage=Usage(input_tokens=10, output_tokens=2))

    async def aclose(self) -> None:
        return None


def test_settings_and_wrapping(monkeypatch):
    monkeypatch.setenv("PRELABEL_ANNOTATOR_RPM", "120")
    monkeypatch.setenv("PRELABEL_JUDGE_TPM", "90000")
    monkeypatch.delenv("PRELABEL_ANNOTATOR_TPM", raising=False)
    monkeypatch.delenv("PRELABEL_JUDGE_RPM", raising=False)
    settings = Settings()
    assert settings.rate_limits("annotator") == (120, None) and settings.rate_limits("judge") == (None, 90000)
    inner = EchoClient()
    annotator = limited(inner, "annotator", settings)
    assert isinstance(annotator, RateLimitedClient) and annotator.requests and annotator.tokens is None
    assert annotator.ref is inner.ref
    assert run_async(annotator.complete("hello", CallParams(max_tokens=5))).text == "ok" and inner.calls == 1
    monkeypatch.setenv("PRELABEL_ANNOTATOR_RPM", "0")
    assert limited(inner, "annotator", Settings()) is inner  # 0 means no limit


def test_prompt_estimate_is_cheap_and_positive():
    assert estimate_prompt_tokens("") > 0
    assert estimate_prompt_tokens("x" * 400) == 108


# -- the bucket shared across processes ------------------------------------------------------------------


@pytest.mark.parametrize("rpm", [30, 60, 3000])
def test_shared_bucket_keeps_the_local_buckets_guarantee(rpm, tmp_path):
    clock = Clock()
    bucket = SharedTokenBucket(rpm, tmp_path / "b.bucket", clock=clock, sleep=clock.sleep)
    times = times_of(bucket, clock, rpm * 3)
    assert max_in_window(times, 60.0) <= rpm
    assert times[-1] == pytest.approx(3 * 60, rel=0.05)


def test_two_shared_buckets_on_one_file_draw_on_one_budget(tmp_path):
    clock = Clock()
    first = SharedTokenBucket(600, tmp_path / "b.bucket", clock=clock, sleep=clock.sleep)  # 10 units of burst
    second = SharedTokenBucket(600, tmp_path / "b.bucket", clock=clock, sleep=clock.sleep)
    assert first.acquire(10) == 0
    assert second.acquire(1) > 0.09  # the first one emptied the bucket both read
    first.settle(50)  # debt charged through one object is seen by the other
    assert second.acquire(1) > 5


def test_shared_bucket_survives_a_damaged_file_and_a_clock_stepped_back(tmp_path):
    path = tmp_path / "b.bucket"
    path.write_bytes(b"garbage")
    clock = Clock()
    clock.now = 1000.0
    bucket = SharedTokenBucket(60, path, clock=clock, sleep=clock.sleep)
    assert bucket.acquire(1) == 0  # a damaged file starts full
    clock.now = 900.0  # the wall clock stepped back: no refill, no crash
    assert bucket.acquire(1) == pytest.approx(1 / bucket.rate)
    assert path.stat().st_size == 16


class SharedClock:
    """A fake clock shared by processes, run as a discrete-event simulation: time stands still while any
    process runs, and once every process sleeps it jumps to the earliest wake-up. `last` is the value this
    process last read; the bucket reads the clock inside its lock, so after a grant it is the grant's time."""

    BUSY, DONE = -1.0, math.inf

    def __init__(self, processes: int):
        context = multiprocessing.get_context()
        self.value = context.Value("d", 0.0)
        self.wake = context.Array("d", [self.BUSY] * processes, lock=False)  # guarded by value's lock
        self.index = 0
        self.last = 0.0

    def __call__(self) -> float:
        self.last = self.value.value
        return self.last

    def sleep(self, seconds: float) -> None:
        lock = self.value.get_lock()
        with lock:
            self.wake[self.index] = self.last + seconds  # the clock has not moved since `last`: we were busy
        while True:
            with lock:
                wake = self.wake[:]
                if self.BUSY not in wake:
                    self.value.value = max(self.value.value, min(wake))
                if self.value.value >= self.wake[self.index]:
                    self.wake[self.index] = self.BUSY
                    return
            time.sleep(0.0001)

    def finish(self) -> None:
        with self.value.get_lock():
            self.wake[self.index] = self.DONE


class WallClock:
    """time.time, remembering the last value read (the time of a grant, as the bucket saw it)."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self) -> float:
        self.last = time.time()
        return self.last


def _draw(
    path: Path, per_minute: float, clock: Any, index: int, until: float, count: int, start: Any, results: Any
) -> None:
    """In a child process: acquire one unit at a time until `until` (clock time) or `count` grants."""
    shared = isinstance(clock, SharedClock)
    if shared:
        clock.index = index
    bucket = SharedTokenBucket(per_minute, path, clock=clock, sleep=clock.sleep if shared else time.sleep)
    start.wait()
    grants: list[float] = []
    try:
        while len(grants) < count:
            bucket.acquire(1)
            grants.append(clock.last)
            if clock.last >= until:
                break
    finally:
        if shared:
            clock.finish()
    results.put(grants)


def draw_in_processes(path: Path, per_minute: float, clock: Any, until: float, count: int) -> list[list[float]]:
    context = multiprocessing.get_context()
    start, results = context.Barrier(2), context.Queue()
    children = [
        context.Process(target=_draw, args=(path, per_minute, clock, index, until, count, start, results))
        for index in range(2)
    ]
    for child in children:
        child.start()
    grants = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0
    return grants


def most_in_any_window(times: list[float], width: float) -> int:
    """The most grants in any closed interval [t, t + width]."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > width:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_two_processes_on_one_file_never_exceed_the_limit_in_any_minute(tmp_path):
    rpm, minutes = 60, 3
    clock = SharedClock(processes=2)
    per_process = draw_in_processes(tmp_path / "b.bucket", rpm, clock, until=minutes * 60.0, count=10_000)
    times = sorted(per_process[0] + per_process[1])
    assert max_in_window(times, 60.0) <= rpm
    # Each process alone would have taken about a minute's worth per minute; together they share one.
    assert len(times) == pytest.approx(rpm * minutes, rel=0.05)
    assert min(len(grants) for grants in per_process) >= 0.1 * len(times)


def test_two_processes_on_the_wall_clock_share_one_budget(tmp_path):
    per_minute = 12_000  # a 200-unit burst, then about 197 units a second
    per_process = draw_in_processes(tmp_path / "b.bucket", per_minute, WallClock(), until=float("inf"), count=250)
    times = sorted(per_process[0] + per_process[1])
    bucket = TokenBucket(per_minute)
    for width in (0.05, 0.25, 1.0):
        # a full bucket plus the refill of the window: what one process alone is allowed
        assert most_in_any_window(times, width) <= bucket.capacity + bucket.rate * width + 1e-6 * len(times)
    assert times[-1] - times[0] >= (len(times) - bucket.capacity) / bucket.rate * 0.999


def test_limited_with_a_directory_shares_buckets_per_role_kind_and_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PRELABEL_ANNOTATOR_RPM", "120")
    monkeypatch.setenv("PRELABEL_ANNOTATOR_TPM", "90000")
    monkeypatch.setenv("PRELABEL_JUDGE_RPM", "60")
    monkeypatch.delenv("PRELABEL_JUDGE_TPM", raising=False)
    settings = Settings()
    annotator = limited(EchoClient(), "annotator", settings, shared_dir=tmp_path)
    judge = limited(EchoClient(), "judge", settings, shared_dir=tmp_path)
    assert isinstance(annotator, RateLimitedClient) and isinstance(judge, RateLimitedClient)
    assert isinstance(annotator.requests, SharedTokenBucket) and isinstance(annotator.tokens, SharedTokenBucket)
    paths = {annotator.requests.path, annotator.tokens.path, judge.requests.path}
    assert len(paths) == 3 and all(path.parent == tmp_path for path in paths)
    # the same role and model in another process: the same file
    assert bucket_path(tmp_path, "annotator", "rpm", EchoClient.ref) == annotator.requests.path
    other_model = ModelRef.parse("openai:gpt-4o")
    assert bucket_path(tmp_path, "annotator", "rpm", other_model) != annotator.requests.path
    assert run_async(annotator.complete("hello", CallParams(max_tokens=5))).text == "ok"
    assert annotator.requests.path.stat().st_size == 16
    assert not isinstance(limited(EchoClient(), "annotator", settings).requests, SharedTokenBucket)  # type: ignore[union-attr]


def test_the_engine_of_the_backend_and_the_cli_uses_shared_limits(tmp_path, monkeypatch):
    from prelabel.engine import build_engine, close_engine, rate_limit_dir
    from prelabel.store import Store

    monkeypatch.chdir(tmp_path)
    for name, value in {
        "MODEL_DIR": str(tmp_path / "model"),
        "PRELABEL_ANNOTATOR_RPM": "60",
        "PRELABEL_JUDGE_TPM": "1000",
        "OPENAI_API_KEY": "sk-unit",
        "ANTHROPIC_API_KEY": "sk-unit",
        "PRELABEL_ANNOTATOR": "openai:gpt-4o-mini",
        "PRELABEL_JUDGE": "anthropic:claude-haiku-4-5",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PRELABEL_ANNOTATOR_TPM", raising=False)
    monkeypatch.delenv("PRELABEL_JUDGE_RPM", raising=False)
    settings = Settings()
    engine = build_engine(settings, store=Store(settings.store_path))
    try:
        assert isinstance(engine.annotator, RateLimitedClient) and isinstance(engine.judge, RateLimitedClient)
        assert isinstance(engine.annotator.requests, SharedTokenBucket) and engine.annotator.tokens is None
        assert isinstance(engine.judge.tokens, SharedTokenBucket) and engine.judge.requests is None
        assert engine.annotator.requests.path.parent == rate_limit_dir(settings) == tmp_path / "model" / "ratelimit"
    finally:
        close_engine(engine)


def test_a_shared_bucket_held_by_another_process_never_blocks_the_caller(tmp_path):
    """A process paused while holding a bucket's lock (SIGSTOP, a debugger) must not freeze the event loop that
    every call of this process runs on: a spend says "try again shortly", a settle is charged with the next
    spend, and the awaited wait goes on once the lock is free."""
    import fcntl
    import os

    path = tmp_path / "b.bucket"
    bucket = SharedTokenBucket(600, path)  # 10 units of burst
    holder = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another descriptor: to flock, another process
    try:
        started = time.monotonic()
        assert bucket.try_spend(1) == BUSY_RETRY_S
        bucket.settle(4)  # kept, not lost
        assert time.monotonic() - started < 0.5
    finally:
        os.close(holder)
    assert bucket.try_spend(1) == 0.0  # the deferred 4 and this 1 are both charged now
    assert bucket.try_spend(5) == 0.0
    assert bucket.try_spend(1) > 0  # 10 spent: empty


def test_the_awaited_wait_spends_like_the_blocking_one(tmp_path):
    bucket = SharedTokenBucket(600, tmp_path / "b.bucket")  # 10 units of burst, 9.8 a second after
    assert run_async(wait_for(bucket, 10)) == 0.0
    waited = run_async(wait_for(bucket, 2))
    assert 0.1 < waited < 1.0 and bucket.waited_s == waited
