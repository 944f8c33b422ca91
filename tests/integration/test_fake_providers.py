"""The fake provider server driven by the real openai and anthropic SDKs over HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from pydantic import BaseModel

from prelabel.testing import ANTHROPIC, OPENAI, FakeProvider, FakeReply, FakeRequest, FakeToken

pytestmark = pytest.mark.timeout(60)

RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rating": {"type": "string", "enum": ["very bad", "bad", "moderate", "good", "excellent"]},
        "reason": {"type": "string"},
    },
    "required": ["rating", "reason"],
    "additionalProperties": False,
}

USER = [{"role": "user", "content": "User A: hi\nUser B: hello"}]


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider(seed=1) as fake:
        yield fake


def oai(provider: FakeProvider, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=provider.base_url, api_key="sk-test", **kwargs)


def ant(provider: FakeProvider, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=provider.anthropic_base_url, api_key="sk-ant-test", **kwargs)


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_openai_plain_completion(provider: FakeProvider) -> None:
    seen: list[FakeRequest] = []

    def responder(request: FakeRequest) -> str:
        seen.append(request)
        return "summary: " + request.prompt_text.splitlines()[-1]

    provider.responder = responder
    out = oai(provider).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Summarise."}, *USER],
    )
    assert out.choices[0].message.content == "summary: User B: hello"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == "gpt-4o-mini"
    assert out.usage is not None and out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert seen[0].provider == OPENAI and seen[0].prompt_text.startswith("Summarise.\nUser A")
    rec = provider.requests[0]
    assert (rec.provider, rec.model, rec.status) == (OPENAI, "gpt-4o-mini", 200)
    assert rec.headers["authorization"] == "Bearer sk-test"


def test_anthropic_plain_message(provider: FakeProvider) -> None:
    provider.queue_replies(FakeReply(content="a summary", prompt_tokens=42, completion_tokens=7))
    msg = ant(provider).messages.create(model="claude-haiku-4-5", max_tokens=100, system="Be brief.", messages=USER)
    assert msg.type == "message" and msg.role == "assistant" and msg.stop_reason == "end_turn"
    assert msg.content[0].type == "text" and msg.content[0].text == "a summary"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (42, 7)
    rec = provider.requests[0]
    assert rec.provider == ANTHROPIC and rec.body["system"] == "Be brief."


def test_auth_header_forms(provider: FakeProvider) -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": USER}
    url = provider.anthropic_base_url + "/v1/messages"
    assert post(url, body, {"x-api-key": "k"})[0] == 200
    assert post(url, body, {"Authorization": "Bearer k"})[0] == 200
    status, err = post(url, body, {})
    assert status == 401 and err["type"] == "error" and err["error"]["type"] == "authentication_error"


def test_openai_json_schema(provider: FakeProvider) -> None:
    def responder(request: FakeRequest) -> dict[str, Any]:
        assert request.wants_json_schema == RATING_SCHEMA
        return {"rating": "good", "reason": "complete"}

    provider.responder = responder
    out = oai(provider).chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "rating", "schema": RATING_SCHEMA, "strict": True},
        },
    )
    assert json.loads(out.choices[0].message.content or "") == {"rating": "good", "reason": "complete"}
    assert provider.errors == []


def test_openai_parse_with_default_responder(provider: FakeProvider) -> None:
    class Rating(BaseModel):
        rating: str
        score: int

    out = oai(provider).chat.completions.parse(model="gpt-4o-mini", messages=USER, response_format=Rating)
    parsed = out.choices[0].message.parsed
    assert parsed is not None and parsed.rating == "fake" and parsed.score == 0


def test_openai_logprobs(provider: FakeProvider) -> None:
    def responder(request: FakeRequest) -> FakeReply:
        assert request.wants_logprobs and request.top_logprobs == 3
        return FakeReply(logprobs=[FakeToken("good", [("good", -0.2), ("excellent", -1.9), ("moderate", -3.1)])])

    provider.responder = responder
    out = oai(provider).chat.completions.create(model="gpt-4o-mini", messages=USER, logprobs=True, top_logprobs=3)
    choice = out.choices[0]
    assert choice.message.content == "good"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    first = choice.logprobs.content[0]
    assert (first.token, first.logprob) == ("good", -0.2)
    assert [(t.token, t.logprob) for t in first.top_logprobs] == [
        ("good", -0.2),
        ("excellent", -1.9),
        ("moderate", -3.1),
    ]


def test_openai_logprobs_only_when_asked(provider: FakeProvider) -> None:
    client = oai(provider)
    plain = client.chat.completions.create(model="m", messages=USER)
    assert plain.choices[0].logprobs is None
    auto = client.chat.completions.create(model="m", messages=USER, logprobs=True, top_logprobs=2)
    tokens = auto.choices[0].logprobs.content  # type: ignore[union-attr]
    assert tokens and "".join(t.token for t in tokens) == auto.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 for t in tokens)


def test_anthropic_forced_tool_use(provider: FakeProvider) -> None:
    tools = [{"name": "record_rating", "description": "Record the rating.", "input_schema": RATING_SCHEMA}]
    choice = {"type": "tool", "name": "record_rating"}
    replies: list[dict[str, Any] | str] = [{"rating": "excellent", "reason": "all facts"}, "not json at all"]

    def responder(request: FakeRequest) -> dict[str, Any] | str:
        assert request.tool is not None and request.tool.name == "record_rating"
        assert request.tool.input_schema == RATING_SCHEMA
        return replies.pop(0)

    provider.responder = responder
    client = ant(provider)
    msg = client.messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=USER, tools=tools, tool_choice=choice
    )
    block = msg.content[0]
    assert msg.stop_reason == "tool_use"
    assert block.type == "tool_use" and block.name == "record_rating"
    assert block.input == {"rating": "excellent", "reason": "all facts"}

    bad = client.messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=USER, tools=tools, tool_choice=choice
    )
    assert [b.type for b in bad.content] == ["text"] and bad.stop_reason == "end_turn"
    assert provider.errors == []


def test_openai_forced_function_call(provider: FakeProvider) -> None:
    tools = [{"type": "function", "function": {"name": "record_rating", "parameters": RATING_SCHEMA}}]
    out = oai(provider).chat.completions.create(
        model="m",
        messages=USER,
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "record_rating"}},
    )
    call = out.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "record_rating"
    assert json.loads(call.function.arguments) == {"rating": "very bad", "reason": "fake"}


def test_429_retry_after_zero_is_retried(provider: FakeProvider) -> None:
    provider.fail_next(1, status=429, retry_after="0")
    out = oai(provider).chat.completions.create(model="m", messages=USER)
    assert out.choices[0].message.content == "fake openai reply"
    assert provider.count == 2
    assert [r.status for r in provider.requests] == [429, 200]
    assert provider.requests[1].headers["x-stainless-retry-count"] == "1"


def test_429_retry_after_ms_both_sdks(provider: FakeProvider) -> None:
    provider.fail_next(2, status=429, retry_after_ms="1")
    start = time.monotonic()
    assert ant(provider).messages.create(model="c", max_tokens=5, messages=USER).content[0].type == "text"
    assert provider.count == 3 and time.monotonic() - start < 0.5


def test_500_and_529_are_retried(provider: FakeProvider) -> None:
    provider.fail_next(1, status=500, retry_after="0.01")
    provider.fail_next(1, status=529, retry_after="0.01")
    msg = ant(provider).messages.create(model="c", max_tokens=5, messages=USER)
    assert msg.content[0].type == "text"
    assert [r.status for r in provider.requests] == [500, 529, 200]


def test_529_exhausts_retries_with_overloaded_shape(provider: FakeProvider) -> None:
    provider.fail_next(3, status=529, retry_after="0.01", provider=ANTHROPIC)
    with pytest.raises(anthropic.OverloadedError) as info:
        ant(provider, max_retries=2).messages.create(model="c", max_tokens=5, messages=USER)
    assert info.value.status_code == 529
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": info.value.body["request_id"],
    }  # type: ignore[index]
    assert provider.count == 3


def test_openai_error_shape_and_400_not_retried(provider: FakeProvider) -> None:
    provider.queue_replies(FakeReply(status=400, error_message="bad schema"))
    with pytest.raises(openai.BadRequestError) as info:
        oai(provider).chat.completions.create(model="m", messages=USER)
    assert info.value.body == {"message": "bad schema", "type": "invalid_request_error", "param": None, "code": None}
    assert provider.count == 1


def test_timeout(provider: FakeProvider) -> None:
    provider.queue_replies(FakeReply(content="late", delay=2.0))
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        oai(provider, timeout=0.5, max_retries=0).chat.completions.create(model="m", messages=USER)
    assert time.monotonic() - start < 1.5


def test_timeout_fault_then_retry_succeeds(provider: FakeProvider) -> None:
    provider.timeout_delay = 1.0
    provider.fail_next(1, status="timeout")
    out = oai(provider, timeout=0.3, max_retries=1).chat.completions.create(model="m", messages=USER)
    assert out.choices[0].message.content == "fake openai reply"
    assert provider.count == 2 and provider.requests[0].fault == "timeout"


@pytest.mark.parametrize("kind", ["fault", "raw"])
def test_malformed_body_raises(provider: FakeProvider, kind: str) -> None:
    if kind == "fault":
        provider.fail_next(1, status="malformed")
    else:
        provider.queue_replies(FakeReply(raw="{not json"))
    with pytest.raises(ValueError):
        oai(provider).chat.completions.create(model="m", messages=USER)
    assert provider.count == 1


def test_max_in_flight_with_8_threads(provider: FakeProvider) -> None:
    provider.latency = 0.3
    client = oai(provider)
    results: list[str] = []

    def call() -> None:
        out = client.chat.completions.create(model="m", messages=USER)
        results.append(out.choices[0].message.content or "")

    threads = [threading.Thread(target=call) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and provider.count == 8
    assert provider.max_in_flight == 8
    assert time.monotonic() - start < 1.5


def test_many_concurrent_keep_alive(provider: FakeProvider) -> None:
    client = oai(provider)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(15):
                client.chat.completions.create(model="m", messages=USER)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and provider.count == 240
    assert provider.connections_opened <= 16


def test_fault_rate_is_seeded_and_survived_by_retries() -> None:
    def run() -> list[str | None]:
        with FakeProvider(seed=7, fault_rate=0.3) as fake:
            fake.fault_kinds = (429, 500, 529)
            fake.retry_after = None
            fake.retry_after_ms = "1"
            client = oai(fake, max_retries=6)
            for _ in range(20):
                assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content
            return [r.fault for r in fake.requests]

    faults = run()
    assert faults == run()
    assert len(faults) > 20 and {"429", "500", "503"} & set(f for f in faults if f)


def test_rate_measurement(provider: FakeProvider) -> None:
    client = oai(provider)
    for _ in range(5):
        client.chat.completions.create(model="m", messages=USER)
        time.sleep(0.1)
    assert 300 < provider.requests_per_minute() < 650
    assert provider.peak_in_window(0.15) <= 2
    assert provider.peak_in_window(60) == 5
    assert provider.requests_per_minute(provider=ANTHROPIC) == 0.0


def test_env_points_sdks_at_fake(provider: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in provider.env().items():
        monkeypatch.setenv(key, value)
    assert openai.OpenAI().chat.completions.create(model="m", messages=USER).choices[0].message.content
    assert anthropic.Anthropic().messages.create(model="c", max_tokens=5, messages=USER).content
    assert [r.provider for r in provider.requests] == [OPENAI, ANTHROPIC]


def test_close_is_prompt_with_a_request_in_flight() -> None:
    fake = FakeProvider().start()
    fake.queue_replies(FakeReply(content="slow", delay=30))
    client = oai(fake, max_retries=0, timeout=5)
    failures: list[BaseException] = []

    def call() -> None:
        try:
            client.chat.completions.create(model="m", messages=USER)
        except BaseException as exc:
            failures.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert fake.wait_for(1, timeout=5)
    start = time.monotonic()
    fake.close()
    caller.join(timeout=5)
    assert time.monotonic() - start < 2 and not caller.is_alive()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=USER)
