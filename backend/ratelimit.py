"""Client-side rate limits: requests and tokens per minute for each provider role.

A provider answers 429 once its own limiter is exceeded; pacing the calls here keeps a large run under the
limit instead of burning retries. Each role (annotator, judge) gets a request bucket and a token bucket;
`RateLimitedClient` wraps any `LLMClient` and acquires from both before each call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.providers import CallParams, Completion, LLMClient


class RateLimitSettings(BaseSettings):
    """PRELABEL_<ROLE>_RPM / _TPM; unset or 0 means no client-side limit."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    annotator_rpm: float | None = Field(None, alias="PRELABEL_ANNOTATOR_RPM", ge=0)
    annotator_tpm: float | None = Field(None, alias="PRELABEL_ANNOTATOR_TPM", ge=0)
    judge_rpm: float | None = Field(None, alias="PRELABEL_JUDGE_RPM", ge=0)
    judge_tpm: float | None = Field(None, alias="PRELABEL_JUDGE_TPM", ge=0)

    def limits(self, role: str) -> tuple[float | None, float | None]:
        rpm, tpm = (self.annotator_rpm, self.annotator_tpm) if role == "annotator" else (self.judge_rpm, self.judge_tpm)
        return (rpm or None), (tpm or None)


class TokenBucket:
    """A thread-safe token bucket sized so that no 60-second window holds more than `per_minute` units.

    Capacity is one second's worth (at least 1); the refill rate is lowered by that capacity, because a
    window can hold a full bucket plus a minute of refill. The level may go negative: a single request
    larger than the bucket waits for a full bucket and then runs into debt, and `settle` charges the
    difference between an estimate and the real usage after a call.
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = float(per_minute)
        self.capacity = max(1.0, self.per_minute / 60.0)
        self.rate = max(self.per_minute - self.capacity, min(self.per_minute, 1.0)) / 60.0  # units per second
        self._clock = clock
        self._sleep = sleep
        self._level = self.capacity
        self._updated = clock()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self, amount: float = 1.0) -> float:
        """Block until `amount` units may be spent, spend them, and return the seconds waited."""
        needed = min(float(amount), self.capacity)
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._refill(now)
                if self._level >= needed - 1e-9:  # float refill may fall short by a rounding error
                    self._level -= amount
                    self.waited_s += waited
                    return waited
                delay = max((needed - self._level) / self.rate, 0.001)
            # Sleep outside the lock; another thread may take the units first, so check again.
            self._sleep(delay)
            waited += delay

    def settle(self, difference: float) -> None:
        """Charge (positive) or refund (negative) units after the real usage is known."""
        with self._lock:
            self._refill(self._clock())
            self._level = min(self.capacity, self._level - difference)


def estimate_prompt_tokens(prompt: str) -> int:
    """A cheap upper-side estimate for pacing (about 4 characters per token), not for billing."""
    return len(prompt) // 4 + 8


class RateLimitedClient:
    """An `LLMClient` that waits for its role's request and token budget before each call."""

    def __init__(self, inner: LLMClient, requests: TokenBucket | None = None, tokens: TokenBucket | None = None):
        self.inner = inner
        self.ref = inner.ref
        self.requests = requests
        self.tokens = tokens

    def complete(self, prompt: str, params: CallParams) -> Completion:
        estimate = estimate_prompt_tokens(prompt) + params.max_tokens
        if self.requests is not None:
            self.requests.acquire(1)
        if self.tokens is not None:
            self.tokens.acquire(estimate)
        # A failed call keeps its tokens spent: the provider may have counted it too.
        completion = self.inner.complete(prompt, params)
        if self.tokens is not None:
            used = completion.usage.input_tokens + completion.usage.output_tokens
            if used:
                self.tokens.settle(used - estimate)
        return completion


def limited(inner: LLMClient, role: str, limits: RateLimitSettings | None = None) -> LLMClient:
    """`inner` wrapped with the role's limits, or `inner` itself when the role has none."""
    rpm, tpm = (limits or RateLimitSettings()).limits(role)
    if rpm is None and tpm is None:
        return inner
    return RateLimitedClient(
        inner,
        TokenBucket(rpm) if rpm is not None else None,
        TokenBucket(tpm) if tpm is not None else None,
    )
