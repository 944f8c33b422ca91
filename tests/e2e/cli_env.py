"""Running `prelabel` commands in-process against the end-to-end backend's fake providers, store and a real
Label Studio."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from prelabel.harness.labelstudio_server import LabelStudioServer
from prelabel.scripts.cli import app
from tests.e2e.conftest import BackendUnderTest


def use_backend_env(
    monkeypatch: pytest.MonkeyPatch,
    backend: BackendUnderTest,
    label_studio: LabelStudioServer,
    workdir: Path,
    **extra: str,
) -> None:
    """The command's environment: the backend's models, fake providers and MODEL_DIR, and Label Studio."""
    for name in list(os.environ):
        if name.startswith(("PRELABEL_", "OPENAI_", "ANTHROPIC_", "BASIC_AUTH_", "LABEL_STUDIO_", "MODEL_DIR")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(workdir)  # no stray .env is read
    settings = backend.settings
    env = {
        "PRELABEL_ANNOTATOR": settings.prelabel_annotator,
        "PRELABEL_JUDGE": settings.prelabel_judge,
        "OPENAI_API_KEY": "sk-e2e-openai-key",
        "ANTHROPIC_API_KEY": "sk-ant-e2e-key",
        "OPENAI_BASE_URL": backend.provider.base_url,
        "ANTHROPIC_BASE_URL": backend.provider.anthropic_base_url,
        "MODEL_DIR": str(settings.model_dir),
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


# Commands set these loggers' levels for the process; later tests in the session expect them untouched.
_PROCESS_LOGGERS = ("", "httpx", "httpx2", "httpcore", "httpcore2", "openai", "anthropic")


def run(*args: object) -> Result:
    levels = {name: logging.getLogger(name).level for name in _PROCESS_LOGGERS}
    handlers = list(logging.getLogger().handlers)
    try:
        return CliRunner().invoke(app, [str(arg) for arg in args])
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger().handlers[:] = handlers
