"""Labeled results into a real Label Studio: `evaluate --push-project` puts the evaluation set there with each
version's predictions, weakest first; `label --project` imports a labeled pool once, a rerun adds nothing."""

from __future__ import annotations

import json
import zlib

import pytest

from prelabel.records import SOURCE_ID_FIELD
from tests.conftest import DIALOGSUM, ROOT, load_jsonl
from tests.e2e.cli_env import run, use_backend_env

pytestmark = pytest.mark.e2e

POOL = DIALOGSUM
V2 = "Summarize this conversation in two sentences.\nConversation:\n{input}"


def spread_levels(conversation: str, label: str) -> int:
    """A judge whose levels vary across items and prompt versions, reproducibly."""
    return zlib.crc32((conversation + label).encode()) % 5


def project_tasks(ls_client, project_id: int) -> list[dict]:
    return ls_client.export(project_id)


def read_items(path) -> dict[str, dict]:
    return {row["source_id"]: row for row in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def backend(backend_factory):
    started = backend_factory(PRELABEL_MAX_RETRIES="0")
    started.llm.rate = spread_levels
    return started


def test_evaluate_pushes_the_set_with_scores_and_adds_new_versions_once(
    backend, ls_client, label_studio, tmp_path, monkeypatch
):
    use_backend_env(monkeypatch, backend, label_studio, tmp_path)
    out = tmp_path / "run"
    first = run("evaluate", POOL, "--size", "8", "--seed", "4", "--out", out, "--push-project", "e2e evaluation")
    assert first.exit_code == 0, first.output
    project = ls_client.find_project("e2e evaluation")
    base = read_items(out / "items" / "summarize.jsonl")
    tasks = project_tasks(ls_client, project.id)
    assert len(tasks) == 8 and {t["data"][SOURCE_ID_FIELD] for t in tasks} == set(base)
    for task in tasks:
        item = base[task["data"][SOURCE_ID_FIELD]]
        [prediction] = task["predictions"]
        assert prediction["score"] == pytest.approx(item["score"])
        assert prediction["model_version"] == item["model_version"]
        # The judge's rating in its own read-only control; the reviewer's rating control left empty.
        controls = {r["from_name"]: r for r in prediction["result"]}
        assert controls["judge_rating"]["value"]["choices"] == [item["rating"]] and "rating" not in controls
        assert controls["judge_rating"]["readonly"] is True
    assert ls_client.project(project.id).model_version == next(iter(base.values()))["model_version"]

    # Reviewers start from the weakest: the tab the push created orders tasks by the judge's score.
    [view] = [
        v
        for v in ls_client.sdk.views.list(project=project.id)
        if (v.data or {}).get("ordering") == ["tasks:predictions_score"]
    ]
    ordered = [t.predictions_score for t in ls_client.sdk.tasks.list(project=project.id, view=view.id, fields="all")]
    assert ordered == sorted(item["score"] for item in base.values())
    assert len(set(ordered)) > 1  # the judge's levels really differ, so the order is meaningful

    # A revised prompt evaluated into the same run and project: its predictions join the same tasks.
    template = tmp_path / "v2.txt"
    template.write_text(V2)
    second = run("evaluate", POOL, "--out", out, "--prompt", f"v2={template}", "--push-project", str(project.id))
    assert second.exit_code == 0, second.output
    v2 = read_items(out / "items" / "v2.jsonl")
    tasks = project_tasks(ls_client, project.id)
    assert len(tasks) == 8
    for task in tasks:
        by_version = {p["model_version"]: p["score"] for p in task["predictions"]}
        item = v2[task["data"][SOURCE_ID_FIELD]]
        assert len(by_version) == 2 and by_version[item["model_version"]] == pytest.approx(item["score"])
    assert ls_client.project(project.id).model_version == next(iter(v2.values()))["model_version"]

    again = run("evaluate", POOL, "--out", out, "--prompt", f"v2={template}", "--push-project", "e2e evaluation")
    assert again.exit_code == 0, again.output
    assert "0 new tasks" in again.output and "8 already there" in again.output
    assert sum(len(t["predictions"]) for t in project_tasks(ls_client, project.id)) == 16
    assert (
        len(
            [
                v
                for v in ls_client.sdk.views.list(project=project.id)
                if (v.data or {}).get("ordering") == ["tasks:predictions_score"]
            ]
        )
        == 1
    )


def test_label_imports_every_item_once_and_a_rerun_adds_none(backend, ls_client, label_studio, tmp_path, monkeypatch):
    use_backend_env(monkeypatch, backend, label_studio, tmp_path, PRELABEL_MAX_RETRIES="0")
    pool = tmp_path / "pool.jsonl"
    rows = load_jsonl(POOL, limit=12)
    pool.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "labeled.jsonl"
    config = ROOT / "label_config" / "summarization.xml"

    backend.provider.fail_next(1, status=500, provider="openai")  # one item fails: a task without a prediction
    first = run("label", "-i", pool, "-o", output, "-c", config, "--no-progress", "--project", "e2e labeled pool")
    assert first.exit_code == 1, first.output  # a failed item: the command says so, the rest is imported
    project = ls_client.find_project("e2e labeled pool")
    tasks = project_tasks(ls_client, project.id)
    assert sorted(t["data"][SOURCE_ID_FIELD] for t in tasks) == sorted(row["fname"] for row in rows)
    assert sorted(len(t["predictions"]) for t in tasks) == [0] + [1] * 11

    # The rerun labels the failed item and adds its prediction; nothing else is imported again.
    second = run("label", "-i", pool, "-o", output, "-c", config, "--no-progress", "--project", "e2e labeled pool")
    assert second.exit_code == 0, second.output
    third = run("label", "-i", pool, "-o", output, "-c", config, "--no-progress", "--project", str(project.id))
    assert third.exit_code == 0, third.output
    assert "0 new tasks" in third.output and "0 predictions imported" in third.output
    tasks = project_tasks(ls_client, project.id)
    assert len(tasks) == 12 and all(len(t["predictions"]) == 1 for t in tasks)
    labeled = read_items(output)
    for task in tasks:
        record = labeled[task["data"][SOURCE_ID_FIELD]]
        prediction = task["predictions"][0]
        assert prediction["score"] == pytest.approx(record["score"])
        assert prediction["model_version"] == record["model_version"]
        summary = next(r for r in prediction["result"] if r["from_name"] == "summary")
        assert summary["value"]["text"] == [record["label"]]
    assert task["data"]["dialogue"][0]["author"]  # dialogues arrive as turns for the Paragraphs view
