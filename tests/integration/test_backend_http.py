"""The ML backend driven over real HTTP with Label Studio-shaped requests built from DialogSum."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from prelabel.app import create_app
from prelabel.families import SameFamilyError
from prelabel.store import Store
from tests.conftest import SENTIMENT_CONFIG, SUMMARY_CONFIG, ls_task


@pytest.fixture
def backend(make_settings, serve_app):
    def start(**env):
        settings = make_settings(**env)
        return serve_app(create_app(settings)), settings

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
        assert by_control["rating"]["value"]["choices"] == ["good"]
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


def test_basic_auth(backend, dialogsum):
    server, _ = backend(BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret-pass")
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 401
    assert requests.get(f"{server.url}/health", auth=("ls", "wrong"), timeout=5).status_code == 401
    assert predict(server.url, [ls_task(1, dialogsum[0])]).status_code == 401
    assert requests.get(f"{server.url}/health", auth=("ls", "s3cret-pass"), timeout=5).status_code == 200
    assert predict(server.url, [ls_task(1, dialogsum[0])], auth=("ls", "s3cret-pass")).status_code == 200
    # Label Studio sends annotation webhooks without basic auth: they must still be recorded.
    event = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 7, "label_config": SUMMARY_CONFIG},
        "task": {"id": 1},
        "annotation": {"id": 5, "task": 1, "result": []},
    }
    assert requests.post(f"{server.url}/webhook", json=event, timeout=5).status_code == 201


def test_webhook_answers_within_a_second_and_records_the_correction(backend, dialogsum, make_settings):
    server, settings = backend()
    predict(server.url, [ls_task(42, dialogsum[0])])
    event = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 7, "label_config": SUMMARY_CONFIG},
        "task": {"id": 42, "data": {"dialogue": dialogsum[0]["dialogue"]}},
        "annotation": {
            "id": 900,
            "task": 42,
            "parent_prediction": 31,
            "was_cancelled": False,
            "result": [
                {
                    "from_name": "summary",
                    "to_name": "dialogue",
                    "type": "textarea",
                    "value": {"text": [dialogsum[0]["summary"]]},
                },
                {"from_name": "rating", "to_name": "dialogue", "type": "choices", "value": {"choices": ["bad"]}},
            ],
        },
    }
    started = time.monotonic()
    response = requests.post(f"{server.url}/webhook", json=event, timeout=5)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 201 and response.json()["recorded"] is True
    rows = Store(settings.store_path).corrections()
    assert len(rows) == 1
    assert rows[0]["corrected_label"] == dialogsum[0]["summary"]
    assert rows[0]["reviewer_level"] == 1 and rows[0]["task_id"] == "42" and rows[0]["parent_prediction"] == "31"
    assert Store(settings.store_path).latest_prediction(42)["level"] == 3

    event["action"] = "ANNOTATION_UPDATED"
    event["annotation"]["result"][1]["value"]["choices"] = ["moderate"]
    requests.post(f"{server.url}/webhook", json=event, timeout=5)
    rows = Store(settings.store_path).corrections()
    assert len(rows) == 1 and rows[0]["reviewer_level"] == 2

    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 900}], "project": {"id": 7}}
    assert requests.post(f"{server.url}/webhook", json=deleted, timeout=5).json()["deleted"] == [900]
    assert Store(settings.store_path).corrections() == []


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
def test_a_webhook_result_of_the_wrong_shape_is_a_400_naming_the_field(backend, result, named):
    server, settings = backend()
    before = stored_state(settings)
    for config in (SUMMARY_CONFIG, RATING_CONFIG.format(5)):
        event = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": 7, "label_config": config},
            "task": {"id": 42},
            "annotation": {"id": 900, "task": 42, "result": result},
        }
        response = requests.post(f"{server.url}/webhook", json=event, timeout=5)
        assert response.status_code == 400, response.text
        assert named in response.json()["error"], response.json()
        assert stored_state(settings) == before


def test_a_well_shaped_rating_is_still_recorded(backend):
    server, settings = backend()
    event = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 7, "label_config": RATING_CONFIG.format(5)},
        "task": {"id": 42},
        "annotation": {
            "id": 901,
            "task": 42,
            "result": [
                {"from_name": "summary", "to_name": "dialogue", "type": "textarea", "value": {"text": ["fixed"]}},
                {"from_name": "stars", "to_name": "dialogue", "type": "rating", "value": {"rating": 5}},
            ],
        },
    }
    assert requests.post(f"{server.url}/webhook", json=event, timeout=5).status_code == 201
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
def test_very_deep_xml_in_a_label_config_is_a_400(backend, dialogsum, provider, prompt_box):
    server, settings = backend()
    before = stored_state(settings)
    for depth in (100_000, 1_000):
        config = deep_config(depth, prompt_box)
        response = predict(server.url, [ls_task(1, dialogsum[0])], config=config, project="13.1")
        assert response.status_code == 400 and "deep" in response.json()["error"], response.text[:300]
        setup = requests.post(f"{server.url}/setup", json={"project": "13.1", "schema": config}, timeout=30)
        assert setup.status_code == 400 and "deep" in setup.json()["error"], setup.text[:300]
        event = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": 13, "label_config": config},
            "annotation": {"id": 902, "result": []},
        }
        hook = requests.post(f"{server.url}/webhook", json=event, timeout=30)
        assert hook.status_code == 400 and "deep" in hook.json()["error"], hook.text[:300]
    assert stored_state(settings) == before and provider.count == 0
    assert Store(settings.store_path).project_config("13") is None
    ordinary = predict(server.url, [ls_task(1, dialogsum[0])], config=deep_config(20, prompt_box), project="14.1")
    assert ordinary.status_code == 200 and "result" in ordinary.json()["results"][0]
