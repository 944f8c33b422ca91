"""LLM providers: one client per role, built once and shared by every thread.

`openai` covers OpenAI and any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, gateways); `anthropic`
covers Claude. Structured output is a JSON schema on OpenAI-compatible endpoints and a forced tool on
Anthropic. Retries on 408/409/429/5xx with Retry-After are the SDKs' own.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import anthropic
import openai
from pydantic import BaseModel, SecretStr

from prelabel.families import ModelRef

TopLogprobs = list[tuple[str, float]]


class ProviderError(RuntimeError):
    """A call failed after the SDK's retries; the message is safe to show (no keys, no prompt)."""


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0


class Completion(BaseModel):
    text: str
    usage: Usage = Usage()
    tokens: list[str] | None = None
    top_logprobs: list[TopLogprobs] | None = None
    latency_s: float = 0.0
    cached: bool = False


class CallParams(BaseModel, frozen=True):
    """Everything besides the prompt that shapes an answer: part of the cache key."""

    max_tokens: int
    temperature: float = 0.0
    schema_name: str | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False

    def cache_fields(self) -> str:
        """The parameters as JSON, part of every cache key (pydantic's serializer: fast and in field order)."""
        return self.model_dump_json()


class LLMClient(Protocol):
    ref: ModelRef

    def complete(self, prompt: str, params: CallParams) -> Completion: ...


_NO_KEY_PLACEHOLDER = "not-needed"  # local OpenAI-compatible servers ignore the key, the SDK wants one


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


def openai_sdk(
    ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
) -> openai.OpenAI:
    """The SDK client for a role (live calls and the Batch API share it)."""
    key = _secret(api_key)
    endpoint = ref.base_url or base_url
    if not key and not endpoint:
        raise ProviderError(
            f"{ref.spec}: OPENAI_API_KEY is not set (set it, or point PRELABEL_*_BASE_URL at an "
            "OpenAI-compatible server)"
        )
    return openai.OpenAI(
        api_key=key or _NO_KEY_PLACEHOLDER, base_url=endpoint, timeout=timeout, max_retries=max_retries
    )


def openai_chat_body(ref: ModelRef, prompt: str, params: CallParams) -> dict[str, Any]:
    """The chat completions request body of one call: the same for a live call and a batch line."""
    request: dict[str, Any] = {
        "model": ref.model,
        "messages": [{"role": "user", "content": prompt}],
    }
    # Reasoning models take max_completion_tokens and no temperature.
    if ref.model.startswith(("o1", "o3", "o4", "gpt-5")):
        request["max_completion_tokens"] = params.max_tokens
    else:
        request["max_tokens"] = params.max_tokens
        request["temperature"] = params.temperature
    if params.json_schema is not None:
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": params.schema_name or "answer", "schema": params.json_schema, "strict": True},
        }
    if params.logprobs:
        request["logprobs"] = True
        request["top_logprobs"] = 10
    return request


def openai_completion(ref: ModelRef, response: Any, latency: float = 0.0) -> Completion:
    """A Completion from a ChatCompletion (a live answer or the body of a batch result line)."""
    if not response.choices:
        raise ProviderError(f"{ref.spec}: the answer has no choices")
    choice = response.choices[0]
    tokens, top = None, None
    if choice.logprobs is not None and choice.logprobs.content:
        tokens = [item.token for item in choice.logprobs.content]
        top = [
            [(alt.token, alt.logprob) for alt in item.top_logprobs] or [(item.token, item.logprob)]
            for item in choice.logprobs.content
        ]
    usage = response.usage
    return Completion(
        text=choice.message.content or "",
        usage=Usage(
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        ),
        tokens=tokens,
        top_logprobs=top,
        latency_s=latency,
    )


class OpenAIClient:
    def __init__(
        self, ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
    ):
        self.ref = ref
        self._client = openai_sdk(ref, api_key, base_url, timeout, max_retries)

    def complete(self, prompt: str, params: CallParams) -> Completion:
        request = openai_chat_body(self.ref, prompt, params)
        started = time.perf_counter()
        try:
            response = self._client.chat.completions.create(**request)
        except openai.APIError as error:
            raise ProviderError(describe_error(self.ref, error)) from None
        except ValueError as error:  # a 200 whose body is not the API's JSON
            raise ProviderError(f"{self.ref.spec}: malformed response body: {error}") from None
        return openai_completion(self.ref, response, time.perf_counter() - started)


def anthropic_sdk(
    ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
) -> anthropic.Anthropic:
    """The SDK client for a role (live calls and Message Batches share it)."""
    key = _secret(api_key)
    endpoint = ref.base_url or base_url
    if not key and not endpoint:
        raise ProviderError(f"{ref.spec}: ANTHROPIC_API_KEY is not set")
    return anthropic.Anthropic(
        api_key=key or _NO_KEY_PLACEHOLDER, base_url=endpoint, timeout=timeout, max_retries=max_retries
    )


def anthropic_message_body(ref: ModelRef, prompt: str, params: CallParams) -> dict[str, Any]:
    """The messages request body of one call: the same for a live call and a batch request's params."""
    request: dict[str, Any] = {
        "model": ref.model,
        "max_tokens": params.max_tokens,
        # anthropic 2.x takes no temperature: the model's default sampling applies.
        "messages": [{"role": "user", "content": prompt}],
    }
    if params.json_schema is not None:
        name = params.schema_name or "answer"
        request["tools"] = [{"name": name, "description": "Record the answer.", "input_schema": params.json_schema}]
        request["tool_choice"] = {"type": "tool", "name": name}
    return request


def anthropic_completion(response: Any, latency: float = 0.0) -> Completion:
    """A Completion from a Message (a live answer or a succeeded batch result): the forced tool's input as
    JSON, else the text."""
    texts: list[str] = []
    for block in response.content:
        if block.type == "tool_use":
            texts = [json.dumps(block.input)]
            break
        if block.type == "text":
            texts.append(block.text)
    return Completion(
        text="".join(texts),
        usage=Usage(input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens),
        latency_s=latency,
    )


class AnthropicClient:
    def __init__(
        self, ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
    ):
        self.ref = ref
        self._client = anthropic_sdk(ref, api_key, base_url, timeout, max_retries)

    def complete(self, prompt: str, params: CallParams) -> Completion:
        request = anthropic_message_body(self.ref, prompt, params)
        started = time.perf_counter()
        try:
            response = self._client.messages.create(**request)
        except anthropic.APIError as error:
            raise ProviderError(describe_error(self.ref, error)) from None
        except ValueError as error:  # a 200 whose body is not the API's JSON
            raise ProviderError(f"{self.ref.spec}: malformed response body: {error}") from None
        return anthropic_completion(response, time.perf_counter() - started)


def describe_error(ref: ModelRef, error: Exception) -> str:
    """A short, key-free description of an SDK error."""
    status = getattr(error, "status_code", None)
    kind = type(error).__name__
    message = getattr(error, "message", None) or str(error)
    message = " ".join(str(message).split())[:300]
    where = f" (HTTP {status})" if status else ""
    return f"{ref.spec}: {kind}{where}: {message}"


def make_client(
    ref: ModelRef,
    *,
    openai_api_key: SecretStr | None,
    anthropic_api_key: SecretStr | None,
    openai_base_url: str | None,
    anthropic_base_url: str | None,
    timeout: float,
    max_retries: int,
) -> LLMClient:
    if ref.provider == "anthropic":
        return AnthropicClient(ref, anthropic_api_key, anthropic_base_url, timeout, max_retries)
    return OpenAIClient(ref, openai_api_key, openai_base_url, timeout, max_retries)
