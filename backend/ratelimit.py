"""Client-side rate limits: requests and tokens per minute for each provider role.

A provider answers 429 once its own limiter is exceeded; pacing the calls here keeps a large run under the
limit instead of burning retries. Each role (annotator, judge) gets a request bucket and a token bucket;
`RateLimitedClient` wraps any `LLMClient` and waits for both before each call. The wait is awaited on the
engine's loop (`wait_for`): a bucket operation never sleeps, and a shared bucket's file lock is only tried
(`try_spend` answers "try again shortly" while another process holds it), so a process paused while holding
the lock delays this one's calls without freezing its loop.

The provider counts every call of the account, not of one process: the backend's workers and a `prelabel label`
run on the same machine must draw on one budget. `SharedTokenBucket` keeps the bucket's level in a small
file under MODEL_DIR, read and written under an exclusive lock, so every process using that MODEL_DIR
shares it.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prelabel.families import ModelRef
from prelabel.providers import CallParams, Completion, LLMClient

if TYPE_CHECKING:
    from prelabel.settings import Settings


# How soon a spend is tried again when another process holds a shared bucket's lock.
BUSY_RETRY_S = 0.002


class BucketBusy(Exception):
    """Another process holds a shared bucket's lock (it is not waited for: the caller tries again shortly)."""


@dataclass
class BucketState:
    """The mutable part of a bucket: its level and when it was last refilled."""

    level: float
    updated: float


class TokenBucket:
    """A thread-safe token bucket sized so that no 60-second window holds more than `per_minute` units.

    Capacity is one second's worth (at least 1); the refill rate is lowered by that capacity, because a
    window can hold a full bucket plus a minute of refill. The level may go negative: a single request
    larger than the bucket waits for a full bucket and then runs into debt, and `settle` charges the
    difference between an estimate and the real usage after a call.

    The state lives in this object, so the budget is this process's alone; see `SharedTokenBucket`.
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
        self._state = BucketState(level=self.capacity, updated=clock())
        self._lock = threading.Lock()
        self._unsettled = 0.0  # a settle that found the shared lock held, charged with the next spend
        self.waited_s = 0.0

    @contextmanager
    def _locked(self) -> Iterator[BucketState]:
        """The state, held exclusively for one read-modify-write."""
        with self._lock:
            yield self._state

    def _refill(self, state: BucketState, now: float) -> None:
        # A clock that went back (a wall clock stepped by NTP) refills nothing rather than draining.
        state.level = min(self.capacity, state.level + max(0.0, now - state.updated) * self.rate)
        state.updated = now

    def try_spend(self, amount: float = 1.0) -> float:
        """Spend `amount` units if they may be spent now (returns 0.0), else spend nothing and return the
        seconds to wait before trying again. Never sleeps; waits for another process's lock only briefly."""
        needed = min(float(amount), self.capacity)
        try:
            with self._locked() as state:
                self._refill(state, self._clock())
                state.level -= self._unsettled
                self._unsettled = 0.0
                if state.level >= needed - 1e-9:  # float refill may fall short by a rounding error
                    state.level -= amount
                    return 0.0
                return max((needed - state.level) / self.rate, 0.001)
        except BucketBusy:
            return BUSY_RETRY_S

    def acquire(self, amount: float = 1.0) -> float:
        """Block until `amount` units may be spent, spend them, and return the seconds waited."""
        waited = 0.0
        while True:
            delay = self.try_spend(amount)
            if delay == 0.0:
                self.waited_s += waited
                return waited
            # Sleep outside the lock; another thread (or process) may take the units first, so check again.
            self._sleep(delay)
            waited += delay

    def settle(self, difference: float) -> None:
        """Charge (positive) or refund (negative) units after the real usage is known. When another process
        holds a shared bucket's lock, the difference is kept and charged with this process's next spend."""
        try:
            with self._locked() as state:
                self._refill(state, self._clock())
                state.level = min(self.capacity, state.level - difference - self._unsettled)
                self._unsettled = 0.0
        except BucketBusy:
            self._unsettled += difference


async def wait_for(bucket: TokenBucket, amount: float) -> float:
    """`bucket.acquire` awaited, for the engine's loop: the seconds waited."""
    waited = 0.0
    while True:
        delay = bucket.try_spend(amount)
        if delay == 0.0:
            bucket.waited_s += waited
            return waited
        await asyncio.sleep(delay)
        waited += delay


class SharedTokenBucket(TokenBucket):
    """A `TokenBucket` whose state is a 16-byte file shared by every process (and thread) that opens it.

    Each read-modify-write holds an exclusive flock on the file, tried without waiting (BucketBusy when another
    process holds it: the operation is tried again shortly). The file is opened for every operation: a
    descriptor inherited across fork() would share its lock with the parent, and a closed descriptor leaves
    no lock behind when a process dies. The default clock is the wall clock: a time written to the file
    by one process (or container, or boot) means the same to the next reader.
    """

    _FORMAT = struct.Struct("<dd")  # level, updated

    def __init__(
        self,
        per_minute: float,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__(per_minute, clock=clock, sleep=sleep)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[BucketState]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:  # also excludes other threads: each holds its own descriptor
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BucketBusy(str(self.path)) from None
            state = self._read(fd)
            yield state
            os.pwrite(fd, self._FORMAT.pack(state.level, state.updated), 0)
        finally:
            os.close(fd)  # releases the lock

    def _read(self, fd: int) -> BucketState:
        raw = os.pread(fd, self._FORMAT.size, 0)
        if len(raw) == self._FORMAT.size:
            level, updated = self._FORMAT.unpack(raw)
            if math.isfinite(level) and math.isfinite(updated):
                return BucketState(level=level, updated=updated)
        # A new (or damaged) file starts full, as a new bucket does.
        return BucketState(level=self.capacity, updated=self._clock())


def estimate_prompt_tokens(prompt: str) -> int:
    """A cheap upper-side estimate for pacing (about 4 characters per token), not for billing."""
    return len(prompt) // 4 + 8


class RateLimitedClient:
    """An `LLMClient` that waits (awaited) for its role's request and token budget before each call."""

    def __init__(self, inner: LLMClient, requests: TokenBucket | None = None, tokens: TokenBucket | None = None):
        self.inner = inner
        self.ref = inner.ref
        self.requests = requests
        self.tokens = tokens

    async def complete(self, prompt: str, params: CallParams) -> Completion:
        estimate = estimate_prompt_tokens(prompt) + params.max_tokens
        if self.requests is not None:
            await wait_for(self.requests, 1)
        if self.tokens is not None:
            await wait_for(self.tokens, estimate)
        # A failed call keeps its tokens spent: the provider may have counted it too.
        completion = await self.inner.complete(prompt, params)
        if self.tokens is not None:
            used = completion.usage.input_tokens + completion.usage.output_tokens
            if used:
                self.tokens.settle(used - estimate)
        return completion

    async def aclose(self) -> None:
        await self.inner.aclose()


def bucket_path(shared_dir: Path, role: str, kind: str, ref: ModelRef) -> Path:
    """One file per role, kind (rpm/tpm) and endpoint+model: a provider limits each model separately, and
    the two roles have limits of their own even when they call one model."""
    endpoint = hashlib.sha256(f"{ref.provider}\x00{ref.model}\x00{ref.base_url or ''}".encode()).hexdigest()[:16]
    return shared_dir / f"{role}-{kind}-{endpoint}.bucket"


def limited(inner: LLMClient, role: str, settings: Settings, shared_dir: Path | None = None) -> LLMClient:
    """`inner` wrapped with the role's limits (`Settings.rate_limits`), or `inner` itself when the role has none.

    With `shared_dir` the buckets are files there, shared by every process that uses the same directory;
    without it they belong to this process.
    """
    rpm, tpm = settings.rate_limits(role)
    if rpm is None and tpm is None:
        return inner

    def bucket(per_minute: float | None, kind: str) -> TokenBucket | None:
        if per_minute is None:
            return None
        if shared_dir is None:
            return TokenBucket(per_minute)
        return SharedTokenBucket(per_minute, bucket_path(shared_dir, role, kind, inner.ref))

    return RateLimitedClient(inner, bucket(rpm, "rpm"), bucket(tpm, "tpm"))
