"""`prelabel demo --no-wait` end to end: with the local model (no API key), with fake hosted providers, and
failing cleanly when a port is taken."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prelabel.harness.labelstudio_server import LabelStudioServer, free_port
from prelabel.label_interface import parse_label_config
from prelabel.labelstudio import LabelStudioClient
from prelabel.records import reviewed_tasks
from prelabel.testing import FakeProvider
from tests.conftest import ROOT, SUMMARY_CONFIG, ScriptedLLM

pytestmark = pytest.mark.e2e

_SECRET_PREFIXES = ("PRELABEL_", "OPENAI_", "ANTHROPIC_", "LABEL_STUDIO_", "BASIC_AUTH_")


def run_demo(
    work_dir: Path, ls_port: int, backend_port: int, extra_env: dict[str, str], sample: int = 5, timeout: float = 1500
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SECRET_PREFIXES)}
    env.update(extra_env)
    env["COLUMNS"] = "200"
    started = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "prelabel",
            "demo",
            "--no-wait",
            "--ls-port",
            str(ls_port),
            "--backend-port",
            str(backend_port),
            "--sample",
            str(sample),
            "--seed",
            "11",
            "--work-dir",
            str(work_dir),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return completed, time.monotonic() - started


def stored_predictions(work_dir: Path, port: int) -> list:
    """Restart the demo's Label Studio on its data and read what it stored."""
    with LabelStudioServer(work_dir / "label-studio", port=port) as server:
        client = LabelStudioClient(server.url, server.token)
        project = client.find_project("prelabel demo: DialogSum summaries")
        return reviewed_tasks(parse_label_config(SUMMARY_CONFIG), client.export(project.id))


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.localmodel
def test_demo_with_the_local_model(tmp_path):
    ls_port, backend_port = free_port(), free_port()
    completed, first_seconds = run_demo(tmp_path, ls_port, backend_port, {})
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "using a local model" in output
    assert "same-family judge" in output and "huggingface-smollm" in output  # the override is shown
    assert "Log in as admin@prelabel.local with password" in output
    assert port_free(ls_port) and port_free(backend_port)  # --no-wait stopped every server

    # A second run reuses the environments, the model and Label Studio's database, and pushes a fresh round.
    again, second_seconds = run_demo(tmp_path, ls_port, backend_port, {})
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    print(f"demo with the local model: first run {first_seconds:.0f} s, second run {second_seconds:.0f} s")

    records = stored_predictions(tmp_path, ls_port)
    assert len(records) == 10 and len({r.source_id for r in records}) == 10
    assert {r.round for r in records} == {"round-1", "round-2"}
    for record in records:
        assert record.llm_label, record
        assert record.model_version.endswith("smollm2-135m-instruct+smollm2-135m-instruct+SAME-FAMILY")


def test_demo_with_hosted_providers_faked(tmp_path):
    llm = ScriptedLLM()
    llm.rate = lambda conversation, label: 4 if len(conversation) % 2 else 2
    with FakeProvider(llm) as provider:
        ls_port, backend_port = free_port(), free_port()
        completed, _ = run_demo(tmp_path, ls_port, backend_port, provider.env("sk-demo-fake-key"))
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output[-4000:]
        assert "using the hosted pair" in output and "same-family" not in output
        assert provider.count == 10  # five dialogues, annotator and judge each
    records = stored_predictions(tmp_path, ls_port)
    assert len(records) == 5

    # The line to paste for the engineer's path: this Label Studio's URL and a token it accepts.
    [(url, token)] = re.findall(r"^export LABEL_STUDIO_URL=(\S+) LABEL_STUDIO_API_KEY=(\S+)$", output, re.MULTILINE)
    with LabelStudioServer(tmp_path / "label-studio", port=ls_port) as server:
        assert url == server.url and token == server.token
        client = LabelStudioClient(url, token)
        project = client.find_project("prelabel demo: DialogSum summaries")
        # The reviewer's first view: the score column shown, weakest first and unrated tabs.
        views = sorted(client.views(project.id), key=lambda view: view.id)
        assert [view.data["title"] for view in views] == ["Default", "weakest first", "unrated"]
        assert all("tasks:predictions_score" not in view.data["hiddenColumns"]["explore"] for view in views)
    for record in records:
        assert record.llm_label.startswith("Summary: ")
        expected = 4 if len(record.input_text) % 2 else 2
        assert record.llm_level == expected and record.llm_score == expected / 4
        assert str(record.task_id) in output  # the printed table lists every task


def test_demo_stops_everything_when_a_port_is_taken(tmp_path):
    ls_port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        backend_port = blocker.getsockname()[1]
        with FakeProvider(ScriptedLLM()) as provider:
            completed, _ = run_demo(tmp_path, ls_port, backend_port, provider.env(), timeout=600)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1
    assert f"port {backend_port} is in use" in output
    assert port_free(ls_port)  # Label Studio, started before the backend, was stopped
