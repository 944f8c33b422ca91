"""OpenAI and OpenAI-compatible endpoints: the chat completions request body and answer, the live client (async,
on the engine's loop), and the Batch API adapter (the same bodies and answers, as JSONL lines, through the
SDK's blocking client)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, Final

import openai  # the SDK: absolute imports never resolve to this module
from openai.types.chat import ChatCompletion
from pydantic import SecretStr, ValidationError

from prelabel.families import ModelRef
from prelabel.providers import (
    CallParams,
    Completion,
    ProviderError,
    Usage,
    credentials,
    describe_error,
)
from prelabel.providers.batch import BatchAPI, BatchJob, BatchLimits, JobStatus, RequestResult, custom_id
from prelabel.providers.http import JSON_CONTENT, FastPost, json_bytes
from prelabel.redact import redact

CHAT_ENDPOINT: Final = "/v1/chat/completions"

log = logging.getLogger("prelabel")


def openai_credentials(ref: ModelRef, api_key: SecretStr | None, base_url: str | None) -> tuple[str, str | None]:
    """The key and endpoint a role's clients use (ProviderError when there is neither)."""
    missing = "OPENAI_API_KEY is not set (set it, or point PRELABEL_*_BASE_URL at an OpenAI-compatible server)"
    return credentials(ref, api_key, base_url, missing)


def openai_sdk(
    ref: ModelRef, api_key: SecretStr | None, base_url: str | None, timeout: float, max_retries: int
) -> openai.OpenAI:
    """The SDK's (blocking) client for a role's Batch API jobs."""
    key, endpoint = openai_credentials(ref, api_key, base_url)
    return openai.OpenAI(api_key=key, base_url=endpoint, timeout=timeout, max_retries=max_retries)


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


# What a server that does not take a request parameter answers: 400 or 422 (llama.cpp, vLLM), 501.
REFUSED_PARAMETER_STATUSES = frozenset({400, 422, 501})


class OpenAIClient:
    """Live chat completions, awaited on the engine's loop (see prelabel.providers.http for the transport)."""

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
        key, endpoint = openai_credentials(ref, api_key, base_url)
        self._client = openai.AsyncOpenAI(api_key=key, base_url=endpoint, timeout=timeout, max_retries=max_retries)
        self._fast = FastPost(self._client, timeout, max_retries) if transport == "aiohttp" else None
        # Set once this endpoint refused log-probabilities: the judge then asks for the plain level only.
        self.logprobs_refused: str | None = None

    async def complete(self, prompt: str, params: CallParams) -> Completion:
        if params.logprobs and self.logprobs_refused is not None:
            params = params.model_copy(update={"logprobs": False})
        try:
            return await self._complete(prompt, params)
        except openai.APIStatusError as error:
            if not params.logprobs or error.status_code not in REFUSED_PARAMETER_STATUSES:
                raise ProviderError(describe_error(self.ref, error)) from None
            refusal = describe_error(self.ref, error)
        # Asked once more without log-probabilities; only if that works are they refused for good.
        completion = await self._complete(prompt, params.model_copy(update={"logprobs": False}), fail=refusal)
        if self.logprobs_refused is None:
            self.logprobs_refused = refusal
            log.warning(
                "%s refused log-probabilities (%s); asking without them from now on: ratings are the plain level, "
                "not the G-Eval expectation (set PRELABEL_JUDGE_LOGPROBS=0 to skip the first try)",
                self.ref.spec,
                refusal,
            )
        return completion

    async def _complete(self, prompt: str, params: CallParams, fail: str | None = None) -> Completion:
        body = json_bytes(openai_chat_body(self.ref, prompt, params))
        started = time.perf_counter()
        try:
            if self._fast is not None:
                data = await self._fast.post("/chat/completions", body)
            else:
                data = await self._client.post("/chat/completions", content=body, options=JSON_CONTENT, cast_to=object)
            response = ChatCompletion.model_validate(data)  # validated once, at the boundary
        except openai.APIStatusError as error:
            if fail is not None:  # the retry without log-probabilities failed too: the first refusal was not theirs
                second = describe_error(self.ref, error)
                raise ProviderError(f"{second} (first, with log-probabilities: {fail})") from None
            raise
        except openai.APIError as error:
            raise ProviderError(describe_error(self.ref, error)) from None
        except ValueError as error:  # a 200 whose body is not JSON, or not a chat completion
            raise ProviderError(f"{self.ref.spec}: malformed response body: {redact(str(error))[:300]}") from None
        return openai_completion(self.ref, response, time.perf_counter() - started)

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        await self._client.close()


class OpenAIBatches(BatchAPI):
    """OpenAI Batch: a JSONL file of {custom_id, method, url, body} lines, uploaded with purpose "batch"."""

    provider = "openai"
    ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
    UNRUN_CODES = frozenset({"batch_expired", "batch_cancelled"})

    def __init__(self, ref: ModelRef, limits: BatchLimits, client: openai.OpenAI):
        super().__init__(ref, limits)
        self.client = client

    def entry(self, cid: str, prompt: str, params: CallParams) -> dict[str, Any]:
        return {
            "custom_id": cid,
            "method": "POST",
            "url": CHAT_ENDPOINT,
            "body": openai_chat_body(self.ref, prompt, params),
        }

    def submit(self, entries: list[dict[str, Any]], metadata: dict[str, str]) -> tuple[str, str | None]:
        data = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries).encode("utf-8")
        try:
            uploaded = self.client.files.create(
                file=("prelabel-batch.jsonl", data, "application/jsonl"), purpose="batch"
            )
            batch = self.client.batches.create(
                input_file_id=uploaded.id, endpoint=CHAT_ENDPOINT, completion_window="24h", metadata=metadata
            )
        except openai.APIError as error:
            raise self._fail("submitting an OpenAI batch", error) from None
        return batch.id, uploaded.id

    def status(self, job: BatchJob) -> JobStatus:
        try:
            batch = self.client.batches.retrieve(job.id)
        except openai.APIError as error:
            raise self._fail(f"polling OpenAI batch {job.id}", error) from None
        counts = batch.request_counts
        done = (counts.completed + counts.failed) if counts else 0
        return JobStatus(
            ended=batch.status in self.ENDED,
            status=batch.status,
            done=done,
            total=counts.total if counts else len(job.source_ids),
        )

    def results(self, job: BatchJob, status: JobStatus) -> Iterator[RequestResult]:
        try:
            batch = self.client.batches.retrieve(job.id)
            if batch.status == "failed":  # the file was rejected as a whole: nothing ran
                reasons = (
                    "; ".join(e.message or e.code or "" for e in (batch.errors.data or [])) if batch.errors else ""
                )
                for sid in job.source_ids:
                    yield RequestResult(
                        custom_id=custom_id(sid), error=f"batch {job.id} failed: {reasons or 'no reason given'}"
                    )
                return
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    for line in self.client.files.content(file_id).iter_lines():
                        if line.strip():
                            yield self._result(job, json.loads(line))
        except openai.APIError as error:
            raise self._fail(f"reading the results of OpenAI batch {job.id}", error) from None

    def _result(self, job: BatchJob, line: dict[str, Any]) -> RequestResult:
        cid = str(line.get("custom_id"))
        error = line.get("error")
        if error:
            code = error.get("code") or "error"
            return RequestResult(
                custom_id=cid,
                error=f"batch {job.id}: {code}: {error.get('message') or ''}".strip(),
                ran=code not in self.UNRUN_CODES,
            )
        response = line.get("response") or {}
        body = response.get("body") or {}
        status = response.get("status_code")
        if status != 200:
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return RequestResult(custom_id=cid, error=f"batch {job.id}: HTTP {status}: {message or body}")
        try:
            return RequestResult(
                custom_id=cid, completion=openai_completion(self.ref, ChatCompletion.model_validate(body))
            )
        except (ValidationError, ProviderError) as bad:
            return RequestResult(custom_id=cid, error=f"batch {job.id}: malformed result: {redact(str(bad))[:300]}")
