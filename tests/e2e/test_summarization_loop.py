"""The summarisation loop against a real Label Studio: push a random round, connect the backend, get
predictions, review through the API, the webhook records it, pull, export, push a second round."""

from __future__ import annotations

import pytest

from prelabel.judge import LEVELS
from prelabel.label_interface import parse_label_config
from prelabel.push import push_round
from prelabel.records import reviewed_tasks
from prelabel.store import Store
from tests.conftest import DIALOGSUM, SUMMARY_CONFIG, load_jsonl
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

POOL = DIALOGSUM
CONFIG = parse_label_config(SUMMARY_CONFIG)
# The judge's level for the i-th pushed task, and the level the reviewer gives it.
JUDGE_LEVELS = [0, 1, 2, 3, 4] * 3
REVIEWER_LEVELS = [0, 1, 2, 3, 4, 1, 2, 3, 4, 4, 2, 1, 0, 3, 4]
ACCEPTED_UNCHANGED = {0, 4, 8}  # reviewers keep the LLM's summary on these; the rest get the reference


@pytest.fixture(scope="module")
def loop(ls_client, backend_factory):
    """Round 1 pushed, predicted by the backend through Label Studio, and reviewed."""
    backend = backend_factory(PRELABEL_MAX_RETRIES="0")
    references = {row["fname"]: row for row in load_jsonl(POOL)}
    result = push_round(ls_client, SUMMARY_CONFIG, "e2e summarization", POOL, sample=15, seed=7, keep_fields=("topic",))
    first_turns = {}
    for index, source in enumerate(result.source_ids):
        first_line = references[source]["dialogue"].splitlines()[0]
        first_turns[first_line.split(":", 1)[1].strip()] = JUDGE_LEVELS[index]
    backend.llm.rate = lambda conversation, label: first_turns[label.removeprefix("Summary: ").strip()]

    ls_client.connect_backend(result.project_id, backend.url)
    # One annotator call fails: that task must get no stored prediction, so the next retrieve fills it.
    backend.provider.fail_next(1, status=500, provider="openai")
    ls_client.retrieve_predictions(result.project_id)
    first_pass = ls_client.export(result.project_id)
    ls_client.retrieve_predictions(result.project_id)

    def predicted():
        tasks = ls_client.export(result.project_id)
        return tasks if sum(1 for task in tasks if task["predictions"]) == 15 else None

    tasks = wait_until(predicted, timeout=120, what="15 stored predictions")
    ls_client.set_model_version(result.project_id, ls_client.backend_model_version(result.project_id, backend.url))
    return {"backend": backend, "result": result, "tasks": tasks, "references": references, "first_pass": first_pass}


def test_a_failed_task_stores_nothing_and_the_next_retrieve_fills_it(loop):
    counts = [len(task["predictions"]) for task in loop["first_pass"]]
    assert sorted(counts) == [0] + [1] * 14
    assert all(len(task["predictions"]) == 1 for task in loop["tasks"])  # no duplicate for the others


def test_data_manager_sorts_by_the_judge_score(loop, ls_client):
    project_id = loop["result"].project_id
    view = ls_client.sdk.views.create(project=project_id, data={"ordering": ["tasks:predictions_score"]})
    ordered = list(ls_client.sdk.tasks.list(project=project_id, view=view.id, fields="all"))
    scores = [task.predictions_score for task in ordered]
    assert scores == sorted(JUDGE_LEVELS[i] / 4 for i in range(15))


def test_round_one_is_a_random_sample_of_fifteen(loop):
    result = loop["result"]
    assert len(result.task_ids) == 15 and len(set(result.source_ids)) == 15
    assert result.round == "round-1"
    assert result.source_ids != sorted(result.source_ids)  # drawn at random, not the first fifteen


def test_predictions_stored_with_judge_score_and_model_version(loop):
    backend = loop["backend"]
    order = {source: index for index, source in enumerate(loop["result"].source_ids)}
    for task in loop["tasks"]:
        assert len(task["predictions"]) == 1
        prediction = task["predictions"][0]
        index = order[task["data"]["source_id"]]
        assert prediction["score"] == pytest.approx(JUDGE_LEVELS[index] / 4)
        assert prediction["model_version"].startswith("summarize@")
        assert prediction["model_version"].endswith("gpt-4o-mini+claude-haiku-4-5")
        # The reviewer's rating control is left empty; the judge's level is in its own read-only control.
        controls = {item["from_name"]: item for item in prediction["result"]}
        assert "rating" not in controls and controls["judge_rating"]["readonly"] is True
        record = reviewed_tasks(CONFIG, [task])[0]
        assert record.llm_label.startswith("Summary: ")
        assert record.llm_level == JUDGE_LEVELS[index]
        assert record.llm_reason == f"rated {LEVELS[JUDGE_LEVELS[index]]} for its coverage."
    assert backend.provider.count == 31  # one annotator and one judge call per task, plus the failed call


@pytest.fixture(scope="module")
def reviewed(loop, ls_client):
    """Reviewer annotations created through the API, as a reviewer would submit them."""
    order = {source: index for index, source in enumerate(loop["result"].source_ids)}
    for task in loop["tasks"]:
        index = order[task["data"]["source_id"]]
        record = reviewed_tasks(CONFIG, [task])[0]
        corrected = record.llm_label if index in ACCEPTED_UNCHANGED else loop["references"][record.source_id]["summary"]
        result = CONFIG.review_result(corrected, REVIEWER_LEVELS[index])
        for item in result:
            item.pop("origin", None)
        ls_client.sdk.annotations.create(
            id=task["id"],
            result=result,
            parent_prediction=task["predictions"][0]["id"],
            project=loop["result"].project_id,
        )
    return loop


def test_webhook_recorded_every_review(reviewed):
    store = Store(reviewed["backend"].settings.store_path)
    rows = wait_until(
        lambda: (rows := store.corrections()) and len(rows) == 15 and rows,
        timeout=30,
        what="15 corrections recorded by the webhook",
    )
    order = {source: index for index, source in enumerate(reviewed["result"].source_ids)}
    by_task = {task["id"]: task for task in reviewed["tasks"]}
    for row in rows:
        index = order[by_task[int(row["task_id"])]["data"]["source_id"]]
        assert row["reviewer_level"] == REVIEWER_LEVELS[index]
        assert row["parent_prediction"] == str(by_task[int(row["task_id"])]["predictions"][0]["id"])
        if index not in ACCEPTED_UNCHANGED:
            assert (
                row["corrected_label"]
                == reviewed["references"][by_task[int(row["task_id"])]["data"]["source_id"]]["summary"]
            )


def test_export_every_format_and_validate(reviewed, ls_client, tmp_path):
    import json

    from prelabel.export.options import DEFAULT_THRESHOLD, ExportOptions
    from prelabel.export.validation import bedrock_problems, validate_export
    from prelabel.export.writer import export_dataset

    records = reviewed_tasks(CONFIG, ls_client.export(reviewed["result"].project_id))
    assert sum(record.reviewed for record in records) == 15
    out = tmp_path / "dataset"
    report = export_dataset(records, ExportOptions(out_dir=out, kind="summarization", seed=3))
    assert validate_export(out) == []
    # Index 0 kept the LLM's summary unedited but was rated "very bad": not gold, dropped.
    unedited_low = {i for i in ACCEPTED_UNCHANGED if REVIEWER_LEVELS[i] < DEFAULT_THRESHOLD}
    assert len(unedited_low) == 1
    assert report.counts.dropped_unedited_low_rating == 1
    assert report.counts.human == 14 and report.counts.exported == 14
    rows = [
        json.loads(line)
        for split in ("train", "validation")
        for line in (out / "openai" / f"{split}.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 14
    references = {row["summary"] for row in reviewed["references"].values()}
    for row in rows:
        roles = [message["role"] for message in row["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert not row["messages"][0]["content"].startswith("You are an expert")  # the served task, not the meta-prompt
        assert row["messages"][2]["content"] in references or row["messages"][2]["content"].startswith("Summary: ")
    for line in (out / "bedrock" / "train.jsonl").read_text().splitlines():
        assert bedrock_problems(json.loads(line)) == []
    provenance = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert {row["origin"] for row in provenance} == {"human"}
    source_ids = reviewed["result"].source_ids
    assert {row["source_id"] for row in provenance} == {s for i, s in enumerate(source_ids) if i not in unedited_low}


def test_second_round_never_repeats_a_dialogue(reviewed, ls_client):
    first = reviewed["result"]
    second = push_round(ls_client, SUMMARY_CONFIG, "e2e summarization", POOL, sample=15, seed=7)
    assert second.project_id == first.project_id and second.round == "round-2"
    assert len(second.source_ids) == 15
    assert not set(second.source_ids) & set(first.source_ids)


def test_pull_statistics_and_corrections_file(reviewed, label_studio, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from prelabel.scripts.cli import app

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    corrections = tmp_path / "corrections.jsonl"
    stats = tmp_path / "pull.json"
    project_id = reviewed["result"].project_id
    outcome = CliRunner().invoke(
        app, ["pull", str(project_id), "--corrections", str(corrections), "--report-json", str(stats)]
    )
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(stats.read_text())
    assert report["n_reviewed"] == 15 and len(report["versions"]) == 1
    version = report["versions"][0]
    assert version["model_version"].startswith("summarize@")
    # Hand-checked from JUDGE_LEVELS and REVIEWER_LEVELS: 9 equal, 13 within one level,
    # quadratic-weighted kappa 1 - 0.75 / 3.75 = 0.8, Spearman 0.8301 (ties averaged).
    assert version["accepted_unchanged"] == 3 and version["edited"] == 12
    assert version["exact_agreement"] == pytest.approx(9 / 15)
    assert version["within_one_agreement"] == pytest.approx(13 / 15)
    assert version["kappa"] == pytest.approx(0.8)
    assert version["spearman"] == pytest.approx(0.8300868, abs=1e-6)
    worst = report["worst_cases"]
    assert worst and worst[0]["link"].startswith(f"{label_studio.url}/projects/{project_id}/data?task=")
    assert worst[0]["edit_distance"] >= worst[-1]["edit_distance"] > 0
    rows = [json.loads(line) for line in corrections.read_text().splitlines()]
    assert len(rows) == 15 and sum(row["accepted_unchanged"] for row in rows) == 3
    # Blind reviews: no prediction filled the reviewer's rating, so none of the 15 ratings is anchored.
    assert report["anchored_warning"] is None and version["n_anchored_pairs"] == 0
    assert not any(row["rating_anchored"] for row in rows)
    assert all(row["input"].startswith("Person1: ") or row["input"].startswith("Person2: ") for row in rows)


def test_pull_and_export_take_the_project_title_as_push_did(reviewed, label_studio, ls_client, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from prelabel.scripts.cli import app

    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    runner = CliRunner()
    by_title = runner.invoke(app, ["pull", "e2e summarization", "--corrections", str(tmp_path / "c.jsonl")])
    assert by_title.exit_code == 0, by_title.output
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 15
    exported = runner.invoke(app, ["export", "e2e summarization", "--out", str(tmp_path / "ds"), "-f", "openai"])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "ds" / "manifest.json").exists()

    unknown = runner.invoke(app, ["pull", "e2e summarisation", "--corrections", str(tmp_path / "x.jsonl")])
    assert unknown.exit_code != 0
    said = " ".join(unknown.output.split())  # the console folds long lines
    assert "no project with the id or title 'e2e summarisation'" in said
    assert "e2e summarization" in said  # the nearest titles are named, however many projects there are
    twin = ls_client.sdk.projects.create(title="twin title")
    other = ls_client.sdk.projects.create(title="twin title")
    try:
        ambiguous = runner.invoke(app, ["export", "twin title", "--out", str(tmp_path / "y")])
        assert ambiguous.exit_code != 0
        said = " ".join(ambiguous.output.split())
        assert f"several projects are titled 'twin title' (ids {twin.id}, {other.id})" in said
        assert not (tmp_path / "y").exists()
    finally:
        ls_client.sdk.projects.delete(id=twin.id)
        ls_client.sdk.projects.delete(id=other.id)
