"""LLM providers: one client per role, built once per engine and awaited on its event loop.

`openai` covers OpenAI and any OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, gateways); `anthropic`
covers Claude. Structured output is a JSON schema on OpenAI-compatible endpoints and a forced tool on
Anthropic. Retries on 408/409/429/5xx with Retry-After follow the SDKs' own policy (prelabel.providers.http).

This module holds what every provider shares and imports no SDK: the call's parameters, its answer, the
errors and the client protocol. Each provider's client, request bodies and batch adapter live in
`prelabel.providers.openai` and `prelabel.providers.anthropic`, imported by `make_client` (and
`prelabel.providers.batch.batch_api_for`) when a client of that provider is built.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, SecretStr, ValidationInfo, field_validator

from prelabel.families import ModelRef
from prelabel.redact import redact

TopLogprobs = list[tuple[str, float]]

NO_KEY_PLACEHOLDER = "not-needed"  # local OpenAI-compatible servers ignore the key, the SDK wants one

# The validation context of text prelabel scrubbed itself before storing it (a cache entry): not scrubbed again.
SCRUBBED: dict[str, bool] = {"scrubbed": True}


class ProviderError(RuntimeError):
    """A call failed after the SDK's retries; the message is safe to show (no prompt, and scrubbed of keys
    here, whoever builds it: a provider's error body may echo the key it was sent)."""

    def __init__(self, message: str):
        super().__init__(redact(message))


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

    # A model's answer is provider text too: whatever it repeats of a key is scrubbed before it is parsed,
    # cached, logged or written anywhere. A cache entry (validated with context SCRUBBED) was scrubbed then.
    @field_validator("text")
    @classmethod
    def _scrub_text(cls, text: str, info: ValidationInfo) -> str:
        return text if _scrubbed(info) else redact(text)

    @field_validator("tokens")
    @classmethod
    def _scrub_tokens(cls, tokens: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if not tokens or _scrubbed(info):
            return tokens
        return [redact(token) for token in tokens]

    @field_validator("top_logprobs")
    @classmethod
    def _scrub_alternatives(cls, top: list[TopLogprobs] | None, info: ValidationInfo) -> list[TopLogprobs] | None:
        if not top or _scrubbed(info):
            return top
        return [[(redact(token), p) for token, p in position] for position in top]


def _scrubbed(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("scrubbed"))


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
    """A live client of one role, awaited on the engine's event loop (prelabel.event_loop)."""

    ref: ModelRef

    async def complete(self, prompt: str, params: CallParams) -> Completion: ...

    async def aclose(self) -> None: ...


def secret_value(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


def credentials(ref: ModelRef, api_key: SecretStr | None, base_url: str | None, missing: str) -> tuple[str, str | None]:
    """The key and endpoint a role's clients use: ProviderError saying `missing` when there is neither (a local
    server needs no key, but the SDKs want one: it gets a placeholder)."""
    key = secret_value(api_key)
    endpoint = ref.base_url or base_url
    if not key and not endpoint:
        raise ProviderError(f"{ref.spec}: {missing}")
    return key or NO_KEY_PLACEHOLDER, endpoint


def describe_error(ref: ModelRef, error: Exception) -> str:
    """A short, key-free description of an SDK error."""
    status = getattr(error, "status_code", None)
    kind = type(error).__name__
    message = getattr(error, "message", None) or str(error)
    message = " ".join(redact(str(message)).split())[:300]  # scrubbed before the cut, so no key is half-kept
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
    transport: str = "aiohttp",
) -> LLMClient:
    # The provider's module, and with it its SDK, is imported here, when its first client is built: importing
    # this package (as the store, the pipeline and every command do) loads neither SDK.
    if ref.provider == "anthropic":
        from prelabel.providers.anthropic import AnthropicClient

        return AnthropicClient(ref, anthropic_api_key, anthropic_base_url, timeout, max_retries, transport)
    from prelabel.providers.openai import OpenAIClient

    return OpenAIClient(ref, openai_api_key, openai_base_url, timeout, max_retries, transport)
