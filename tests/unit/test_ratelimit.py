"""The token bucket behind client-side rate limits, on a fake clock."""

from __future__ import annotations

import pytest

from backend.families import ModelRef
from backend.providers import CallParams, Completion, Usage
from backend.ratelimit import RateLimitedClient, RateLimitSettings, TokenBucket, estimate_prompt_tokens, limited


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

    def complete(self, prompt: str, params: CallParams) -> Completion:
        self.calls += 1
        return Completion(text="ok", usage=Usage(input_tokens=10, output_tokens=2))


def test_settings_and_wrapping(monkeypatch):
    monkeypatch.setenv("PRELABEL_ANNOTATOR_RPM", "120")
    monkeypatch.setenv("PRELABEL_JUDGE_TPM", "90000")
    monkeypatch.delenv("PRELABEL_ANNOTATOR_TPM", raising=False)
    monkeypatch.delenv("PRELABEL_JUDGE_RPM", raising=False)
    limits = RateLimitSettings()
    assert limits.limits("annotator") == (120, None) and limits.limits("judge") == (None, 90000)
    inner = EchoClient()
    annotator = limited(inner, "annotator", limits)
    assert isinstance(annotator, RateLimitedClient) and annotator.requests and annotator.tokens is None
    assert annotator.ref is inner.ref
    assert annotator.complete("hello", CallParams(max_tokens=5)).text == "ok" and inner.calls == 1
    monkeypatch.setenv("PRELABEL_ANNOTATOR_RPM", "0")
    assert limited(inner, "annotator", RateLimitSettings()) is inner  # 0 means no limit


def test_prompt_estimate_is_cheap_and_positive():
    assert estimate_prompt_tokens("") > 0
    assert estimate_prompt_tokens("x" * 400) == 108
