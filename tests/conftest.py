"""Shared fixtures: the shipped data slices, a deterministic 'LLM' behind the fake provider servers, and
settings that point prelabel at them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from werkzeug.serving import make_server

from prelabel import label_config
from prelabel.data import dialogsum_dev
from prelabel.harness.labelstudio_server import LabelStudioServer, free_port
from prelabel.judge import LEVELS
from prelabel.labelstudio import LabelStudioClient
from prelabel.settings import Settings
from prelabel.testing import FakeProvider, FakeReply, FakeRequest

Result = TypeVar("Result")

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
DIALOGSUM = dialogsum_dev()  # package data, shared with the demo
SUMMARY_CONFIG = label_config.read("summarization")
SENTIMENT_CONFIG = label_config.read("sentiment")
# The shipped configs as they were before blind reviews (one rating control shared by judge and reviewer,
# pre-filled by the prediction): what projects made with them still use.
OLD_SUMMARY_CONFIG = (DATA / "label_config_before_blind" / "summarization.xml").read_text(encoding="utf-8")
OLD_SENTIMENT_CONFIG = (DATA / "label_config_before_blind" / "sentiment.xml").read_text(encoding="utf-8")
# The harness's virtual environments are the checkout's, whatever folder a test runs in (`make` sets these too).
os.environ.setdefault("PRELABEL_LS_VENV", str(ROOT / ".venv-labelstudio"))
os.environ.setdefault("PRELABEL_LOCAL_VENV", str(ROOT / ".venv-localmodel"))
HARNESS_ENV = ("PRELABEL_LS_VENV", "PRELABEL_LOCAL_VENV", "PRELABEL_CACHE_DIR")

_POSITIVE_WORDS = {"good", "great", "excellent", "love", "best", "nice", "happy", "recommend", "works", "fine"}


def load_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


@pytest.fixture(scope="session")
def dialogsum() -> list[dict[str, Any]]:
    return load_jsonl(DIALOGSUM)


@pytest.fixture(scope="session")
def sentiment() -> list[dict[str, Any]]:
    return load_jsonl(DATA / "sentiment" / "amazon.jsonl")


def section(prompt: str, heading: str) -> str:
    """The fenced text after "<heading>:\\n" (prompts fence their data), else up to the next "Word:" line."""
    fenced = re.search(rf"{heading}:\n(`{{3,}})\n(.*?)\n\1(?:\n|$)", prompt, re.DOTALL)
    if fenced:
        return fenced.group(2).strip()
    match = re.search(rf"{heading}:\n(.*?)(?:\n[A-Z][a-z]+:\n|\n[A-Z][a-z]+:$|$)", prompt, re.DOTALL)
    return match.group(1).strip() if match else ""


class ScriptedLLM:
    """A deterministic stand-in for both roles, behind the fake provider.

    Annotator: "Summary: <first turn>" (so tests can check order), or a lexicon sentiment label.
    Judge: the level `rate(conversation, label)` returns (default: good), as JSON or a tool call; with
    logprobs asked, the rating token carries `judge_top` alternatives when set.
    """

    def __init__(self) -> None:
        self.rate: Callable[[str, str], int] = lambda conversation, label: 3
        self.judge_top: list[tuple[str, float]] | None = None
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def is_judge(self, request: FakeRequest) -> bool:
        schema = request.wants_json_schema or (request.tool.input_schema if request.tool else None)
        return bool(schema and "rating" in schema.get("properties", {}))

    def __call__(self, request: FakeRequest) -> FakeReply | str | dict:
        prompt = request.prompt_text
        with self._lock:
            self.calls.append("judge" if self.is_judge(request) else "annotator")
        if self.is_judge(request):
            return self._judge(request, prompt)
        schema = request.wants_json_schema or (request.tool.input_schema if request.tool else None)
        if schema and "label" in schema.get("properties", {}):
            text = section(prompt, "Text").lower()
            label = "positive" if any(word in text for word in _POSITIVE_WORDS) else "negative"
            return {"label": label} if request.tool else FakeReply(content=json.dumps({"label": label}))
        conversation = section(prompt, "Conversation")
        first_turn = conversation.splitlines()[0] if conversation else ""
        return f"Summary: {first_turn.split(':', 1)[-1].strip()}"

    def _judge(self, request: FakeRequest, prompt: str) -> FakeReply | dict:
        conversation = section(prompt, "Conversation") or section(prompt, "Text")
        label = section(prompt, "Summary") or section(prompt, "Label")
        level = self.rate(conversation, label)
        answer = {"rating": LEVELS[level], "reason": f"rated {LEVELS[level]} for its coverage."}
        if request.tool:
            return answer
        content = json.dumps(answer)
        if request.wants_logprobs and self.judge_top is not None:
            prefix, rest = content.split(LEVELS[level], 1)
            tokens = [(prefix, 0.0, [(prefix, 0.0)]), (LEVELS[level], -0.1, self.judge_top), (rest, 0.0, [(rest, 0.0)])]
            return FakeReply(
                content=content,
                logprobs=[{"token": t, "logprob": lp, "top_logprobs": top} for t, lp, top in tokens],
            )
        return FakeReply(content=content)


def run_async(coroutine: Coroutine[Any, Any, Result]) -> Result:
    """A coroutine run to its end on a fresh event loop, in a thread of its own: the browser tests' Playwright
    keeps a loop in the main thread for the whole session, where asyncio.run would be refused."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


@pytest.fixture(autouse=True)
def close_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every engine a test builds is closed after it (its event loop thread and HTTP sessions), whether or not
    the test closed it: many tests build one in a line and only read its results."""
    from prelabel.engine import Engine

    built: list[Engine] = []
    original = Engine.__init__

    def recording(self: Engine, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Engine, "__init__", recording)
    yield
    for engine in built:
        engine.close()


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def provider(llm: ScriptedLLM) -> Iterator[FakeProvider]:
    with FakeProvider(llm, seed=0) as fake:
        yield fake


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """A running FakeProvider with the default responder, closed after the test."""
    with FakeProvider(seed=0) as fake:
        yield fake


def fake_provider_settings(provider: FakeProvider, model_dir: Path, **overrides: str) -> Settings:
    """Settings for an engine built in a test around a fake provider: both roles pointed at it, the store in
    `model_dir`; keyword arguments are further settings by their environment names."""
    return Settings(
        PRELABEL_ANNOTATOR="openai:gpt-4o-mini",
        PRELABEL_JUDGE="anthropic:claude-haiku-4-5",
        OPENAI_API_KEY="sk-test",
        ANTHROPIC_API_KEY="sk-test",
        OPENAI_BASE_URL=provider.base_url,
        ANTHROPIC_BASE_URL=provider.anthropic_base_url,
        MODEL_DIR=str(model_dir),
        **overrides,
    )


@pytest.fixture
def make_settings(provider: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Settings pointing both roles at the fake provider; keyword arguments are environment overrides."""
    for name in list(__import__("os").environ):
        if name.startswith(("PRELABEL_", "OPENAI_", "ANTHROPIC_", "BASIC_AUTH_", "LABEL_STUDIO_")) and (
            name not in HARNESS_ENV
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env is read

    def build(**overrides: Any) -> Settings:
        env = {
            "PRELABEL_ANNOTATOR": "openai:gpt-4o-mini",
            "PRELABEL_JUDGE": "anthropic:claude-haiku-4-5",
            "OPENAI_API_KEY": "sk-test-openai-0000",
            "ANTHROPIC_API_KEY": "sk-ant-test-0000",
            "OPENAI_BASE_URL": provider.base_url,
            "ANTHROPIC_BASE_URL": provider.anthropic_base_url,
            "PRELABEL_MAX_RETRIES": "2",
            "PRELABEL_TIMEOUT": "5",
            "MODEL_DIR": str(tmp_path / "model_dir"),
            **{key: str(value) for key, value in overrides.items()},
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings()

    return build


class LiveServer:
    """A WSGI app served on 127.0.0.1 in a thread: real HTTP, as Label Studio would call it."""

    def __init__(self, app: Any):
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


@pytest.fixture
def serve_app() -> Iterator[Callable[[Any], LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        servers.append(LiveServer(app))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ls_task(task_id: int, record: dict[str, Any], key: str = "dialogue") -> dict[str, Any]:
    """A task as Label Studio sends it to /predict."""
    return {"id": task_id, "data": {key: record[key]}, "meta": {}, "annotations": [], "predictions": []}


# One real Label Studio for the whole session, shared by the end-to-end and browser tests.
@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    data_dir = Path(os.environ.get("PRELABEL_E2E_LS_DIR") or tmp_path_factory.mktemp("label-studio"))
    server = LabelStudioServer(data_dir, port=free_port())
    server.start(timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio: LabelStudioServer) -> LabelStudioClient:
    return LabelStudioClient(label_studio.url, label_studio.token)
