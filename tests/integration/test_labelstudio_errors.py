"""Label Studio down, refusing or failing: clear errors, retries only where nothing changes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from prelabel.harness.labelstudio_server import free_port
from prelabel.labelstudio import LabelStudioClient, LabelStudioError
from prelabel.scripts.cli import app
from tests.conftest import DATA


def test_label_studio_down_is_a_clear_error():
    client = LabelStudioClient(f"http://127.0.0.1:{free_port()}", "token-123456", retry_wait=0.01)
    with pytest.raises(LabelStudioError, match=r"is not reachable \(list projects\).*LABEL_STUDIO_URL"):
        client.find_project("x")


def test_push_with_label_studio_down_says_so_and_exits(make_settings, monkeypatch):
    make_settings(LABEL_STUDIO_URL=f"http://127.0.0.1:{free_port()}", LABEL_STUDIO_API_KEY="token-123456")
    result = CliRunner().invoke(
        app, ["push", str(DATA / "sentiment" / "amazon.jsonl"), "--sample", "3", "--no-predict"]
    )
    assert result.exit_code == 2
    assert "is not reachable" in result.output and "Traceback" not in result.output


def test_a_wrong_token_names_the_setting(httpserver):
    httpserver.expect_request("/api/projects/").respond_with_json({"detail": "Invalid token."}, status=401)
    client = LabelStudioClient(httpserver.url_for("").rstrip("/"), "wrong-token")
    with pytest.raises(LabelStudioError, match=r"HTTP 401.*Check LABEL_STUDIO_API_KEY"):
        client.find_project("x")
    assert len(httpserver.log) == 1  # a refusal is not retried


def test_server_errors_on_reads_are_retried_then_reported(httpserver):
    httpserver.expect_request("/api/projects/").respond_with_json({"detail": "boom"}, status=503)
    client = LabelStudioClient(httpserver.url_for("").rstrip("/"), "token-123456", retry_wait=0.01)
    with pytest.raises(LabelStudioError, match="HTTP 503"):
        client.find_project("x")
    assert len(httpserver.log) == 4  # four attempts


def test_imports_are_not_retried_so_a_task_is_never_imported_twice(httpserver):
    httpserver.expect_request("/api/projects/5/import", method="POST").respond_with_json({"detail": "x"}, status=500)
    client = LabelStudioClient(httpserver.url_for("").rstrip("/"), "token-123456", retry_wait=0.01)
    with pytest.raises(LabelStudioError, match="import tasks"):
        client.import_tasks(5, [{"data": {"text": "x"}}])
    assert len([entry for entry, _ in httpserver.log if entry.method == "POST"]) == 1
