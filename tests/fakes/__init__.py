"""Fake LLM provider servers for tests, and a pytest fixture that runs one."""

from __future__ import annotations

from typing import Iterator

import pytest

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
    "fake_provider",
    "sample_from_schema",
]


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """A running FakeProvider with the default responder, closed after the test."""
    with FakeProvider(seed=0) as provider:
        yield provider
