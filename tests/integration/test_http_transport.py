"""The live clients' transport (prelabel.providers.http) against the fake provider over real HTTP.

FastPost drives aiohttp itself and asks the SDK client only for its policy (which answers to retry, how long to
wait, the headers, the error classes), through private SDK methods. Each rule the SDK applies is checked here on
both transports (`PRELABEL_HTTP=aiohttp`, the default, and `sdk`, the SDK's own request path), for both
providers, so an SDK upgrade that changes one fails here instead of in a user's run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from prelabel.families import ModelRef
from prelabel.providers import CallParams, Completion, LLMClient, ProviderError, make_client
from prelabel.testing import ANTHROPIC, OPENAI, FakeProvider
from tests.conftest import run_async

pytestmark = pytest.mark.timeout(120)

TRANSPORTS = ("aiohttp", "sdk")
PROVIDERS = (OPENAI, ANTHROPIC)
PARAMS = CallParams(max_tokens=64)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(seed=3) as provider:
        yield provider


def client(
    fake: FakeProvider, provider: str, transport: str, *, timeout: float = 5.0, retries: int = 2, base: str = ""
) -> LLMClient:
    model = "gpt-4o-mini" if provider == OPENAI else "claude-haiku-4-5"
    return make_client(
        ModelRef.parse(f"{provider}:{model}"),
        openai_api_key=SecretStr("sk-test-openai-0000"),
        anthropic_api_key=SecretStr("sk-ant-test-0000"),
        openai_base_url=base or fake.base_url,
        anthropic_base_url=base or fake.anthropic_base_url,
        timeout=timeout,
        max_retries=retries,
        transport=transport,
    )


def ask(llm: LLMClient, prompt: str = "Alice: hi\nBob: hello") -> Completion:
    async def once() -> Completion:
        try:
            return await llm.complete(prompt, PARAMS)
        finally:
            await llm.aclose()

    return run_async(once())


def failure(llm: LLMClient) -> str:
    with pytest.raises(ProviderError) as raised:
        ask(llm)
    return str(raised.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_and_what_was_sent(fake: FakeProvider, provider: str, transport: str) -> None:
    completion = ask(client(fake, provider, transport))
    assert completion.text and completion.usage.input_tokens > 0 and completion.latency_s > 0
    (request,) = fake.requests
    assert request.provider == provider and request.body["messages"][0]["content"] == "Alice: hi\nBob: hello"
    if provider == OPENAI:
        assert request.headers["authorization"] == "Bearer sk-test-openai-0000"
    else:  # whichever credential header this SDK version sends
        sent = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        assert sent == "sk-ant-test-0000" and request.headers["anthropic-version"]
    assert request.headers["content-type"].startswith("application/json")
    assert request.headers["user-agent"]  # the SDK's own


@pytest.mark.parametrize("provider", PROVIDERS)
def test_both_transports_send_the_same_request(fake: FakeProvider, provider: str) -> None:
    ask(client(fake, provider, "aiohttp"))
    ask(client(fake, provider, "sdk"))
    fast, sdk = fake.requests
    assert fast.body == sdk.body and fast.path == sdk.path
    wanted = ("authorization", "x-api-key", "anthropic-version", "content-type", "accept")
    assert {k: v for k, v in fast.headers.items() if k in wanted} == {
        k: v for k, v in sdk.headers.items() if k in wanted
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_rate_limit_waits_for_its_retry_after_and_is_retried(fake: FakeProvider, provider: str, transport: str):
    fake.fail_next(2, status=429, retry_after="1")
    started = time.monotonic()
    assert ask(client(fake, provider, transport)).text
    assert time.monotonic() - started >= 1.9  # Retry-After: 1, honoured twice
    assert [r.status for r in fake.requests] == [429, 429, 200]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_retry_after_ms_is_honoured(fake: FakeProvider, transport: str) -> None:
    fake.fail_next(1, status=429, retry_after=None, retry_after_ms="300")
    started = time.monotonic()
    assert ask(client(fake, OPENAI, transport)).text
    assert time.monotonic() - started >= 0.28 and fake.count == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_errors_are_retried_until_the_budget_is_spent(fake: FakeProvider, provider: str, transport: str):
    fake.fail_next(3, status=500, retry_after="0")
    message = failure(client(fake, provider, transport, retries=2))
    assert "(HTTP 500)" in message and fake.count == 3  # the first try and two retries
    fake.reset()
    fake.fail_next(1, status=529 if provider == ANTHROPIC else 503, retry_after="0")
    assert ask(client(fake, provider, transport, retries=1)).text and fake.count == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_client_error_is_not_retried(fake: FakeProvider, provider: str, transport: str) -> None:
    fake.fail_next(1, status=400)
    message = failure(client(fake, provider, transport))
    assert "(HTTP 400)" in message and "BadRequestError" in message and fake.count == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_timeout_is_retried_then_reported_as_a_timeout(fake: FakeProvider, provider: str, transport: str):
    fake.timeout_delay = 3.0
    fake.fail_next(2, status="timeout")
    message = failure(client(fake, provider, transport, timeout=0.5, retries=1))
    assert "APITimeoutError" in message and fake.count == 2
    fake.reset()
    fake.fail_next(1, status="timeout")
    assert ask(client(fake, provider, transport, timeout=0.5, retries=1)).text  # the retry answers


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_body_that_is_not_the_apis_json_fails_cleanly(fake: FakeProvider, provider: str, transport: str) -> None:
    fake.fail_next(1, status="malformed")
    assert "malformed response body" in failure(client(fake, provider, transport))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unreachable_endpoint_is_a_connection_error(fake: FakeProvider, transport: str) -> None:
    port = fake.port
    fake.close()  # nothing listens there now
    message = failure(client(fake, OPENAI, transport, retries=1, base=f"http://127.0.0.1:{port}/v1"))
    assert "APIConnectionError" in message


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_key_the_provider_echoes_in_an_error_is_scrubbed(fake: FakeProvider, provider: str) -> None:
    fake.fail_next(1, status=401, echo_key=True)
    message = failure(client(fake, provider, "aiohttp"))
    assert "sk-test-openai-0000" not in message and "sk-ant-test-0000" not in message


def test_an_https_proxy_from_the_environment_is_used_and_no_proxy_is_honoured(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY and NO_PROXY, as the SDK's own transport reads them: the endpoint below does not resolve,
    so only a request through the proxy (the fake, taking the absolute-form request line) can be answered."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake.url)
    monkeypatch.setenv("http_proxy", fake.url)
    assert ask(client(fake, OPENAI, "aiohttp", retries=0, base="http://provider.invalid/v1")).text
    (request,) = fake.requests
    assert request.path.startswith("http://provider.invalid/v1/chat/completions")
    monkeypatch.setenv("NO_PROXY", "provider.invalid")
    monkeypatch.setenv("no_proxy", "provider.invalid")
    assert "APIConnectionError" in failure(
        client(fake, OPENAI, "aiohttp", retries=0, base="http://provider.invalid/v1")
    )


def test_calls_in_flight_are_not_limited_by_a_connection_pool(fake: FakeProvider) -> None:
    """The SDKs keep 100 connections by default; the transport leaves the bound to the engine's concurrency."""
    fake.latency = 0.5
    llm = client(fake, OPENAI, "aiohttp")

    async def many() -> list[Any]:
        import asyncio

        try:
            return await asyncio.gather(*(llm.complete(f"Alice: {i}\nBob: ok", PARAMS) for i in range(150)))
        finally:
            await llm.aclose()

    started = time.monotonic()
    answers = run_async(many())
    assert len(answers) == 150 and fake.max_in_flight >= 140
    assert time.monotonic() - started < 5
