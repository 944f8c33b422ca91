"""Anthropic (Claude): the messages request body and answer, the live client (async, on the engine's loop), and
the Message Batches adapter (the same bodies and answers, in batches, through the SDK's blocking client)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic  # the SDK: absolute imports never resolve to this module
from anthropic.types import Message
from pydantic import SecretStr

from prelabel.families import ModelRef
from prelabel.providers import (
    CallParams,
    Completion,
    ProviderError,
    Usage,
    credentials,
    describe_error,
)
from prelabel.providers.batch import BatchAPI, BatchJob, BatchLimits, JobStatus, RequestResult
from prelabel.providers.http import JSON_CONTENT, FastPost, json_bytes
from prelabel.redact import redact


def anthropic_credentials(ref: ModelRef, api_key: SecretStr | None, base_url: str | None) -> tuple[str, str | None]:
    """The key and endpoint a role's clients use (ProviderError when there is neither)."""
    return credentials(ref, api_key, base_url, "ANTHROPIC_API_KEY is not set")


def anthropic_sdk(
    ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
) -> anthropic.Anthropic:
    """The SDK's (blocking) client for a role's Message Batches."""
    key, endpoint = anthropic_credentials(ref, api_key, base_url)
    return anthropic.Anthropic(api_key=key, base_url=endpoint, timeout=timeout, max_retries=max_retries)


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
    """Live messages, awaited on the engine's loop (see prelabel.providers.http for the transport)."""

    def __init__(
        self,
        ref: ModelRef,
        api_key: SecretStr | None,
        base_url: str | None,
        timeout: float,
        max_retries: int,
        transport: str = "aiohttp",
    ):
        self.ref = ref
        key, endpoint = anthropic_credentials(ref, api_key, base_url)
        self._client = anthropic.AsyncAnthropic(
            api_key=key, base_url=endpoint, timeout=timeout, max_retries=max_retries
        )
        self._fast = FastPost(self._client, timeout, max_retries) if transport == "aiohttp" else None

    async def complete(self, prompt: str, params: CallParams) -> Completion:
        body = json_bytes(anthropic_message_body(self.ref, prompt, params))
        started = time.perf_counter()
        try:
            if self._fast is not None:
                data = await self._fast.post("/v1/messages", body)
            else:
                data = await self._client.post("/v1/messages", content=body, options=JSON_CONTENT, cast_to=object)
            response = Message.model_validate(data)  # validated once, at the boundary
        except anthropic.APIError as error:
            raise ProviderError(describe_error(self.ref, error)) from None
        except ValueError as error:  # a 200 whose body is not JSON, or not a message
            raise ProviderError(f"{self.ref.spec}: malformed response body: {redact(str(error))[:300]}") from None
        return anthropic_completion(response, time.perf_counter() - started)

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        await self._client.close()


class AnthropicBatches(BatchAPI):
    """Anthropic Message Batches: {requests: [{custom_id, params}]}, results as JSONL from results_url."""

    provider = "anthropic"

    def __init__(self, ref: ModelRef, limits: BatchLimits, client: anthropic.Anthropic):
        super().__init__(ref, limits)
        self.client = client

    def entry(self, cid: str, prompt: str, params: CallParams) -> dict[str, Any]:
        return {"custom_id": cid, "params": anthropic_message_body(self.ref, prompt, params)}

    def submit(self, entries: list[dict[str, Any]], metadata: dict[str, str]) -> tuple[str, str | None]:
        try:
            batch = self.client.messages.batches.create(requests=entries)  # type: ignore[arg-type]
        except anthropic.APIError as error:
            raise self._fail("submitting an Anthropic message batch", error) from None
        return batch.id, None

    def status(self, job: BatchJob) -> JobStatus:
        try:
            batch = self.client.messages.batches.retrieve(job.id)
        except anthropic.APIError as error:
            raise self._fail(f"polling Anthropic message batch {job.id}", error) from None
        counts = batch.request_counts
        done = counts.succeeded + counts.errored + counts.canceled + counts.expired
        return JobStatus(
            ended=batch.processing_status == "ended",
            status=batch.processing_status,
            done=done,
            total=done + counts.processing,
        )

    def results(self, job: BatchJob, status: JobStatus) -> Iterator[RequestResult]:
        try:
            for line in self.client.messages.batches.results(job.id):
                result = line.result
                if result.type == "succeeded":
                    yield RequestResult(custom_id=line.custom_id, completion=anthropic_completion(result.message))
                elif result.type == "errored":
                    detail = result.error.error
                    yield RequestResult(
                        custom_id=line.custom_id, error=f"batch {job.id}: {detail.type}: {detail.message}"
                    )
                else:  # expired or canceled: never ran
                    yield RequestResult(
                        custom_id=line.custom_id, error=f"batch {job.id}: request {result.type}", ran=False
                    )
        except anthropic.APIError as error:
            raise self._fail(f"reading the results of Anthropic message batch {job.id}", error) from None
