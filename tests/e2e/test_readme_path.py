"""The README's engineer path runs as written: every `prelabel ...` line of its bash block, through the installed
`prelabel` entry point, from the repository root, against a real Label Studio and fake providers.

The `export` lines name the environment the test supplies instead (fake provider keys and URLs, the session's
Label Studio and its token); the review between push and pull is done through Label Studio's API, as a reviewer
would submit it; `prelabel serve ... &` is started as a background process on a free port (the README's port is
replaced in that line and in the `--backend-url` that points at it). A line of any other kind, a file the
commands name that is missing, or a command that fails makes the test fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from prelabel.harness.labelstudio_server import free_port
from prelabel.label_interface import parse_label_config
from prelabel.records import ROUND_FIELD, reviewed_tasks
from prelabel.review_tabs import PREVIEW_FIELD
from prelabel.testing import FakeProvider
from tests.conftest import ROOT, SUMMARY_CONFIG, ScriptedLLM

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
PRELABEL = Path(sys.executable).parent / "prelabel"  # the entry point `source .venv/bin/activate` puts first
SUPPLIED = {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"}
CONFIG = parse_label_config(SUMMARY_CONFIG)
_CLEARED = ("PRELABEL_", "OPENAI_", "ANTHROPIC_", "LABEL_STUDIO_", "BASIC_AUTH_", "MODEL_DIR")
_HARNESS = ("PRELABEL_LS_VENV", "PRELABEL_LOCAL_VENV", "PRELABEL_CACHE_DIR")


@dataclass
class Line:
    text: str  # as the README has it
    env: dict[str, str] = field(default_factory=dict)  # leading NAME=value assignments
    argv: list[str] = field(default_factory=list)
    background: bool = False

    @property
    def subcommand(self) -> str:
        return self.argv[1] if len(self.argv) > 1 else ""


def engineer_block(text: str) -> str:
    """The first bash block of the "The engineer's path" section."""
    match = re.search(r"^## The engineer's path\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert match, "README.md has no '## The engineer's path' section"
    block = re.search(r"^```bash\n(.*?)^```", match.group(1), re.DOTALL | re.MULTILINE)
    assert block, "the engineer's path section has no ```bash block"
    return block.group(1)


def parse_block(block: str) -> tuple[list[Line], list[Line]]:
    """(environment lines: source/export, command lines: prelabel ...); any other line fails the test."""
    environment, commands = [], []
    for raw in block.replace("\\\n", " ").splitlines():
        words = shlex.split(raw, comments=True)
        if not words:
            continue
        line = Line(text=raw.strip())
        if words[-1] == "&":
            line.background, words = True, words[:-1]
        if words[0] in ("source", "export"):
            line.argv = words
            environment.append(line)
            continue
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, value = words.pop(0).split("=", 1)
            line.env[name] = value
        assert words and words[0] == "prelabel", f"README engineer path: a line the test cannot run: {raw!r}"
        line.argv = words
        commands.append(line)
    return environment, commands


def test_the_readme_block_parses_into_the_documented_steps():
    """The block's shape, read without running anything: what the full run below relies on."""
    environment, commands = parse_block(engineer_block(README.read_text(encoding="utf-8")))
    assert [line.argv[0] for line in environment] == ["source", "export", "export"]
    words = [word for line in environment if line.argv[0] == "export" for word in line.argv[1:]]
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word) for word in words), words  # NAME=value, nothing else
    exported = {word.split("=", 1)[0] for word in words}
    assert exported == SUPPLIED, exported
    assert [line.subcommand for line in commands] == ["push", "serve", "push", "pull", "push", "export"]
    assert [line.background for line in commands] == [False, True, False, False, False, False]


@pytest.fixture
def repo_outputs(tmp_path: Path) -> Iterator[list[Path]]:
    """The files the block writes into the repository root, set aside before and put back after the test."""
    outputs = [ROOT / "corrections.jsonl", ROOT / "dataset"]
    saved = tmp_path / "saved"
    saved.mkdir()
    for path in outputs:
        if path.exists():
            shutil.move(str(path), saved / path.name)
    try:
        yield outputs
    finally:
        for path in outputs:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            if (saved / path.name).exists():
                shutil.move(str(saved / path.name), path)


@dataclass
class Run:
    env: dict[str, str]
    port_from: str
    port_to: str
    background: list[subprocess.Popen[str]] = field(default_factory=list)

    def argv(self, line: Line) -> list[str]:
        # The README's port is taken by `make demo`'s backend on a real machine; here any free one does.
        return [PRELABEL, *(word.replace(self.port_from, self.port_to) for word in line.argv[1:])]

    def __call__(self, line: Line) -> str:
        """Run the line; its output (stdout and stderr: the console writes to both)."""
        completed = subprocess.run(
            self.argv(line),
            cwd=ROOT,
            env={**self.env, **line.env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, f"`{line.text}` exited {completed.returncode}:\n{output[-4000:]}"
        return " ".join(output.split())  # the console wraps long lines

    def start(self, line: Line, log: Path) -> str:
        handle = log.open("w")
        process = subprocess.Popen(
            self.argv(line), cwd=ROOT, env={**self.env, **line.env}, stdout=handle, stderr=subprocess.STDOUT, text=True
        )
        self.background.append(process)
        url = f"http://127.0.0.1:{self.port_to}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"`{line.text}` exited {process.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"`{line.text}` not answering after 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def tasks_by_round(ls_client: Any, project_id: int) -> dict[str, list[dict[str, Any]]]:
    rounds: dict[str, list[dict[str, Any]]] = {}
    for task in ls_client.export(project_id):
        rounds.setdefault(task["data"][ROUND_FIELD], []).append(task)
    return rounds


def test_the_engineers_path_runs_as_written(label_studio, ls_client, tmp_path, repo_outputs):
    environment, commands = parse_block(engineer_block(README.read_text(encoding="utf-8")))
    serve = next(line for line in commands if line.background)
    port_from = next(word for word in serve.argv if word.isdigit())
    assert any(f"localhost:{port_from}" in word for line in commands for word in line.argv), (
        "no push points --backend-url at the port `prelabel serve` listens on"
    )
    for line in environment:  # `source` names the checkout's virtual environment
        if line.argv[0] == "source":
            assert line.argv[1] == ".venv/bin/activate", line.text
    for line in commands:  # every file a command names is in the checkout
        for word in [*line.argv, *line.env.values()]:
            if word.endswith((".jsonl", ".txt")) and "corrections" not in word:
                assert (ROOT / word).is_file(), f"`{line.text}` names {word}, which is not in the repository"

    title = next(line.argv[line.argv.index("--project") + 1] for line in commands if "--project" in line.argv)
    existing = ls_client.find_project(title)
    if existing is not None:  # a Label Studio kept between runs (PRELABEL_E2E_LS_DIR): start the project afresh
        ls_client.sdk.projects.delete(id=existing.id)

    with FakeProvider(ScriptedLLM()) as provider:
        env = {key: value for key, value in os.environ.items() if not key.startswith(_CLEARED) or key in _HARNESS}
        env.update(provider.env("sk-readme-fake-key"))
        env.update(
            LABEL_STUDIO_URL=label_studio.url,
            LABEL_STUDIO_API_KEY=label_studio.token,
            MODEL_DIR=str(tmp_path / "model_dir"),
            PATH=f"{PRELABEL.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            COLUMNS="200",
        )
        run = Run(env, port_from=port_from, port_to=str(free_port()))
        try:
            steps = iter(commands)

            # 1. a qualitative round of 15, labelled and rated here, imported with their predictions
            first = next(steps)
            output = run(first)
            assert "pushed 15 tasks" in output and "15 with predictions" in output, output
            project_id = ls_client.find_project(title).id
            [round_one] = tasks_by_round(ls_client, project_id).values()
            assert len(round_one) == 15 and all(task["predictions"] for task in round_one)

            # ...or Label Studio asks the backend `prelabel serve` runs
            backend_url = run.start(next(steps), tmp_path / "serve.log")
            second = next(steps)
            output = run(second)
            assert "pushed 15 tasks" in output, output
            rounds = tasks_by_round(ls_client, project_id)
            assert len(rounds) == 2 and sum(map(len, rounds.values())) == 30
            assert all(task["predictions"] for tasks in rounds.values() for task in tasks), "the backend predicted"
            backends = [b.url for b in ls_client.sdk.ml.list(project=project_id)]
            assert [url.replace("localhost", "127.0.0.1") for url in backends] == [backend_url], backends

            # The review, through the API: three summaries corrected and rated bad, one accepted as excellent.
            reviewed = round_one[:4]
            for index, task in enumerate(reviewed):
                label = f"Corrected summary {index}." if index < 3 else None
                records = reviewed_tasks(CONFIG, [task])
                result = CONFIG.review_result(label or records[0].llm_label or "", 1 if label else 4)
                ls_client.sdk.annotations.create(id=task["id"], project=project_id, result=result)

            # 2. pull: agreement per prompt version and the corrections file
            output = run(next(steps))
            assert "4 of 30 tasks reviewed" in output, output
            corrections = [json.loads(line) for line in (ROOT / "corrections.jsonl").read_text().splitlines()]
            assert sorted(row["corrected_label"] for row in corrections)[:3] == [
                f"Corrected summary {index}." for index in range(3)
            ]

            # 3. the revised prompt (the example shipped in prompts/) labels another fresh round
            third = next(steps)
            assert "PRELABEL_ANNOTATOR_PROMPT" in third.env, third.text
            output = run(third)
            assert "pushed 15 tasks" in output and "15 with predictions" in output, output
            rounds = tasks_by_round(ls_client, project_id)
            assert len(rounds) == 3 and len({t["data"]["source_id"] for ts in rounds.values() for t in ts}) == 45
            versions = {
                name: {p["model_version"] for t in tasks for p in t["predictions"]} for name, tasks in rounds.items()
            }
            newest = max(rounds, key=lambda name: int(name.rsplit("-", 1)[1]))
            assert len(versions[newest]) == 1 and versions[newest].isdisjoint(versions["round-1"]), versions

            # 4. the dataset: the reviewers' corrections in it, the Data Manager's preview field nowhere
            run(next(steps))
            files = [path for path in (ROOT / "dataset").rglob("*") if path.is_file()]
            assert files, "export wrote no files"
            text = "\n".join(path.read_text(errors="replace") for path in files)
            for index in range(3):
                assert f"Corrected summary {index}." in text  # the reviewer's label, whatever the LLM's rating
            assert PREVIEW_FIELD not in text
            assert next(steps, None) is None
        finally:
            run.stop()
            # The session's Label Studio is shared: other tests list its projects.
            project = ls_client.find_project(title)
            if project is not None:
                ls_client.sdk.projects.delete(id=project.id)
