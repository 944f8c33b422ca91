"""The providers' batch APIs (OpenAI Batch, Anthropic Message Batches) behind one interface.

`BatchAPI` builds a role's request entries, submits them as one job, polls the job and reads its results;
`prelabel.providers.openai.OpenAIBatches` and `prelabel.providers.anthropic.AnthropicBatches` implement it
with the live clients' request bodies and answer parsers. The run that drives them is
`prelabel.labeling.batch`. Like the package itself, this module imports no SDK.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from prelabel.families import ModelRef
from prelabel.providers import CallParams, Completion, describe_error
from prelabel.redact import redact

if TYPE_CHECKING:
    from prelabel.settings import Settings


class BatchError(RuntimeError):
    """A batch API call failed (the message names the model and the HTTP status, and is scrubbed of keys)."""

    def __init__(self, message: str):
        super().__init__(redact(message))


class BatchLimits(BaseModel, frozen=True):
    max_requests: int = Field(gt=0)
    max_bytes: int = Field(gt=0)


# The providers' documented limits per job (decimal megabytes, the smaller reading).
PROVIDER_LIMITS: dict[str, BatchLimits] = {
    "openai": BatchLimits(max_requests=50_000, max_bytes=200_000_000),
    "anthropic": BatchLimits(max_requests=100_000, max_bytes=256_000_000),
}


def custom_id(source_id: str) -> str:
    """A request id both providers accept (Anthropic: ^[a-zA-Z0-9_-]{1,64}$) for any source id."""
    return "p" + hashlib.sha256(source_id.encode("utf-8")).hexdigest()[:40]


class RequestResult(BaseModel):
    """One request's outcome in an ended job: an answer, or an error and whether the request ran at all."""

    custom_id: str
    completion: Completion | None = None
    error: str | None = None
    ran: bool = True

    @field_validator("error")
    @classmethod
    def _scrub_error(cls, error: str | None) -> str | None:
        return redact(error) if error else error  # a result line's error is the provider's text


class JobStatus(BaseModel):
    ended: bool
    status: str
    done: int = 0
    total: int = 0


class BatchJob(Protocol):
    """What an adapter reads of a submitted job (the run's state file keeps more)."""

    @property
    def id(self) -> str: ...

    @property
    def source_ids(self) -> list[str]: ...


class BatchAPI:
    """One role's batch API: build request entries, submit jobs, poll them, read their results."""

    provider: Literal["openai", "anthropic"]

    def __init__(self, ref: ModelRef, limits: BatchLimits):
        self.ref = ref
        self.limits = limits

    def entry(self, cid: str, prompt: str, params: CallParams) -> dict[str, Any]:
        raise NotImplementedError

    def submit(self, entries: list[dict[str, Any]], metadata: dict[str, str]) -> tuple[str, str | None]:
        """The job id and (OpenAI) its input file id."""
        raise NotImplementedError

    def status(self, job: BatchJob) -> JobStatus:
        raise NotImplementedError

    def results(self, job: BatchJob, status: JobStatus) -> Iterator[RequestResult]:
        raise NotImplementedError

    def _fail(self, what: str, error: Exception) -> BatchError:
        return BatchError(f"{what}: {describe_error(self.ref, error)}")


def batch_api_for(settings: Settings, ref: ModelRef, limits: BatchLimits, timeout: float) -> BatchAPI:
    """The batch API of a role's provider, with the same key and endpoint as its live client."""
    # The provider's module (and its SDK) is imported here, on first use, as in `make_client`.
    if ref.provider == "anthropic":
        from prelabel.providers.anthropic import AnthropicBatches, anthropic_sdk

        sdk = anthropic_sdk(
            ref, settings.anthropic_api_key, settings.anthropic_base_url, timeout, settings.prelabel_max_retries
        )
        return AnthropicBatches(ref, limits, sdk)
    from prelabel.providers.openai import OpenAIBatches, openai_sdk

    client = openai_sdk(ref, settings.openai_api_key, settings.openai_base_url, timeout, settings.prelabel_max_retries)
    return OpenAIBatches(ref, limits, client)
