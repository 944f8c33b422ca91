"""The asyncio fake provider (prelabel.testing.async_provider) in its own process: the real SDKs get valid
answers from it, it holds a thousand calls in flight at once, and its stats say what it saw and spent."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from prelabel.testing.async_provider import AsyncProviderProcess, LatencySchedule

pytestmark = pytest.mark.timeout(120)

# Any: the SDKs' TypedDict parameters, which these literal bodies stand for.
RATING_SCHEMA: Any = {
    "type": "object",
    "properties": {
        "rating": {"type": "string", "enum": ["very bad", "bad", "moderate", "good", "excellent"]},
        "reason": {"type": "string"},
    },
    "required": ["rating", "reason"],
    "additionalProperties": False,
}
USER: Any = [{"role": "user", "content": "User A: hi\nUser B: hello"}]


@pytest.fixture
def fake() -> Iterator[AsyncProviderProcess]:
    with AsyncProviderProcess("--latency", "0.01") as process:
        yield process


def test_the_real_sdks_get_valid_answers(fake: AsyncProviderProcess) -> None:
    oai = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    plain = oai.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert plain.choices[0].message.content == "fake openai reply"
    assert plain.usage is not None and plain.usage.total_tokens > 0

    tool = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        tools=[{"type": "function", "function": {"name": "rate", "parameters": RATING_SCHEMA}}],
        tool_choice={"type": "function", "function": {"name": "rate"}},
    )
    calls = tool.choices[0].message.tool_calls or []
    assert tool.choices[0].finish_reason == "tool_calls"
    assert isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    assert json.loads(calls[0].function.arguments) == {"rating": "very bad", "reason": "fake"}

    ant = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0)
    used = ant.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=USER,
        tools=[{"name": "rate", "input_schema": RATING_SCHEMA}],
        tool_choice={"type": "tool", "name": "rate"},
    )
    assert used.stop_reason == "tool_use"
    assert used.content[0].type == "tool_use" and used.content[0].input == {"rating": "very bad", "reason": "fake"}
    counted = ant.messages.count_tokens(model="claude-haiku-4-5", messages=USER)
    assert counted.input_tokens > 0

    stats = fake.stats()
    assert (stats.received, stats.served, stats.in_flight, stats.statuses) == (4, 4, 0, {"200": 4})
    assert stats.max_in_flight == 1 and stats.cpu_s > 0 and stats.cpu_ms_per_call > 0


def test_a_wrong_key_is_refused_as_the_providers_do() -> None:
    with AsyncProviderProcess("--latency", "0", "--api-key", "sk-right") as fake:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0).chat.completions.create(
                model="gpt-4o-mini", messages=USER
            )
        ant = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-right", max_retries=0)
        assert ant.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=USER).content
        assert fake.stats().statuses == {"401": 1, "200": 1}


async def _many(url: str, count: int) -> list[int]:
    import aiohttp

    body = {"model": "gpt-4o-mini", "messages": USER}
    headers = {"Authorization": "Bearer sk-test"}
    # No connection limit: every call on its own connection, all at once.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> int:
            async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
                payload = await response.json()
                assert payload["choices"][0]["message"]["content"] == "fake openai reply"
                return response.status

        return await asyncio.gather(*(one() for _ in range(count)))


def test_a_thousand_calls_in_flight_overlap() -> None:
    # 3 s per call leaves a loaded machine's client time to open all 1,000 connections while the first wait.
    with AsyncProviderProcess("--latency", "3.0") as fake:
        started = time.perf_counter()
        # In a thread of its own: the browser tests' session-wide Playwright keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as thread:
            statuses = thread.submit(asyncio.run, _many(fake.url, 1000)).result()
        elapsed = time.perf_counter() - started
        stats = fake.stats()
    assert statuses == [200] * 1000
    # 1,000 calls of 3 s each: a server that serialises them takes 3,000 s, one that holds a thread per
    # connection up to a pool of 200 takes 15 s or more; this one overlaps them all (the bound is loose on purpose:
    # speed is the benchmarks' business, overlap is this test's).
    assert 3.0 <= elapsed < 12.0, f"1,000 concurrent 3 s calls took {elapsed:.2f} s"
    assert (stats.received, stats.served, stats.in_flight, stats.statuses) == (1000, 1000, 0, {"200": 1000})
    assert stats.max_in_flight >= 950, stats
    assert stats.connections == 1000
    assert 0 < stats.cpu_ms_per_call < 10, stats  # its own CPU per call, reported from getrusage
    assert stats.busy_share < 1.0


def test_faults_are_injected_at_the_rate_asked() -> None:
    with AsyncProviderProcess("--latency", "0", "--fault-rate", "1", "--faults", "429,500", "--seed", "3") as fake:
        oai = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        raised: list[type[Exception]] = []
        for _ in range(20):
            with pytest.raises(openai.APIStatusError) as caught:
                oai.chat.completions.create(model="gpt-4o-mini", messages=USER)
            raised.append(type(caught.value))
        ant = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0)
        with pytest.raises(anthropic.APIStatusError):
            ant.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=USER)
        stats = fake.stats()
    assert set(raised) == {openai.RateLimitError, openai.InternalServerError}
    assert sum(stats.faults.values()) == 21 and stats.statuses.get("200") is None
    assert stats.statuses["429"] + stats.statuses["500"] == 21


def test_a_timeout_fault_holds_the_call_past_the_client_timeout() -> None:
    with AsyncProviderProcess(
        "--latency", "0", "--fault-rate", "1", "--faults", "timeout", "--timeout-delay", "30"
    ) as fake:
        oai = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0, timeout=0.5)
        started = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            oai.chat.completions.create(model="gpt-4o-mini", messages=USER)
        assert time.perf_counter() - started < 5
        stats = fake.stats()
    assert stats.faults == {"timeout": 1} and stats.in_flight == 1  # still held when the client gave up


def test_the_latency_ramp_rises_from_the_first_call_and_a_reset_restarts_it() -> None:
    schedule = LatencySchedule(start=0.2, end=5.0, ramp_s=60)
    assert [schedule.at(t) for t in (0, 30, 60, 600)] == [0.2, pytest.approx(2.6), 5.0, 5.0]
    assert LatencySchedule.fixed(1.0).at(1e6) == 1.0
    with AsyncProviderProcess("--ramp", "0.2", "5", "2") as fake:
        assert fake.stats().latency_now_s == 0.2  # no call yet: the ramp has not started
        oai = openai.OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
        started = time.perf_counter()
        oai.chat.completions.create(model="gpt-4o-mini", messages=USER)
        first = time.perf_counter() - started
        time.sleep(2.0)
        assert fake.stats().latency_now_s == 5.0
        fresh = fake.reset()
    assert 0.2 <= first < 1.0
    assert (fresh.served, fresh.latency_now_s) == (0, 0.2)


@pytest.mark.parametrize("stop", ["stdin", "sigterm"])
def test_the_server_stops_when_stdin_closes_or_on_sigterm(stop: str) -> None:
    fake = AsyncProviderProcess("--latency", "0").start()
    process = fake.process
    assert process is not None and process.poll() is None
    if stop == "sigterm":
        process.send_signal(signal.SIGTERM)
    else:
        assert process.stdin is not None
        process.stdin.close()
    assert process.wait(timeout=10) == 0
    fake.close()


def test_the_throughput_rows_measure_prelabel_and_the_fake_side_by_side(tmp_path: Path) -> None:
    from benchmarks.run import bench_throughput

    rows = {row.figure.split(" (")[0]: row for row in bench_throughput(tmp_path, 40, 20, 0.05)}
    first = rows["(f) label 40 items, concurrency 20"]
    assert "40 labeled, 0 failed; 80 calls" in first.measured, first
    assert first.reference.startswith("ideal 0.20 s")
    cpu = rows["(f) CPU per provider call, labeling process"]
    assert float(cpu.measured.split(" ms")[0]) > 0
    # A small run is shown, not judged, against the targets of 10,000 items at 1,000.
    judged = ("(f) label vs ideal", "(f) CPU per provider call, labeling process", "(f) peak RSS at concurrency 20")
    assert all(rows[name].ok is None and "target at 10,000 items" in rows[name].reference for name in judged)
    assert "max 20 in flight" in rows["(f) the fake provider's own CPU per call"].measured
    limit = rows["(f) what limited the run"]
    assert limit.ok is True and not limit.measured.startswith("the fake")
