"""The ML backend driven over real HTTP with Label Studio-shaped requests built from DialogSum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from prelabel.app import create_app
from prelabel.families import SameFamilyError
from prelabel.store import Store
from prelabel.testing.label_studio_fake import FakeLabelStudio
from tests.conftest import SENTIMENT_CONFIG, SUMMARY_CONFIG, ls_task


@pytest.fixture
def label_studio_fake():
    """Label Studio's annotation and project reads, on 127.0.0.1; project 7 has the summarisation config."""
    with FakeLabelStudio() as fake:
        fake.configs[7] = SUMMARY_CONFIG
        yield fake


@pytest.fixture
def backend(make_settings, serve_app):
    def start(**env):
        settings = make_settings(**env)
        return serve_app(create_app(settings)), settings

    return start


@pytest.fixture
def reviewed_backend(backend, label_studio_fake):
    """The backend with Label Studio credentials: /webhook reads annotations back from the fake."""

    def start(**env):
        return backend(**label_studio_fake.env(), **env)

    return start


def predict(url, tasks, config=SUMMARY_CONFIG, project="7.1700000000", **kwargs):
    body = {"tasks": tasks, "project": project, "label_config": config, "params": {"login": None, "context": None}}
    return requests.post(f"{url}/predict", json=body, timeout=120, **kwargs)


def test_health_and_setup(backend):
    server, _ = backend()
    health = requests.get(f"{server.url}/health", timeout=5).json()
    assert health["status"] == "UP" and health["judge"] == "anthropic:claude-haiku-4-5"
    setup = requests.post(
        f"{server.url}/setup",
        json={
            "project": "7.1700000000",
            "schema": SUMMARY_CONFIG,
            "hostname": "http://ls",
            "access_token": "t",
            "extra_params": "",
        },
        timeout=5,
    )
    assert setup.status_code == 200
    assert setup.json()["model_version"].startswith("summarize@")


def test_predict_answers_one_prediction_per_task_in_order(backend, dialogsum, provider):
    server, _ = backend()
    records = dialogsum[:10]
    response = predict(server.url, [ls_task(100 + i, r) for i, r in enumerate(records)])
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 10
    for record, result in zip(records, results):
        first_turn = record["dialogue"].splitlines()[0].split(":", 1)[1].strip()
        by_control = {item["from_name"]: item for item in result["result"]}
        assert by_control["summary"]["value"]["text"] == [f"Summary: {first_turn}"]
        assert by_control["summary"]["to_name"] == "dialogue" and by_control["summary"]["type"] == "textarea"
        # Blind reviews: the judge's level in its own read-only control, the reviewer's rating left empty.
        assert "rating" not in by_control
        assert by_control["judge_rating"]["value"]["choices"] == ["good"] and by_control["judge_rating"]["readonly"]
        assert by_control["judge_reason"]["value"]["text"] == ["rated good for its coverage."]
        assert 0.0 <= result["score"] <= 1.0 and result["score"] == 0.75
        assert result["model_version"] == results[0]["model_version"]
    assert provider.count == 20


def test_scores_follow_the_judges_levels(backend, dialogsum, llm):
    llm.rate = lambda conversation, label: len(conversation) % 5
    server, _ = backend()
    records = dialogsum[10:20]
    results = predict(server.url, [ls_task(i, r) for i, r in enumerate(records)]).json()["results"]
    for record, result in zip(records, results):
        rendered = "\n".join(
            f"{line.split(':', 1)[0].strip('#')}: {line.split(':', 1)[1].strip()}"
            for line in record["dialogue"].splitlines()
            if line.strip()
        )
        assert result["score"] == (len(rendered) % 5) / 4


def test_model_version_changes_after_a_prompt_edit(backend, dialogsum, tmp_path):
    server, _ = backend()
    before = predict(server.url, [ls_task(1, dialogsum[0])]).json()["results"][0]["model_version"]
    prompt = tmp_path / "summarize_v2.txt"
    prompt.write_text("Summarize this conversation in two sentences.\nConversation:\n{input}")
    server2, _ = backend(PRELABEL_ANNOTATOR_PROMPT=str(prompt))
    after = predict(server2.url, [ls_task(1, dialogsum[0])]).json()["results"][0]["model_version"]
    assert before != after and after.startswith("summarize_v2@")


def test_basic_auth(reviewed_backend, label_studio_fake, dialogsum):
    server, _ = reviewed_backend(BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret-pass")
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 401
    assert requests.get(f"{server.url}/health", auth=("ls", "wrong"), timeout=5).status_code == 401
    assert predict(server.url, [ls_task(1, dialogsum[0])]).status_code == 401
    assert requests.get(f"{server.url}/health", auth=("ls", "s3cret-pass"), timeout=5).status_code == 200
    assert predict(server.url, [ls_task(1, dialogsum[0])], auth=("ls", "s3cret-pass")).status_code == 200
    # Label Studio sends annotation webhooks without basic auth: they must still be recorded.
    label_studio_fake.add_annotation(5, project=7, task=1, result=[])
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "task": {"id": 1}, "annotation": {"id": 5}}
    assert requests.post(f"{server.url}/webhook", json=event, timeout=5).status_code == 201


def summary_result(summary: str, rating: str) -> list[dict[str, Any]]:
    """A reviewer's result: their summary and rating, beside the judge's read-only level it started from
    (another level, so a webhook reading the judge's control instead of the reviewer's is caught)."""
    judge = {"from_name": "judge_rating", "to_name": "dialogue", "type": "choices", "readonly": True}
    return [
        {"from_name": "summary", "to_name": "dialogue", "type": "textarea", "value": {"text": [summary]}},
        {"from_name": "rating", "to_name": "dialogue", "type": "choices", "value": {"choices": [rating]}},
        {**judge, "value": {"choices": ["excellent" if rating != "excellent" else "very bad"]}},
    ]


def annotation_event(annotation_id: int, action: str = "ANNOTATION_CREATED", **annotation: Any) -> dict[str, Any]:
    """A webhook body as Label Studio posts it (the backend reads only the ids)."""
    return {
        "action": action,
        "project": {"id": 7, "label_config": SUMMARY_CONFIG},
        "task": {"id": annotation.get("task", 42)},
        "annotation": {"id": annotation_id, **annotation},
    }


def test_webhook_answers_within_a_second_and_records_label_studios_annotation(
    reviewed_backend, label_studio_fake, dialogsum
):
    server, settings = reviewed_backend()
    predict(server.url, [ls_task(42, dialogsum[0])])
    label_studio_fake.add_annotation(
        900, project=7, task=42, parent_prediction=31, result=summary_result(dialogsum[0]["summary"], "bad")
    )
    started = time.monotonic()
    response = requests.post(f"{server.url}/webhook", json=annotation_event(900), timeout=5)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 201 and response.json()["recorded"] is True
    rows = Store(settings.store_path).corrections()
    assert len(rows) == 1
    assert rows[0]["corrected_label"] == dialogsum[0]["summary"]
    assert rows[0]["reviewer_level"] == 1 and rows[0]["task_id"] == "42" and rows[0]["parent_prediction"] == "31"
    assert rows[0]["project"] == "7"
    assert Store(settings.store_path).latest_prediction(42)["level"] == 3

    label_studio_fake.annotations[900]["result"] = summary_result(dialogsum[0]["summary"], "moderate")
    requests.post(f"{server.url}/webhook", json=annotation_event(900, "ANNOTATION_UPDATED"), timeout=5)
    rows = Store(settings.store_path).corrections()
    assert len(rows) == 1 and rows[0]["reviewer_level"] == 2

    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 900}], "project": {"id": 7}}
    # Label Studio still has it: a deletion it does not confirm changes nothing.
    kept = requests.post(f"{server.url}/webhook", json=deleted, timeout=5)
    assert kept.status_code == 200 and kept.json()["kept"] == [900] and kept.json()["deleted"] == []
    assert len(Store(settings.store_path).corrections()) == 1
    del label_studio_fake.annotations[900]
    assert requests.post(f"{server.url}/webhook", json=deleted, timeout=5).json()["deleted"] == [900]
    assert Store(settings.store_path).corrections() == []


def test_a_forged_review_changes_nothing(reviewed_backend, label_studio_fake):
    """Anyone who can reach /webhook can post; only what Label Studio holds is recorded."""
    server, settings = reviewed_backend()
    label_studio_fake.add_annotation(
        900, project=7, task=42, parent_prediction=31, result=summary_result("real", "bad")
    )
    forged = annotation_event(
        900, task=1, project=99, parent_prediction=5, was_cancelled=True, result=summary_result("forged", "excellent")
    )
    forged["project"] = {"id": 99, "label_config": RATING_CONFIG.format(5)}
    assert requests.post(f"{server.url}/webhook", json=forged, timeout=5).status_code == 201
    row = Store(settings.store_path).corrections()[0]
    assert (row["corrected_label"], row["reviewer_level"], row["task_id"], row["project"]) == ("real", 1, "42", "7")
    assert row["parent_prediction"] == "31" and row["was_cancelled"] == 0
    stored = json.loads(row["payload"])
    assert stored["annotation"]["result"] == summary_result("real", "bad") and "forged" not in row["payload"]

    # An annotation Label Studio does not have: nothing recorded, and the answer says why.
    before = stored_state(settings)
    unknown = requests.post(f"{server.url}/webhook", json=annotation_event(123456, result=[]), timeout=5)
    assert unknown.status_code == 200 and unknown.json()["recorded"] is False
    assert "Label Studio has no annotation 123456" in unknown.json()["reason"]
    assert stored_state(settings) == before


def test_replayed_events_keep_one_row_per_annotation_and_the_payload_bounded(reviewed_backend, label_studio_fake):
    server, settings = reviewed_backend()
    label_studio_fake.add_annotation(900, project=7, task=42, result=summary_result("real", "bad"))
    padded = annotation_event(900, result=summary_result("x" * 300_000, "good"))  # a 300 KB body, under 1 MB
    for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED") * 10:
        padded["action"] = action
        assert requests.post(f"{server.url}/webhook", json=padded, timeout=5).status_code == 201
    assert Store(settings.store_path).counts()["corrections"] == 1
    row = Store(settings.store_path).corrections()[0]
    assert len(row["payload"]) < 2_000  # Label Studio's record, trimmed; not the posted body
    assert set(json.loads(row["payload"])["annotation"]) >= {"id", "task", "project", "result", "parent_prediction"}


def test_a_deletion_of_ids_the_store_does_not_hold_asks_label_studio_nothing(reviewed_backend, label_studio_fake):
    server, settings = reviewed_backend()
    many = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": n} for n in range(1, 20_001)]}
    answer = requests.post(f"{server.url}/webhook", json=many, timeout=10)
    assert answer.status_code == 200 and answer.json()["deleted"] == []
    assert label_studio_fake.reads == []


def test_an_oversized_webhook_is_a_413_and_records_nothing(reviewed_backend, label_studio_fake):
    server, settings = reviewed_backend()
    label_studio_fake.add_annotation(900, project=7, task=42, result=summary_result("real", "bad"))
    before = stored_state(settings)
    huge = annotation_event(900, result=summary_result("x" * 1_100_000, "good"))
    response = requests.post(f"{server.url}/webhook", json=huge, timeout=10)
    assert response.status_code == 413, response.text
    assert "/webhook body over 1024 KB (PRELABEL_WEBHOOK_MAX_KB)" in response.json()["error"]
    assert stored_state(settings) == before and label_studio_fake.reads == []
    # /predict keeps its own, larger limit.
    assert predict(server.url, [{"id": 1, "data": {"dialogue": "A: " + "y" * 1_100_000}}]).status_code == 200


def test_without_label_studio_credentials_the_webhook_records_nothing_and_says_why(backend, caplog):
    server, settings = backend()
    before = stored_state(settings)
    event = annotation_event(900, result=summary_result("forged", "excellent"))
    with caplog.at_level("WARNING", logger="prelabel"):
        answers = [requests.post(f"{server.url}/webhook", json=event, timeout=5) for _ in range(3)]
    for answer in answers:
        assert answer.status_code == 202 and answer.json()["recorded"] is False
        assert "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in answer.json()["reason"]
        assert "prelabel pull" in answer.json()["reason"]
    assert stored_state(settings) == before
    told = [record for record in caplog.records if "LABEL_STUDIO_URL" in record.getMessage()]
    assert len(told) == 1  # logged once per process, not once per event


def test_a_label_studio_that_is_down_or_refuses_the_token_is_a_503_and_records_nothing(
    reviewed_backend, backend, label_studio_fake
):
    from prelabel.harness.labelstudio_server import free_port

    label_studio_fake.add_annotation(900, project=7, task=42, result=summary_result("real", "bad"))
    down, settings = backend(LABEL_STUDIO_URL=f"http://127.0.0.1:{free_port()}", LABEL_STUDIO_API_KEY="k" * 40)
    before = stored_state(settings)
    started = time.monotonic()
    answer = requests.post(f"{down.url}/webhook", json=annotation_event(900), timeout=10)
    assert time.monotonic() - started < 4
    assert answer.status_code == 503 and "not reachable" in answer.json()["error"], answer.text
    assert "nothing recorded" in answer.json()["error"]
    assert stored_state(settings) == before

    wrong_token, settings = backend(LABEL_STUDIO_URL=label_studio_fake.url, LABEL_STUDIO_API_KEY="not-the-token")
    answer = requests.post(f"{wrong_token.url}/webhook", json=annotation_event(900), timeout=10)
    assert answer.status_code == 503 and "LABEL_STUDIO_API_KEY" in answer.json()["error"], answer.text
    assert "not-the-token" not in answer.text
    assert Store(settings.store_path).corrections() == []

    label_studio_fake.latency = 2.0  # slower than PRELABEL_WEBHOOK_TIMEOUT
    slow, settings = reviewed_backend(PRELABEL_WEBHOOK_TIMEOUT="0.5")
    started = time.monotonic()
    answer = requests.post(f"{slow.url}/webhook", json=annotation_event(900), timeout=10)
    assert time.monotonic() - started < 1.5
    assert answer.status_code == 503 and "did not answer in time" in answer.json()["error"], answer.text
    assert Store(settings.store_path).corrections() == []


def test_a_personal_access_token_is_exchanged_and_renewed(backend, label_studio_fake):
    from prelabel.testing.label_studio_fake import personal_access_token

    label_studio_fake.token = personal_access_token()
    label_studio_fake.add_annotation(900, project=7, task=42, result=summary_result("real", "bad"))
    server, settings = backend(**label_studio_fake.env())
    assert requests.post(f"{server.url}/webhook", json=annotation_event(900), timeout=5).status_code == 201
    assert label_studio_fake.exchanges == 1  # one exchange serves both reads
    label_studio_fake.expire_access()
    event = annotation_event(900, "ANNOTATION_UPDATED")
    assert requests.post(f"{server.url}/webhook", json=event, timeout=5).status_code == 201
    assert label_studio_fake.exchanges == 2 and Store(settings.store_path).counts()["corrections"] == 1


@pytest.mark.parametrize("password", [None, ""])
def test_basic_auth_with_a_user_and_no_password_refuses_to_start(make_settings, password):
    from pydantic import ValidationError

    env = {"BASIC_AUTH_USER": "ls"} if password is None else {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": password}
    with pytest.raises(ValidationError, match="BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty"):
        make_settings(**env)
    with pytest.raises(ValidationError, match="BASIC_AUTH_PASS"):
        create_app()  # the WSGI entry point reads the same settings from the environment
    result = subprocess.run(
        [sys.executable, "-c", "import prelabel._wsgi"], env=dict(os.environ), capture_output=True, text=True
    )
    assert result.returncode != 0 and "BASIC_AUTH_USER is set but BASIC_AUTH_PASS is empty" in result.stderr


def test_a_cache_hit_makes_no_provider_call(backend, dialogsum, provider):
    server, _ = backend()
    tasks = [ls_task(i, r) for i, r in enumerate(dialogsum[:5])]
    first = predict(server.url, tasks).json()["results"]
    calls = provider.count
    second = predict(server.url, tasks).json()["results"]
    assert provider.count == calls == 10
    assert first == second
    metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert 'prelabel_llm_cache_hits_total{role="annotator",provider="openai",model="gpt-4o-mini"} 5' in metrics


def test_same_family_judge_is_refused_at_start(make_settings):
    settings = make_settings(PRELABEL_ANNOTATOR="openai:gpt-3.5-turbo", PRELABEL_JUDGE="openai:gpt-4o")
    with pytest.raises(
        SameFamilyError, match="gpt-4o and annotator openai:gpt-3.5-turbo are both of the openai-gpt family"
    ):
        create_app(settings)


def test_same_family_allowed_shows_everywhere(backend, dialogsum):
    server, _ = backend(
        PRELABEL_ANNOTATOR="openai:gpt-3.5-turbo", PRELABEL_JUDGE="openai:gpt-4o", PRELABEL_ALLOW_SAME_FAMILY="1"
    )
    assert "same-family" in requests.get(f"{server.url}/health", timeout=5).json()["warning"]
    result = predict(server.url, [ls_task(1, dialogsum[0])]).json()["results"][0]
    assert result["model_version"].endswith("+SAME-FAMILY")
    reason = next(item for item in result["result"] if item["from_name"] == "judge_reason")
    assert "same-family" in reason["value"]["text"][0]


def test_bad_tasks_fail_alone_and_the_batch_keeps_the_rest(backend, dialogsum):
    server, _ = backend(PRELABEL_MAX_INPUT_CHARS="2000")
    huge = "\n".join(f"#Person1#: sentence number {i} of a very long call" for i in range(2000))
    tasks = [
        ls_task(1, dialogsum[0]),
        {"id": 2, "data": {"text": "no dialogue field"}},
        {"id": 3, "data": {"dialogue": ""}},
        {"id": 4, "data": {"dialogue": [{"author": "A", "text": 12}]}},
        {"id": 5, "data": {"dialogue": huge}},
        ls_task(6, dialogsum[1]),
    ]
    results = predict(server.url, tasks).json()["results"]
    assert len(results) == 6
    assert results[0]["result"] and results[5]["result"]
    for failed, task in zip(results[1:4], tasks[1:4]):
        # No "result": Label Studio stores nothing, so the next retrieve asks for this task again.
        assert "result" not in failed and failed["error"].startswith(f"task {task['id']}: bad input")
    truncated = results[4]
    assert truncated["result"]
    reason = next(item for item in truncated["result"] if item["from_name"] == "judge_reason")
    assert "input truncated to 2000 characters" in reason["value"]["text"][0]


def test_bad_task_errors_name_the_task_and_field(make_settings, dialogsum):
    from prelabel.engine import Engine
    from prelabel.label_interface import parse_label_config

    engine = Engine(make_settings())
    labeler = engine.labeler(parse_label_config(SUMMARY_CONFIG))
    outcomes = engine.run_batch(labeler, [{"id": 2, "data": {"text": "x"}}, {"id": 4, "data": {"dialogue": [7]}}])
    assert outcomes[0].error == "task 2: bad input: field 'data.dialogue': is missing"
    assert "task 4" in outcomes[1].error and "data.dialogue[0]" in outcomes[1].error


def test_a_config_without_a_text_control_is_a_clear_400(backend, dialogsum):
    server, _ = backend()
    config = "<View><Paragraphs name='d' value='$dialogue'/></View>"
    response = predict(server.url, [ls_task(1, dialogsum[0])], config=config)
    assert response.status_code == 400 and "no text control" in response.json()["error"]
    setup = requests.post(f"{server.url}/setup", json={"project": "9.1", "schema": config}, timeout=5)
    assert setup.status_code == 400 and "no text control" in setup.json()["error"]


def test_malformed_requests_get_a_4xx_with_a_reason(backend):
    server, _ = backend()
    not_json = requests.post(f"{server.url}/predict", data="nope", timeout=5)
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]
    wrong_type = requests.post(f"{server.url}/predict", json={"tasks": "x"}, timeout=5)
    assert wrong_type.status_code == 400 and "tasks" in wrong_type.json()["error"]


def test_oversized_requests_get_a_413_with_a_reason(backend, dialogsum, provider):
    server, _ = backend(PRELABEL_MAX_TASKS_PER_REQUEST="100")
    too_many = predict(server.url, [{"id": i, "data": {"dialogue": "A: hi"}} for i in range(10_000)])
    assert too_many.status_code == 413 and "at most 100 at a time" in too_many.json()["error"]
    huge = requests.post(
        f"{server.url}/predict",
        data=b"x" * (10 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert huge.status_code == 413 and "over 8 MB" in huge.json()["error"]
    assert provider.count == 0


def test_sentiment_predictions(backend, sentiment):
    server, _ = backend()
    tasks = [{"id": i, "data": {"text": row["text"]}} for i, row in enumerate(sentiment[:5])]
    results = predict(server.url, tasks, config=SENTIMENT_CONFIG).json()["results"]
    assert len(results) == 5
    for result in results:
        label = next(item for item in result["result"] if item["from_name"] == "sentiment")
        assert label["value"]["choices"][0] in ("positive", "negative") and label["type"] == "choices"


def test_deadline_gives_unfinished_tasks_no_prediction(backend, dialogsum, provider):
    provider.latency = 0.6  # 1.2 s a task: two rounds of two tasks fit in 2 s, not three
    server, _ = backend(PRELABEL_PREDICT_DEADLINE="2", PRELABEL_CONCURRENCY="2")
    started = time.monotonic()
    results = predict(server.url, [ls_task(i, r) for i, r in enumerate(dialogsum[:6])]).json()["results"]
    assert time.monotonic() - started < 4
    assert len(results) == 6
    assert "result" not in results[-1] and "deadline" in results[-1]["error"]
    assert "result" in results[0] and "result" in results[1]


HOSTILE_BODIES: list[Any] = [
    b"",
    b"nope",
    b"[]",
    b"null",
    b"42",
    b'"text"',
    b"{",
    b'{"tasks": null}',
    b'{"tasks": [1, "x", null]}',
    b'{"tasks": [{"id": 1, "data": {"dialogue": 7}}]}',
    b'{"tasks": [{"id": 1, "data": []}]}',
    b'{"tasks": [], "params": "x"}',
    b'{"tasks": [{}], "params": {"context": "x"}}',
    b'{"action": 5}',
    b'{"action": "ANNOTATION_CREATED", "annotation": "x"}',
    b'{"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": "x"}, "project": {"id": "x"}}',
    b'{"project": [], "schema": 5}',
    b'{"schema": "<View><Text name=\\"t\\"/></View"}',
    "\u0000\ud7ff".encode("utf-8", "surrogatepass"),
    b"\xff\xfe\x00garbage",
]


def test_no_malformed_body_gets_a_500_or_leaks_internals(backend, tmp_path):
    server, _ = backend()
    for path in ("/predict", "/setup", "/webhook"):
        for body in HOSTILE_BODIES:
            response = requests.post(
                f"{server.url}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=10
            )
            text = response.text
            assert response.status_code < 500, (path, body, text)
            assert "Traceback" not in text and str(tmp_path) not in text and "/site-packages/" not in text, (path, body)
            if response.status_code >= 400:
                assert response.json()["error"], (path, body)  # a reason, never an empty 4xx


RATING_CONFIG = (
    "<View><Paragraphs name='dialogue' value='$dialogue'/><TextArea name='summary' toName='dialogue'/>"
    "<Rating name='stars' toName='dialogue' maxRating='{}'/></View>"
)


def stored_state(settings) -> dict[str, Any]:
    store = Store(settings.store_path)
    return {"counts": store.counts(), "corrections": store.corrections(include_deleted=True)}


@pytest.mark.parametrize("max_rating", ["abc", "2.5", "0", "-3", "1"])
def test_a_rating_without_a_usable_max_rating_is_a_400_and_stores_nothing(backend, dialogsum, provider, max_rating):
    server, settings = backend()
    config = RATING_CONFIG.format(max_rating)
    before = stored_state(settings)
    response = predict(server.url, [ls_task(1, dialogsum[0])], config=config, project="11.1")
    assert response.status_code == 400 and "maxRating" in response.json()["error"], response.text
    setup = requests.post(f"{server.url}/setup", json={"project": "12.1", "schema": config}, timeout=5)
    assert setup.status_code == 400 and "'stars'" in setup.json()["error"] and "maxRating" in setup.json()["error"]
    assert stored_state(settings) == before and provider.count == 0
    store = Store(settings.store_path)
    assert store.project_config("11") is None and store.project_config("12") is None


def test_setup_refuses_a_bad_config_before_storing_it(backend):
    server, settings = backend()
    good = requests.post(f"{server.url}/setup", json={"project": "9.1", "schema": SUMMARY_CONFIG}, timeout=5)
    assert good.status_code == 200
    for bad in ("<View><Paragraphs name='d' value='$dialogue'/></View>", "<View", RATING_CONFIG.format("0")):
        setup = requests.post(f"{server.url}/setup", json={"project": "9.2", "schema": bad}, timeout=5)
        assert setup.status_code == 400 and setup.json()["error"].startswith("project 9: ")
        assert Store(settings.store_path).project_config("9") == SUMMARY_CONFIG  # the good one is kept
        fresh = requests.post(f"{server.url}/setup", json={"project": "10.1", "schema": bad}, timeout=5)
        assert fresh.status_code == 400 and Store(settings.store_path).project_config("10") is None


SHAPELESS_RESULTS: list[tuple[Any, str]] = [
    ("x", "annotation.result: "),
    ({"from_name": "summary"}, "annotation.result: "),
    ([1], "annotation.result[0]: "),
    (["summary"], "annotation.result[0]: "),
    ([{"from_name": "summary", "value": "text"}], "annotation.result[0].value: "),
    ([{"from_name": "summary", "value": ["text"]}], "annotation.result[0].value: "),
    ([{"from_name": "summary", "value": {"text": "a summary"}}], "annotation.result[0].value.text: "),
    ([{"from_name": "summary", "value": {"text": [1, 2]}}], "annotation.result[0].value.text[0]: "),
    ([{"from_name": "summary", "value": {"text": [None]}}], "annotation.result[0].value.text[0]: "),
    ([{"from_name": "rating", "value": {"choices": "bad"}}], "annotation.result[0].value.choices: "),
    ([{"from_name": "rating", "value": {"choices": [3]}}], "annotation.result[0].value.choices[0]: "),
    ([{"from_name": "stars", "value": {"rating": "3"}}], "annotation.result[0].value.rating: "),
    ([{"from_name": "stars", "value": {"rating": None}}], "annotation.result[0].value.rating: "),
    ([{"from_name": "stars", "value": {"rating": [3]}}], "annotation.result[0].value.rating: "),
    ([{"from_name": "stars", "value": {"rating": True}}], "annotation.result[0].value.rating: "),
    ([{"value": {"text": ["a summary"]}}], "annotation.result[0].from_name: "),
    ([{"from_name": 5, "value": {"text": ["a summary"]}}], "annotation.result[0].from_name: "),
    ([{"from_name": "summary"}], "annotation.result[0].value: "),
    ([{"from_name": "summary", "value": {"text": ["ok"]}}, {"from_name": "stars"}], "annotation.result[1].value: "),
]


@pytest.mark.parametrize(("result", "named"), SHAPELESS_RESULTS)
def test_a_label_studio_result_of_the_wrong_shape_is_a_400_naming_the_field(
    reviewed_backend, label_studio_fake, result, named
):
    server, settings = reviewed_backend()
    label_studio_fake.configs[8] = RATING_CONFIG.format(5)
    before = stored_state(settings)
    for project in (7, 8):
        label_studio_fake.add_annotation(900, project=project, task=42, result=result)
        response = requests.post(f"{server.url}/webhook", json=annotation_event(900), timeout=5)
        assert response.status_code == 400, response.text
        assert named in response.json()["error"], response.json()
        assert stored_state(settings) == before


@pytest.mark.parametrize(("result", "named"), SHAPELESS_RESULTS[:3])
def test_a_posted_result_is_never_read(reviewed_backend, label_studio_fake, result, named):
    """Whatever the body carries, the shape and the content that count are Label Studio's."""
    server, settings = reviewed_backend()
    label_studio_fake.add_annotation(900, project=7, task=42, result=summary_result("the reviewer's", "good"))
    response = requests.post(f"{server.url}/webhook", json=annotation_event(900, result=result), timeout=5)
    assert response.status_code == 201, response.text
    assert Store(settings.store_path).corrections()[0]["corrected_label"] == "the reviewer's"


def test_a_well_shaped_rating_is_still_recorded(reviewed_backend, label_studio_fake):
    server, settings = reviewed_backend()
    label_studio_fake.configs[8] = RATING_CONFIG.format(5)
    label_studio_fake.add_annotation(
        901,
        project=8,
        task=42,
        result=[
            {"from_name": "summary", "to_name": "dialogue", "type": "textarea", "value": {"text": ["fixed"]}},
            {"from_name": "stars", "to_name": "dialogue", "type": "rating", "value": {"rating": 5}},
        ],
    )
    assert requests.post(f"{server.url}/webhook", json=annotation_event(901), timeout=5).status_code == 201
    row = Store(settings.store_path).corrections()[0]
    assert row["corrected_label"] == "fixed" and row["reviewer_level"] == 4


def nested_json(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


DEEP_JSON_BODIES = [
    nested_json(100_000),
    '{"tasks": ' + nested_json(100_000) + "}",
    '{"tasks": [{"id": 1, "data": {"dialogue": ' + nested_json(100_000, '"A: hi"') + "}}]}",
    '{"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": ' + nested_json(100_000) + "}}",
    '{"a": ' * 100_000 + "1" + "}" * 100_000,
    '{"tasks": [], "params": ' + nested_json(500) + "}",  # parses, but far deeper than any real request
    '{"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": ' + nested_json(200) + "}}",
]


def test_very_deep_json_is_a_400_on_every_endpoint(backend, provider):
    server, settings = backend()
    before = stored_state(settings)
    for path in ("/predict", "/setup", "/webhook"):
        for body in DEEP_JSON_BODIES:
            response = requests.post(
                f"{server.url}{path}", data=body, headers={"Content-Type": "application/json"}, timeout=30
            )
            assert response.status_code == 400, (path, body[:60], response.text)
            assert "deep" in response.json()["error"] and path in response.json()["error"]
    assert stored_state(settings) == before and provider.count == 0


def deep_config(depth: int, prompt_box: bool) -> str:
    controls = "<Paragraphs name='dialogue' value='$dialogue'/><TextArea name='summary' toName='dialogue'/>"
    if prompt_box:
        controls += "<TextArea name='prompt' toName='dialogue'/>"
    return "<View>" * depth + controls + "</View>" * depth


@pytest.mark.parametrize("prompt_box", [True, False])
def test_very_deep_xml_in_a_label_config_is_a_400(reviewed_backend, label_studio_fake, dialogsum, provider, prompt_box):
    server, settings = reviewed_backend()
    before = stored_state(settings)
    for depth in (100_000, 1_000):
        config = deep_config(depth, prompt_box)
        response = predict(server.url, [ls_task(1, dialogsum[0])], config=config, project="13.1")
        assert response.status_code == 400 and "deep" in response.json()["error"], response.text[:300]
        setup = requests.post(f"{server.url}/setup", json={"project": "13.1", "schema": config}, timeout=30)
        assert setup.status_code == 400 and "deep" in setup.json()["error"], setup.text[:300]
        # The webhook reads the project's config from Label Studio: a deep one there is refused just the same.
        label_studio_fake.configs[13] = config
        label_studio_fake.add_annotation(902, project=13, task=1, result=[])
        event = {"action": "ANNOTATION_CREATED", "project": {"id": 13}, "annotation": {"id": 902}}
        hook = requests.post(f"{server.url}/webhook", json=event, timeout=30)
        assert hook.status_code == 400 and "deep" in hook.json()["error"], hook.text[:300]
    assert stored_state(settings) == before and provider.count == 0
    assert Store(settings.store_path).project_config("13") is None
    ordinary = predict(server.url, [ls_task(1, dialogsum[0])], config=deep_config(20, prompt_box), project="14.1")
    assert ordinary.status_code == 200 and "result" in ordinary.json()["results"][0]
