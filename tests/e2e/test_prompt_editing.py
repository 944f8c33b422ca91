"""Prompt editing in Label Studio: with the backend connected as interactive, a reviewer's revised instruction
in the prompt box comes back through Label Studio's interactive-annotating call as params.context; the
backend labels the task with it under a new model_version and stores it as a named prompt version that
`prelabel evaluate --prompt NAME` can measure."""

from __future__ import annotations

import json

import httpx
import pytest

from prelabel.prompts import PROMPTS_DIR, PromptRegistry, text_hash
from prelabel.push import push_round
from tests.conftest import DIALOGSUM, ROOT
from tests.e2e.cli_env import run, use_backend_env
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

POOL = DIALOGSUM
PROMPT_CONFIG = (ROOT / "label_config" / "summarization_prompt.xml").read_text()
DEFAULT_TEMPLATE = (PROMPTS_DIR / "summarize.txt").read_text()
REVISED = "Summarize the conversation in one sentence that names both speakers and the decision they reach."
REVISED_TEMPLATE = REVISED + "\nConversation:\n{input}"


def prompt_context(text: str) -> dict:
    """params.context as Label Studio sends it: the reviewer's current regions, the prompt box among them."""
    return {
        "result": [
            {
                "id": "p1",
                "from_name": "prompt",
                "to_name": "dialogue",
                "type": "textarea",
                "origin": "manual",
                "value": {"text": [text]},
            },
            {
                "id": "r1",
                "from_name": "rating",
                "to_name": "dialogue",
                "type": "choices",
                "value": {"choices": ["bad"]},
            },
        ]
    }


def region(result: list[dict], name: str) -> dict:
    return next(item for item in result if item["from_name"] == name)


@pytest.fixture(scope="module")
def interactive(ls_client, backend_factory):
    backend = backend_factory(PRELABEL_MAX_RETRIES="0")
    backend.llm.rate = lambda conversation, label: 2
    pushed = push_round(ls_client, PROMPT_CONFIG, "e2e prompt editing", POOL, sample=3, seed=11)
    connection = ls_client.connect_backend(pushed.project_id, backend.url, interactive=True)
    ls_client.retrieve_predictions(pushed.project_id)
    tasks = wait_until(
        lambda: (tasks := ls_client.export(pushed.project_id)) and all(t["predictions"] for t in tasks) and tasks,
        timeout=120,
        what="3 batch predictions",
    )
    return {"backend": backend, "pushed": pushed, "ml": connection, "tasks": tasks}


def interactive_call(ls_client, label_studio, ml_id: int, task_id: int, context: dict) -> dict:
    """What Label Studio's labeling UI calls when a reviewer submits a region with Auto-Annotation on."""
    response = httpx.post(
        f"{label_studio.url}/api/ml/{ml_id}/interactive-annotating",
        json={"task": task_id, "context": context},
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_label_studio_accepts_the_interactive_backend_and_the_prompt_box(interactive, ls_client):
    backend = ls_client.sdk.ml.get(id=interactive["ml"].id)
    assert backend.is_interactive is True
    for task in interactive["tasks"]:
        prediction = task["predictions"][0]
        assert prediction["model_version"].startswith("summarize@")
        assert region(prediction["result"], "summary")["value"]["text"][0].startswith("Summary: ")
        # The box shows the instruction that produced the label, for the reviewer to revise.
        assert region(prediction["result"], "prompt")["value"]["text"] == [DEFAULT_TEMPLATE]
        assert prediction["score"] == pytest.approx(0.5)


def test_a_revised_prompt_gets_a_fresh_prediction_under_a_new_model_version(interactive, ls_client, label_studio):
    backend = interactive["backend"]
    task = interactive["tasks"][0]
    before = backend.provider.count
    data = interactive_call(ls_client, label_studio, interactive["ml"].id, task["id"], prompt_context(REVISED))

    name = f"summarize-{text_hash(REVISED_TEMPLATE)}"
    base_version = task["predictions"][0]["model_version"]
    assert data["model_version"].startswith(f"{name}@")
    assert data["model_version"] != base_version
    assert data["model_version"].split(":", 1)[1] == base_version.split(":", 1)[1]  # same models
    assert region(data["result"], "summary")["value"]["text"][0].startswith("Summary: ")
    assert region(data["result"], "prompt")["value"]["text"] == [REVISED_TEMPLATE]
    assert data["score"] == pytest.approx(0.5)
    # The annotator really was asked with the revised instruction (the judge's verdict on the same summary
    # of the same conversation comes from the cache).
    calls = [call for call in backend.provider.requests[before:] if call.provider == "openai"]
    assert len(calls) == 1 and REVISED in json.dumps(calls[0].body)

    version = PromptRegistry(backend.settings.model_dir, backend.settings.store_path).get(name)
    assert version is not None and version.kind == "summarization"
    assert version.origin == f"label studio project {interactive['pushed'].project_id}, task {task['id']}"
    assert (backend.settings.model_dir / "prompts" / f"{name}.txt").read_text() == REVISED_TEMPLATE


def test_the_same_revision_again_is_the_same_version(interactive, ls_client, label_studio):
    backend = interactive["backend"]
    registry = PromptRegistry(backend.settings.model_dir, backend.settings.store_path)
    task = interactive["tasks"][1]
    first = interactive_call(ls_client, label_studio, interactive["ml"].id, task["id"], prompt_context(REVISED))
    second = interactive_call(ls_client, label_studio, interactive["ml"].id, task["id"], prompt_context(REVISED))
    assert first["model_version"] == second["model_version"]
    assert [v.name for v in registry.versions()] == [f"summarize-{text_hash(REVISED_TEMPLATE)}"]


def test_without_a_prompt_in_the_context_the_current_prompt_labels(interactive, ls_client, label_studio):
    task = interactive["tasks"][2]
    context = {
        "result": [{"from_name": "rating", "to_name": "dialogue", "type": "choices", "value": {"choices": ["good"]}}]
    }
    data = interactive_call(ls_client, label_studio, interactive["ml"].id, task["id"], context)
    assert data["model_version"] == task["predictions"][0]["model_version"]


def test_a_malformed_context_is_refused_with_its_field(interactive):
    backend = interactive["backend"]
    body = {
        "tasks": [{"id": 1, "data": {"dialogue": "A: hi\nB: hello"}}],
        "label_config": PROMPT_CONFIG,
        "params": {"context": {"result": "not a list"}},
    }
    response = httpx.post(f"{backend.url}/predict", json=body, timeout=30)
    assert response.status_code == 400
    assert "params.context.result" in response.json()["error"]


def test_evaluate_measures_the_stored_version_by_name(interactive, ls_client, label_studio, tmp_path, monkeypatch):
    backend = interactive["backend"]
    name = f"summarize-{text_hash(REVISED_TEMPLATE)}"
    use_backend_env(monkeypatch, backend, label_studio, tmp_path)
    listing = run("prompts")
    assert listing.exit_code == 0, listing.output
    assert name in listing.output
    out = tmp_path / "run"
    outcome = run(
        "evaluate",
        POOL,
        "--size",
        "4",
        "--seed",
        "2",
        "--out",
        out,
        "--prompt",
        f"base={PROMPTS_DIR / 'summarize.txt'}",
        "--prompt",
        name,
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["versions"]) == ["base", name]
    revised = summary["versions"][name]
    assert revised["n_items"] == 4 and revised["n_rated"] == 4
    # The model_version Label Studio got for the reviewer's revision is the one evaluate measured.
    served = interactive_call(
        ls_client, label_studio, interactive["ml"].id, interactive["tasks"][0]["id"], prompt_context(REVISED)
    )["model_version"]
    assert revised["model_version"] == served
    unknown = run("evaluate", POOL, "--size", "4", "--out", out, "--prompt", "no-such-version")
    assert unknown.exit_code == 2 and "no prompt version 'no-such-version'" in unknown.output
