"""The classification loop against a real Label Studio: sentiment sentences with ground-truth labels."""

from __future__ import annotations

import json

import pytest
from sklearn.metrics import accuracy_score, f1_score

from prelabel.export.options import ExportOptions
from prelabel.export.validation import validate_export
from prelabel.export.writer import export_dataset
from prelabel.label_interface import parse_label_config
from prelabel.labeling.items import source_id
from prelabel.push import push_round
from prelabel.records import reviewed_tasks
from prelabel.review_stats import pull_report
from prelabel.store import Store
from tests.conftest import DATA, SENTIMENT_CONFIG, load_jsonl
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

POOL = DATA / "sentiment" / "amazon.jsonl"
CONFIG = parse_label_config(SENTIMENT_CONFIG)


@pytest.fixture(scope="module")
def sentiment_round(ls_client, backend_factory):
    backend = backend_factory()
    truth = {source_id(row, "text"): row["label"] for row in load_jsonl(POOL)}
    result = push_round(ls_client, SENTIMENT_CONFIG, "e2e sentiment", POOL, sample=15, seed=5)
    ls_client.connect_backend(result.project_id, backend.url)
    ls_client.retrieve_predictions(result.project_id)
    tasks = wait_until(
        lambda: (tasks := ls_client.export(result.project_id)) and all(t["predictions"] for t in tasks) and tasks,
        timeout=120,
        what="15 sentiment predictions",
    )
    # The reviewer sets the ground truth and rates the LLM's label: excellent when right, very bad when wrong.
    for task in tasks:
        record = reviewed_tasks(CONFIG, [task])[0]
        gold = truth[record.source_id]
        result_items = CONFIG.review_result(gold, 4 if record.llm_label == gold else 0)
        ls_client.sdk.annotations.create(id=task["id"], result=result_items, project=result.project_id)
    return {"backend": backend, "result": result, "truth": truth}


def test_sentiment_predictions_are_one_of_the_labels(sentiment_round, ls_client):
    records = reviewed_tasks(CONFIG, ls_client.export(sentiment_round["result"].project_id))
    assert len(records) == 15
    for record in records:
        assert record.llm_label in ("positive", "negative")
        assert record.llm_level == 3 and record.llm_score == 0.75  # the scripted judge says good
        assert "label" not in record.data  # the ground truth is not shown to reviewers


def test_webhook_and_pull_statistics_match_ground_truth(sentiment_round, ls_client):
    store = Store(sentiment_round["backend"].settings.store_path)
    wait_until(lambda: len(store.corrections()) == 15, timeout=30, what="15 corrections")
    records = reviewed_tasks(CONFIG, ls_client.export(sentiment_round["result"].project_id))
    gold = [sentiment_round["truth"][r.source_id] for r in records]
    predicted = [r.llm_label for r in records]
    assert [r.human_label for r in records] == gold
    report = pull_report(records, "classification", class_labels=CONFIG.class_labels)
    version = report.versions[0]
    assert version.n_reviewed == 15
    assert version.accuracy == pytest.approx(accuracy_score(gold, predicted))
    assert version.macro_f1 == pytest.approx(
        f1_score(gold, predicted, average="macro", labels=["positive", "negative"])
    )
    assert version.accepted_unchanged == sum(g == p for g, p in zip(gold, predicted))


def test_sentiment_export_and_second_round(sentiment_round, ls_client, tmp_path):
    project_id = sentiment_round["result"].project_id
    records = reviewed_tasks(CONFIG, ls_client.export(project_id))
    out = tmp_path / "sentiment-dataset"
    report = export_dataset(records, ExportOptions(out_dir=out, kind="classification", labels=CONFIG.class_labels))
    assert validate_export(out) == [] and report.counts.human == 15
    row = json.loads((out / "openai" / "train.jsonl").read_text().splitlines()[0])
    assert row["messages"][0]["content"] == "Classify the sentiment of the text as one of: positive, negative."
    assert row["messages"][2]["content"] in ("positive", "negative")

    second = push_round(ls_client, SENTIMENT_CONFIG, "e2e sentiment", POOL, sample=15, seed=5)
    assert second.round == "round-2" and not set(second.source_ids) & set(sentiment_round["result"].source_ids)
