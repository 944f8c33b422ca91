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

from backend.families import ModelRef

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

    def cache_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class LLMClient(Protocol):
    ref: ModelRef

    def complete(self, prompt: str, params: CallParams) -> Completion: ...


_NO_KEY_PLACEHOLDER = "not-needed"  # local OpenAI-compatible servers ignore the key, the SDK wants one


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


class OpenAIClient:
    def __init__(
        self, ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
    ):
        self.ref = ref
        key = _secret(api_key)
        endpoint = ref.base_url or base_url
        if not key and not endpoint:
            raise ProviderError(
                f"{ref.spec}: OPENAI_API_KEY is not set (set it, or point PRELABEL_*_BASE_URL at an "
                "OpenAI-compatible server)"
            )
        self._client = openai.OpenAI(
            api_key=key or _NO_KEY_PLACEHOLDER, base_url=endpoint, timeout=timeout, max_retries=max_retries
        )
        # Reasoning models take max_completion_tokens and no temperature.
        self._reasoning = ref.model.startswith(("o1", "o3", "o4", "gpt-5"))

    def complete(self, prompt: str, params: CallParams) -> Completion:
        request: dict[str, Any] = {
            "model": self.ref.model,
            "messages": [{"role": "user", "content": prompt}],
        }
        if self._reasoning:
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
        started = time.perf_counter()
        try:
            response = self._client.chat.completions.create(**request)
        except openai.APIError as error:
            raise ProviderError(_describe(self.ref, error)) from None
        except ValueError as error:  # a 200 whose body is not the API's JSON
            raise ProviderError(f"{self.ref.spec}: malformed response body: {error}") from None
        latency = time.perf_counter() - started
        if not response.choices:
            raise ProviderError(f"{self.ref.spec}: the answer has no choices")
        choice = response.choices[0]
        tokens, top = None, None
        if choice.logprobs is not None and choice.logprobs.content:
            tokens = [item.token for item in choice.logprobs.content]
            top = [[(alt.token, alt.logprob) for alt in item.top_logprobs] or [(item.token, item.logprob)]
                   for item in choice.logprobs.content]
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


class AnthropicClient:
    def __init__(
        self, ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
    ):
        self.ref = ref
        key = _secret(api_key)
        endpoint = ref.base_url or base_url
        if not key and not endpoint:
            raise ProviderError(f"{ref.spec}: ANTHROPIC_API_KEY is not set")
        self._client = anthropic.Anthropic(
            api_key=key or _NO_KEY_PLACEHOLDER, base_url=endpoint, timeout=timeout, max_retries=max_retries
        )

    def complete(self, prompt: str, params: CallParams) -> Completion:
        request: dict[str, Any] = {
            "model": self.ref.model,
            "max_tokens": params.max_tokens,
            # anthropic 2.x takes no temperature: the model's default sampling applies.
            "messages": [{"role": "user", "content": prompt}],
        }
        if params.json_schema is not None:
            name = params.schema_name or "answer"
            request["tools"] = [{"name": name, "description": "Record the answer.", "input_schema": params.json_schema}]
            request["tool_choice"] = {"type": "tool", "name": name}
        started = time.perf_counter()
        try:
            response = self._client.messages.create(**request)
        except anthropic.APIError as error:
            raise ProviderError(_describe(self.ref, error)) from None
        except ValueError as error:  # a 200 whose body is not the API's JSON
            raise ProviderError(f"{self.ref.spec}: malformed response body: {error}") from None
        latency = time.perf_counter() - started
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


def _describe(ref: ModelRef, error: Exception) -> str:
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
