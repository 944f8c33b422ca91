"""The review path against a real Label Studio: the webhook is a notification, and what is recorded is Label
Studio's own annotation, read back with the backend's token. Posts to /webhook that Label Studio did not make
(forged results, made-up ids, deletions it did not do) change nothing."""

from __future__ import annotations

import json
import time

import pytest
import requests

from prelabel.label_interface import parse_label_config
from prelabel.push import push_round
from prelabel.store import Store
from tests.conftest import DIALOGSUM, SUMMARY_CONFIG
from tests.e2e.conftest import wait_until

pytestmark = pytest.mark.e2e

CONFIG = parse_label_config(SUMMARY_CONFIG)


def result_for(summary: str, level: int) -> list[dict]:
    items = CONFIG.review_result(summary, level)
    for item in items:
        item.pop("origin", None)
    return items


@pytest.fixture(scope="module")
def reviewed(ls_client, backend_factory):
    """A project connected to the backend (so Label Studio posts its webhooks to it) and one real review."""
    backend = backend_factory()
    pushed = push_round(ls_client, SUMMARY_CONFIG, "e2e webhook trust", DIALOGSUM, sample=3, seed=11)
    ls_client.connect_backend(pushed.project_id, backend.url)
    task_id = pushed.task_ids[0]
    annotation = ls_client.sdk.annotations.create(
        id=task_id, project=pushed.project_id, result=result_for("The reviewer's summary.", 1)
    )
    store = Store(backend.settings.store_path)
    wait_until(lambda: len(store.corrections()) == 1, timeout=30, what="the review recorded by the webhook")
    return {"backend": backend, "store": store, "project": pushed.project_id, "task": task_id, "id": annotation.id}


def forged_event(annotation_id: int, task_id: int, project: int, action: str = "ANNOTATION_CREATED") -> dict:
    return {
        "action": action,
        "project": {"id": project, "label_config": SUMMARY_CONFIG},
        "task": {"id": task_id},
        "annotation": {"id": annotation_id, "task": task_id, "result": result_for("FORGED summary", 4)},
    }


def test_label_studios_record_is_what_is_stored(reviewed):
    row = reviewed["store"].corrections()[0]
    assert row["annotation_id"] == str(reviewed["id"]) and row["task_id"] == str(reviewed["task"])
    assert row["project"] == str(reviewed["project"])
    assert row["corrected_label"] == "The reviewer's summary." and row["reviewer_level"] == 1
    payload = json.loads(row["payload"])
    assert payload["source"] == "label studio" and payload["annotation"]["id"] == reviewed["id"]


def test_a_forged_post_for_a_real_annotation_records_label_studios_version(reviewed):
    url = reviewed["backend"].url
    for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        forged = forged_event(reviewed["id"], reviewed["task"], reviewed["project"], action)
        started = time.monotonic()
        assert requests.post(f"{url}/webhook", json=forged, timeout=10).status_code == 201
        # Two reads of the real Label Studio, well inside the 1 s it gives a webhook.
        assert time.monotonic() - started < 1.0
    rows = reviewed["store"].corrections()
    assert len(rows) == 1  # replays upsert the one annotation
    assert rows[0]["corrected_label"] == "The reviewer's summary." and rows[0]["reviewer_level"] == 1
    assert "FORGED" not in rows[0]["payload"]


def test_a_made_up_annotation_id_records_nothing(reviewed):
    url = reviewed["backend"].url
    answer = requests.post(
        f"{url}/webhook", json=forged_event(987_654, reviewed["task"], reviewed["project"]), timeout=10
    )
    assert answer.status_code == 200 and answer.json()["recorded"] is False
    assert [row["annotation_id"] for row in reviewed["store"].corrections(include_deleted=True)] == [
        str(reviewed["id"])
    ]


def test_an_update_in_label_studio_reaches_the_store(reviewed, ls_client):
    ls_client.sdk.annotations.update(id=reviewed["id"], result=result_for("The corrected summary.", 3))
    wait_until(
        lambda: reviewed["store"].corrections()[0]["corrected_label"] == "The corrected summary.",
        timeout=30,
        what="the update recorded",
    )
    assert reviewed["store"].corrections()[0]["reviewer_level"] == 3


def test_a_deletion_counts_only_when_label_studio_confirms_it(reviewed, ls_client):
    url = reviewed["backend"].url
    forged = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": reviewed["id"]}], "project": {"id": 1}}
    answer = requests.post(f"{url}/webhook", json=forged, timeout=10)
    assert answer.status_code == 200 and answer.json()["kept"] == [reviewed["id"]]
    assert len(reviewed["store"].corrections()) == 1

    ls_client.sdk.annotations.delete(id=reviewed["id"])  # Label Studio posts ANNOTATIONS_DELETED itself
    wait_until(lambda: reviewed["store"].corrections() == [], timeout=30, what="the deletion recorded")
    assert reviewed["store"].corrections(include_deleted=True)[0]["deleted"] == 1
