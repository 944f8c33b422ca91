"""End-to-end fixtures: one real Label Studio server for the session, the prelabel backend on real HTTP,
and fake providers behind it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from prelabel.app import create_app
from prelabel.harness.labelstudio_server import LabelStudioServer
from prelabel.settings import Settings
from prelabel.testing import FakeProvider
from tests.conftest import LiveServer, ScriptedLLM


class BackendUnderTest:
    """The prelabel ML backend on 127.0.0.1 with its settings and the scripted LLM behind it."""

    def __init__(self, settings: Settings, llm: ScriptedLLM, provider: FakeProvider, server: LiveServer):
        self.settings = settings
        self.llm = llm
        self.provider = provider
        self.server = server
        self.url = server.url


@pytest.fixture(scope="module")
def backend_factory(
    tmp_path_factory: pytest.TempPathFactory, label_studio: LabelStudioServer
) -> Iterator[Callable[..., BackendUnderTest]]:
    """Backends with the session's Label Studio credentials, as a deployment has them: /webhook reads every
    annotation back from Label Studio with them (pass LABEL_STUDIO_URL="" to start one without)."""
    started: list[tuple[FakeProvider, LiveServer]] = []

    def start(**env: Any) -> BackendUnderTest:
        llm = ScriptedLLM()
        provider = FakeProvider(llm).start()
        values = {
            "PRELABEL_ANNOTATOR": "openai:gpt-4o-mini",
            "PRELABEL_JUDGE": "anthropic:claude-haiku-4-5",
            "OPENAI_API_KEY": "sk-e2e-openai-key",
            "ANTHROPIC_API_KEY": "sk-ant-e2e-key",
            "OPENAI_BASE_URL": provider.base_url,
            "ANTHROPIC_BASE_URL": provider.anthropic_base_url,
            "MODEL_DIR": str(tmp_path_factory.mktemp("model_dir")),
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token or "",
            **env,
        }
        settings = Settings(**values)
        server = LiveServer(create_app(settings))
        started.append((provider, server))
        return BackendUnderTest(settings, llm, provider, server)

    yield start
    for provider, server in started:
        server.close()
        provider.close()


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        time.sleep(interval)
