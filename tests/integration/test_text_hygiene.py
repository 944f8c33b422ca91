"""Text that crosses prelabel's boundaries stays what it is: a provider that echoes the key it was sent leaves
no key anywhere, report.md shows data as inert text, a reviewer's braces reach the model verbatim, and an
input no model can be sent fails once as bad input."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import typer
from typer.testing import CliRunner

from prelabel.app import create_app
from prelabel.evaluation.report import REPORT_MD
from prelabel.fencing import fence
from prelabel.prompts import PROMPTS_DIR, PromptRegistry, render
from prelabel.redact import REDACTED
from prelabel.scripts import evaluate as evaluate_command
from prelabel.testing import ANTHROPIC, OPENAI, FakeReply, FakeRequest
from tests.conftest import ROOT, SUMMARY_CONFIG, ScriptedLLM, ls_task, section

# The annotator's key looks like a key; the judge's does not, so only its exact value can catch it.
OPENAI_KEY = "sk-proj-Zt7Qk2mVx9LpR4sW8nB3cD6f"
ANTHROPIC_KEY = "opaque-anthropic-credential"
LABEL_STUDIO_KEY = "labelstudio-token-value"
KEY_SHAPED = re.compile(r"sk-(?:proj|ant)-[A-Za-z0-9]|Bearer (?!\[redacted\])\S{8,}")
PROMPT_CONFIG = (ROOT / "label_config" / "summarization_prompt.xml").read_text()


class EchoingLLM(ScriptedLLM):
    """The scripted LLM, except that for a dialogue saying "echo" both roles repeat the key they were sent."""

    def __call__(self, request: FakeRequest) -> FakeReply | str | dict:
        answer = super().__call__(request)
        if "echo" not in section(request.prompt_text, "Conversation"):
            return answer
        said = f"your key is {request.api_key}; Authorization: Bearer {request.api_key}; x-api-key={request.api_key}"
        if self.is_judge(request):
            verdict = {"rating": "good", "reason": f"fine, {said}"}
            return verdict if request.tool else FakeReply(content=json.dumps(verdict))
        return f"Summary: {said}"


@pytest.fixture
def llm() -> EchoingLLM:
    return EchoingLLM()


def key_settings(make_settings: Any) -> Any:
    return make_settings(
        OPENAI_API_KEY=OPENAI_KEY,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        LABEL_STUDIO_API_KEY=LABEL_STUDIO_KEY,
        PRELABEL_MAX_RETRIES="1",
        PRELABEL_CONCURRENCY="1",  # the faults meet the calls in a known order
    )


def echoing_faults(provider: Any) -> None:
    """One failing annotator call per status (the SDK retries the 500: two echoes) and two failing judge calls."""
    for status in (400, 401):
        provider.fail_next(1, status, provider=OPENAI, echo_key=True)
    provider.fail_next(2, 500, provider=OPENAI, echo_key=True)
    provider.fail_next(2, 400, provider=ANTHROPIC, echo_key=True)


def assert_no_key(where: str, text: str) -> None:
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, LABEL_STUDIO_KEY):
        assert secret not in text, f"{where} holds a configured key"
    found = KEY_SHAPED.search(text)
    assert found is None, f"{where} holds a key-shaped string: {found.group(0) if found else ''}"


def store_text(path: Path) -> str:
    """Every row of the store (llm_calls.error, llm_cache, predictions, ...) as SQL text."""
    db = sqlite3.connect(path)
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()


def write_pool(path: Path, dialogsum: list[dict[str, Any]], count: int, echo: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            dialogue = dialogsum[index]["dialogue"] + f"\n#Person2#: {'echo' if index < echo else 'thanks'} {index}."
            handle.write(json.dumps({"id": f"item-{index}", "dialogue": dialogue}) + "\n")


def test_a_provider_echoing_the_key_leaves_it_nowhere_from_the_label_command(
    make_settings, provider, dialogsum, tmp_path
):
    settings = key_settings(make_settings)
    echoing_faults(provider)
    pool, output = tmp_path / "pool.jsonl", tmp_path / "labeled.jsonl"
    write_pool(pool, dialogsum, 10, echo=6)
    run = subprocess.run(
        [sys.executable, "-m", "prelabel.scripts.label", "-i", str(pool), "-o", str(output), "--no-progress"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "DEBUG"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout + run.stderr  # the annotator failures fail their items
    echoed = [r for r in provider.requests if r.status and r.status >= 400]
    assert len(echoed) == 6  # every echoing fault was served

    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    errors = [row["error"] for row in rows if row["error"]]
    assert len(errors) == 3 and all(REDACTED in error for error in errors), errors
    assert {status for error in errors for status in ("HTTP 400", "HTTP 401", "HTTP 500") if status in error} == {
        "HTTP 400",
        "HTTP 401",
        "HTTP 500",
    }
    assert any(REDACTED in json.dumps(row) for row in rows if not row["error"])  # an echoed answer, scrubbed
    assert_no_key("the output JSONL", output.read_text(encoding="utf-8"))
    assert_no_key("stdout", run.stdout)
    assert_no_key("stderr", run.stderr)
    stored = store_text(settings.store_path)
    assert REDACTED in stored
    assert_no_key("the store", stored)


def test_a_provider_echoing_the_key_leaves_it_nowhere_from_predict(
    make_settings, serve_app, provider, dialogsum, caplog
):
    settings = key_settings(make_settings)
    server = serve_app(create_app(settings))
    echoing_faults(provider)
    tasks = [ls_task(i, {"dialogue": dialogsum[i]["dialogue"] + f"\n#Person2#: echo {i}."}) for i in range(6)]
    with caplog.at_level(logging.DEBUG):
        response = requests.post(
            f"{server.url}/predict",
            json={"tasks": tasks, "project": "3.1", "label_config": SUMMARY_CONFIG, "params": {"context": None}},
            timeout=120,
        )
    assert response.status_code == 200
    body = response.text
    assert REDACTED in body
    assert_no_key("the /predict answer", body)
    assert_no_key("the log", "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records))
    assert any(REDACTED in record.getMessage() for record in caplog.records)  # the failures were logged
    assert_no_key("the store", store_text(settings.store_path))


def md_cells(row: str) -> list[str]:
    """The cells of one Markdown table row (a `\\|` is inside a cell)."""
    assert row.startswith("| ") and row.endswith(" |"), row
    return re.split(r"(?<!\\)\|", row[2:-2])


HOSTILE = "a | b\n# head `code` <script>alert(1)</script> [x](javascript:alert(1)) *bold* <img src=x>"


def test_report_md_shows_data_and_model_text_as_inert_cells(make_settings, provider, llm, tmp_path):
    make_settings()
    llm.rate = lambda conversation, label: 1 if "odd" in conversation else 3
    pool = tmp_path / "pool.jsonl"
    rows = [
        {
            "id": f"<b>id</b>|{i}",
            "dialogue": f"A: hello {'odd' if i % 2 else 'even'} {i}\nB: fine",
            "topic": HOSTILE if i % 2 else "*plain*",
        }
        for i in range(6)
    ]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "run"
    app = typer.Typer()
    app.command(name="evaluate")(evaluate_command.evaluate)
    app.command(name="other")(lambda: None)  # two commands, so `evaluate` is a subcommand as in the real CLI
    template = PROMPTS_DIR / "summarize.txt"
    args = ["evaluate", str(pool), "--prompt", f"v_1={template}", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--slice-field", "topic", "--min-slice", "1"])
    assert result.exit_code == 0, result.output
    report = (out / REPORT_MD).read_text(encoding="utf-8")

    assert re.search(r"<[A-Za-z/]", report) is None  # no raw HTML tag of any kind
    assert "](javascript:" not in report and not re.search(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", report)
    table = report.split("### v\\_1", 1)[1].strip().splitlines()
    header, rule, *body = table[: table.index("")] if "" in table else table
    width = len(md_cells(header))
    assert width == 6 and rule == "|" + "---|" * width  # slice, n, mean, interval, ≥ good, example
    assert len(body) == 2 and all(len(md_cells(row)) == width for row in body), body
    hostile_row = next(row for row in body if "alert" in row)
    assert r"topic = a \| b \# head \`code\` &lt;script&gt;alert\(1\)&lt;/script&gt;" in hostile_row
    assert r"\[x\]\(javascript:alert\(1\)\) \*bold\*" in hostile_row
    assert r"&lt;b&gt;id&lt;/b&gt;\|" in hostile_row  # the example's source id
    assert "- v\\_1: " in report and "**Best version: v\\_1**" in report


INSTRUCTION = 'Answer in JSON like {} or {"a": 1} and keep {input} literal; {x}, {{ and {{}} are text too.'


def prompt_context(text: str) -> dict[str, Any]:
    region = {"from_name": "prompt", "to_name": "dialogue", "type": "textarea", "value": {"text": [text]}}
    return {"result": [region]}


def test_a_reviewers_braces_reach_the_model_verbatim(make_settings, serve_app, provider, dialogsum):
    settings = make_settings()
    server = serve_app(create_app(settings))
    task = ls_task(1, dialogsum[0])
    body = {"tasks": [task], "project": "4.1", "label_config": PROMPT_CONFIG, "params": {}}
    response = requests.post(
        f"{server.url}/predict", json={**body, "params": {"context": prompt_context(INSTRUCTION)}}, timeout=60
    )
    assert response.status_code == 200, response.text
    sent = [r.body["messages"][-1]["content"] for r in provider.requests if r.provider == OPENAI]
    assert len(sent) == 1
    conversation = section(sent[0], "Conversation")
    assert sent[0] == f"{INSTRUCTION}\nConversation:\n{fence(conversation)}"
    assert conversation.startswith("Person1: ")  # the conversation went where the template puts it, once

    # The stored version renders the same prompt for `evaluate --prompt NAME`; the box shows its template.
    versions = PromptRegistry(settings.model_dir, settings.store_path).versions()
    assert len(versions) == 1
    template = Path(versions[0].path).read_text(encoding="utf-8")
    assert render(template, input=conversation) == sent[0]
    shown = next(r for r in response.json()["results"][0]["result"] if r["from_name"] == "prompt")
    assert shown["value"]["text"] == [template]
    # Sent back as it was shown, the template is the same version: no drift in the braces.
    again = requests.post(
        f"{server.url}/predict", json={**body, "params": {"context": prompt_context(template)}}, timeout=60
    )
    assert again.json()["results"][0]["model_version"] == response.json()["results"][0]["model_version"]
    assert len(PromptRegistry(settings.model_dir, settings.store_path).versions()) == 1


def test_an_input_no_model_can_be_sent_fails_once_as_bad_input(make_settings, serve_app, provider, dialogsum):
    server = serve_app(create_app(make_settings()))
    lone = {"id": 2, "data": {"dialogue": [{"author": "A", "text": "hi"}, {"author": "B", "text": "bad \ud800 x"}]}}
    tasks = [ls_task(1, dialogsum[0]), lone, ls_task(3, dialogsum[1])]
    # Sent as JSON with the \ud800 escape, as Label Studio or a task file would hold it.
    payload = json.dumps({"tasks": tasks, "project": "5.1", "label_config": SUMMARY_CONFIG, "params": {}})
    response = requests.post(
        f"{server.url}/predict", data=payload, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [("result" in r) for r in results] == [True, False, True]  # the rest of the batch goes on
    error = results[1]["error"]
    assert error.startswith("task 2: bad input: field 'data.dialogue[1].text': holds U+D800 at character 4")
    assert provider.count == 4  # annotator and judge for tasks 1 and 3; nothing for task 2
    assert not any("bad " in json.dumps(r.body) for r in provider.requests)
