"""Fake LLM provider servers on 127.0.0.1 for the tests, the benchmarks and the packaged smoke test: the real
openai and anthropic SDKs talk real HTTP to them, and they can inject 429s, 5xx, timeouts, slow and malformed
answers. `python -m prelabel.testing.serve` runs one in its own process."""

from __future__ import annotations

from .provider_server import (
    ANTHROPIC,
    MALFORMED,
    OPENAI,
    TIMEOUT,
    FakeProvider,
    FakeReply,
    FakeRequest,
    FakeToken,
    FakeTool,
    RecordedRequest,
    default_responder,
    error_body,
    sample_from_schema,
)

__all__ = [
    "ANTHROPIC",
    "MALFORMED",
    "OPENAI",
    "TIMEOUT",
    "FakeProvider",
    "FakeReply",
    "FakeRequest",
    "FakeToken",
    "FakeTool",
    "RecordedRequest",
    "default_responder",
    "error_body",
    "sample_from_schema",
]
