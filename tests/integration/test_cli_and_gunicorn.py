"""The `prelabel` command: `predict` without Label Studio, and `serve` with two worker processes sharing one
store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import requests
from typer.testing import CliRunner

from prelabel.harness.backend_process import serve_in_background
from prelabel.harness.labelstudio_server import free_port
from prelabel.scripts.cli import app
from prelabel.store import Store
from tests.conftest import SUMMARY_CONFIG, ls_task


def test_predict_prints_one_line_per_task_and_names_bad_ones(make_settings, provider, dialogsum, tmp_path):
    make_settings()
    tasks = tmp_path / "tasks.jsonl"
    rows = [
        {"id": "a", "dialogue": dialogsum[0]["dialogue"]},
        {"id": "b", "text": "no dialogue"},
        {"id": "c", "dialogue": dialogsum[1]["dialogue"]},
    ]
    tasks.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    out = tmp_path / "predictions.jsonl"
    result = CliRunner().invoke(app, ["predict", str(tasks), "--output", str(out)])
    assert result.exit_code == 1  # one task failed
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["task_id"] for line in lines] == ["a", "b", "c"]
    assert lines[0]["rating"] == "good" and lines[0]["label"].startswith("Summary: ")
    assert lines[1]["error"] == "task b: bad input: field 'data.dialogue': is missing"
    assert "result" not in lines[1]["prediction"]
    assert "2 labeled, 1 failed" in result.output


def test_same_family_refusal_at_the_command_line(make_settings):
    make_settings(PRELABEL_ANNOTATOR="openai:gpt-4o", PRELABEL_JUDGE="openai:o3-mini")
    result = CliRunner().invoke(app, ["predict", os.devnull])
    assert result.exit_code == 2 and "refusing to start" in result.output


def test_serve_with_two_workers_shares_the_cache(make_settings, provider, dialogsum, tmp_path):
    settings = make_settings()
    with serve_in_background(free_port(), dict(os.environ), tmp_path / "serve.log", workers=2, threads=4) as backend:
        url = backend.url
        tasks = [ls_task(i, record) for i, record in enumerate(dialogsum[:8])]
        body = {"tasks": tasks, "project": "3.1", "label_config": SUMMARY_CONFIG}

        def post(_: int) -> list:
            return requests.post(f"{url}/predict", json=body, timeout=60).json()["results"]

        with ThreadPoolExecutor(4) as pool:  # four requests spread over both workers
            answers = list(pool.map(post, range(4)))
        assert all(len(answer) == 8 and all("result" in item for item in answer) for answer in answers)
        # Both workers may ask the provider for the same task at once; the answer cached first wins, so every
        # request shows the same summary and rating for a task, whichever worker served it.
        assert all(answer == answers[0] for answer in answers)
        # Every worker read and wrote one store: at most one provider call per task and role got through
        # per worker, and a fifth request is answered from the cache alone.
        calls = provider.count
        assert 16 <= calls <= 32
        post(0)
        assert provider.count == calls
        totals = {row["role"]: row for row in Store(settings.store_path).usage_totals()}
        assert totals["annotator"]["calls"] == 40 and totals["annotator"]["cache_hits"] >= 40 - 2 * 8


def test_serve_refuses_basic_auth_without_a_password(make_settings, tmp_path):
    make_settings()
    for extra in ({"BASIC_AUTH_USER": "ls"}, {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": ""}):
        env = {**os.environ, **extra}
        if "BASIC_AUTH_PASS" not in extra:
            env.pop("BASIC_AUTH_PASS", None)
        # A real process with a time limit: a server that started anyway fails the test instead of hanging it.
        result = subprocess.run(
            [sys.executable, "-m", "prelabel", "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert "BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty" in " ".join(result.stderr.split())
