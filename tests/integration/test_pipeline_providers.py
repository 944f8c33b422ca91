"""The pipeline through the real openai and anthropic SDKs against the fake provider server on 127.0.0.1."""

from __future__ import annotations

import math
import time

import pytest

from prelabel.engine import Engine
from prelabel.label_interface import parse_label_config
from prelabel.testing import FakeReply
from tests.conftest import SENTIMENT_CONFIG, SUMMARY_CONFIG, ls_task

SUMMARY = parse_label_config(SUMMARY_CONFIG)


def label_one(settings, record):
    engine = Engine(settings)
    try:
        return engine.labeler(SUMMARY).label_task(ls_task(1, record)), engine
    finally:
        engine.close()


def test_happy_path_openai_annotator_anthropic_judge(make_settings, provider, llm, dialogsum):
    outcome, engine = label_one(make_settings(), dialogsum[0])
    assert outcome.ok, outcome.error
    first_turn = dialogsum[0]["dialogue"].splitlines()[0].split(":", 1)[1].strip()
    assert outcome.label == f"Summary: {first_turn}"
    assert outcome.verdict.level == 3 and outcome.verdict.reason == "rated good for its coverage."
    assert outcome.score == 0.75
    paths = [request.path for request in provider.requests]
    assert paths == ["/v1/chat/completions", "/v1/messages"]
    judge_body = provider.requests[1].body
    assert judge_body["tool_choice"] == {"type": "tool", "name": "rate_label"}
    assert judge_body["tools"][0]["input_schema"]["properties"]["rating"]["enum"][0] == "very bad"
    usage = {row["role"]: row for row in engine.store.usage_totals()}
    assert usage["annotator"]["input_tokens"] > 0 and usage["judge"]["output_tokens"] > 0


def test_anthropic_annotator_openai_judge_uses_json_schema(make_settings, provider, dialogsum):
    settings = make_settings(PRELABEL_ANNOTATOR="anthropic:claude-haiku-4-5", PRELABEL_JUDGE="openai:gpt-4o-mini")
    outcome, _ = label_one(settings, dialogsum[1])
    assert outcome.ok and outcome.verdict.level == 3
    judge_body = provider.requests[1].body
    assert judge_body["response_format"]["type"] == "json_schema"
    assert judge_body["response_format"]["json_schema"]["strict"] is True
    assert judge_body["logprobs"] is True


def test_429_with_retry_after_is_retried_by_the_sdk(make_settings, provider, dialogsum):
    provider.fail_next(2, status=429, retry_after="1")
    started = time.monotonic()
    outcome, _ = label_one(make_settings(), dialogsum[2])
    assert outcome.ok
    assert provider.count == 4  # two 429s, then annotator and judge
    assert time.monotonic() - started >= 1.9  # Retry-After: 1 honoured twice


@pytest.mark.parametrize("status", [500, 529])
def test_server_errors_are_retried(make_settings, provider, dialogsum, status):
    provider.fail_next(1, status=status, provider="anthropic")
    outcome, _ = label_one(make_settings(), dialogsum[3])
    assert outcome.ok and outcome.verdict is not None
    assert [r.status for r in provider.requests] == [200, status, 200]


def test_errors_past_the_retries_fail_the_task_with_the_reason(make_settings, provider, dialogsum):
    provider.fail_next(3, status=500, provider="openai")
    outcome, _ = label_one(make_settings(PRELABEL_MAX_RETRIES="2"), dialogsum[3])
    assert not outcome.ok and "annotator call failed" in outcome.error and "500" in outcome.error
    assert outcome.error.startswith("task 1:")


def test_timeout_fails_the_annotator_and_leaves_judge_unrated(make_settings, provider, dialogsum):
    provider.fail_next(1, status="timeout", provider="openai")
    outcome, _ = label_one(make_settings(PRELABEL_TIMEOUT="0.5", PRELABEL_MAX_RETRIES="0"), dialogsum[4])
    assert not outcome.ok and "Timeout" in outcome.error

    provider.reset()
    provider.fail_next(1, status="timeout", provider="anthropic")
    outcome, _ = label_one(make_settings(PRELABEL_TIMEOUT="0.5", PRELABEL_MAX_RETRIES="0"), dialogsum[5])
    assert outcome.ok and outcome.verdict is None
    assert outcome.unrated_reason.startswith("judge call failed") and "Timeout" in outcome.unrated_reason


def test_malformed_judge_output_is_asked_again_once(make_settings, provider, llm, dialogsum):
    settings = make_settings(PRELABEL_JUDGE="openai:gpt-4o-mini", PRELABEL_ANNOTATOR="anthropic:claude-haiku-4-5")
    provider.queue_replies("Summary: fine", FakeReply(content="I'd say it is pretty good overall"))
    outcome, engine = label_one(settings, dialogsum[6])
    assert outcome.ok and outcome.verdict.level == 3  # the second answer parsed
    assert llm.calls.count("judge") == 1 and provider.count == 3


def test_off_scale_judge_twice_leaves_the_task_unrated_with_the_reason(make_settings, provider, dialogsum):
    settings = make_settings(PRELABEL_JUDGE="openai:gpt-4o-mini", PRELABEL_ANNOTATOR="anthropic:claude-haiku-4-5")
    provider.queue_replies(
        "Summary: fine",
        FakeReply(content='{"rating": "superb", "reason": "x"}'),
        FakeReply(content='{"rating": 9, "reason": "x"}'),
    )
    outcome, engine = label_one(settings, dialogsum[7])
    assert outcome.ok and outcome.verdict is None
    assert "did not parse twice" in outcome.unrated_reason and "superb" in outcome.unrated_reason
    assert '"rating": 9' in outcome.judge_raw
    # Nothing unparseable was cached: the same task asks the judge again.
    engine2 = Engine(settings)
    again = engine2.labeler(SUMMARY).label_task(ls_task(1, dialogsum[7]))
    assert again.verdict is not None and again.verdict.level == 3


def test_logprobs_give_the_probability_weighted_level(make_settings, provider, llm, dialogsum):
    # Alternatives at the rating token: good 0.5, excellent 0.25, moderate 0.25 -> 0.5*3 + 0.25*4 + 0.25*2 = 3.0
    llm.rate = lambda conversation, label: 3
    llm.judge_top = [("good", math.log(0.5)), ("excellent", math.log(0.25)), ("moderate", math.log(0.25))]
    settings = make_settings(PRELABEL_JUDGE="openai:gpt-4o-mini", PRELABEL_ANNOTATOR="anthropic:claude-haiku-4-5")
    outcome, _ = label_one(settings, dialogsum[8])
    assert outcome.verdict.expected_level == pytest.approx(3.0)
    assert outcome.verdict.level_probabilities["excellent"] == pytest.approx(0.25)

    llm.judge_top = [("good", math.log(0.6)), ("excellent", math.log(0.4))]  # 0.6*3 + 0.4*4 = 3.4
    outcome, _ = label_one(
        make_settings(
            PRELABEL_JUDGE="openai:gpt-4o-mini",
            PRELABEL_ANNOTATOR="anthropic:x",
            PRELABEL_ANNOTATOR_FAMILY="acme",
            PRELABEL_CACHE="0",
        ),
        dialogsum[8],
    )
    assert outcome.verdict.expected_level == pytest.approx(3.4)
    assert outcome.score == pytest.approx(3.4 / 4)


def test_classification_answers_one_of_the_configs_labels(make_settings, provider, sentiment):
    config = parse_label_config(SENTIMENT_CONFIG)
    engine = Engine(make_settings())
    labeler = engine.labeler(config)
    tasks = [{"id": i, "data": {"text": row["text"]}} for i, row in enumerate(sentiment[:6])]
    outcomes = engine.run_batch(labeler, tasks)
    assert all(o.ok and o.label in ("positive", "negative") for o in outcomes)
    annotator_body = provider.requests[0].body
    assert annotator_body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
        "positive",
        "negative",
    ]
    assert all(o.verdict is not None for o in outcomes)  # the config has a rating control, so it is judged


def test_classification_answer_outside_the_labels_is_retried_then_fails(make_settings, provider, sentiment):
    config = parse_label_config(SENTIMENT_CONFIG)
    engine = Engine(make_settings())
    provider.queue_replies(FakeReply(content='{"label": "neutral"}'), FakeReply(content='{"label": "meh"}'))
    outcome = engine.labeler(config).label_task({"id": 5, "data": {"text": sentiment[0]["text"]}})
    assert not outcome.ok and "neutral" in outcome.error and "meh" in outcome.error


def test_concurrency_is_bounded(make_settings, provider, dialogsum):
    provider.latency = 0.2
    engine = Engine(make_settings(PRELABEL_CONCURRENCY="4"))
    tasks = [ls_task(i, record) for i, record in enumerate(dialogsum[:12])]
    started = time.monotonic()
    outcomes = engine.run_batch(engine.labeler(SUMMARY), tasks)
    elapsed = time.monotonic() - started
    assert [o.task_id for o in outcomes] == list(range(12)) and all(o.ok for o in outcomes)
    assert provider.max_in_flight == 4
    assert elapsed < 12 * 2 * 0.2  # faster than one at a time


def test_malformed_response_body_fails_cleanly_and_the_batch_goes_on(make_settings, provider, dialogsum):
    provider.fail_next(1, status="malformed", provider="anthropic")
    engine = Engine(make_settings(PRELABEL_MAX_RETRIES="0", PRELABEL_CONCURRENCY="1"))
    outcomes = engine.run_batch(engine.labeler(SUMMARY), [ls_task(1, dialogsum[0]), ls_task(2, dialogsum[1])])
    assert outcomes[0].ok and outcomes[0].verdict is None
    assert "malformed response body" in outcomes[0].unrated_reason
    assert outcomes[1].ok and outcomes[1].verdict is not None


def test_identical_calls_in_flight_at_once_are_made_once(make_settings, provider, dialogsum):
    provider.latency = 0.3
    engine = Engine(make_settings(PRELABEL_CONCURRENCY="8"))
    tasks = [ls_task(i, dialogsum[0]) for i in range(6)]  # the same dialogue six times, all at once
    outcomes = engine.run_batch(engine.labeler(SUMMARY), tasks)
    assert all(o.ok and o.verdict for o in outcomes)
    assert provider.count == 2  # one annotator and one judge call; the others waited for them


def test_an_endpoint_that_refuses_logprobs_is_asked_without_them_and_remembered(
    make_settings, provider, llm, dialogsum, caplog
):
    # A llama.cpp-like server: 400 whenever log-probabilities are asked for. The first judge call is asked
    # again without them, the endpoint is remembered, and every task is rated with the plain level.
    scripted = provider.responder

    def refuse_logprobs(request):
        if request.wants_logprobs:
            return FakeReply(status=400, error_message="'logprobs' is not supported by this server")
        return scripted(request)

    provider.responder = refuse_logprobs
    settings = make_settings(PRELABEL_JUDGE="openai:gpt-4o-mini", PRELABEL_ANNOTATOR="anthropic:claude-haiku-4-5")
    engine = Engine(settings)
    try:
        labeler = engine.labeler(SUMMARY)
        with caplog.at_level("WARNING", logger="prelabel"):
            outcomes = [labeler.label_task(ls_task(i, record)) for i, record in enumerate(dialogsum[:3])]
    finally:
        engine.close()
    assert all(o.ok and o.verdict is not None and o.unrated_reason is None for o in outcomes), outcomes
    assert all(o.verdict.expected_level is None for o in outcomes)  # the plain level: no G-Eval without them
    judge = [r for r in provider.requests if r.path == "/v1/chat/completions"]
    assert [bool(r.body.get("logprobs")) for r in judge] == [True, False, False, False]
    notes = [r.message for r in caplog.records if "refused log-probabilities" in r.message]
    assert len(notes) == 1 and "not supported" in notes[0]


def test_a_400_that_is_not_about_logprobs_fails_with_both_reasons(make_settings, provider, llm, dialogsum):
    scripted = provider.responder

    def judge_refuses(request):
        if request.path == "/v1/chat/completions":  # the judge (openai) refuses the request whatever it holds
            return FakeReply(status=400, error_message="prompt too long")
        return scripted(request)

    provider.responder = judge_refuses
    settings = make_settings(PRELABEL_JUDGE="openai:gpt-4o-mini", PRELABEL_ANNOTATOR="anthropic:claude-haiku-4-5")
    engine = Engine(settings)
    try:
        outcome = engine.labeler(SUMMARY).label_task(ls_task(1, dialogsum[0]))
        assert outcome.ok and outcome.verdict is None
        assert "prompt too long" in outcome.unrated_reason and "first, with log-probabilities" in outcome.unrated_reason
        assert engine.judge.logprobs_refused is None  # nothing about log-probabilities is remembered
    finally:
        engine.close()
    judge = [r for r in provider.requests if r.path == "/v1/chat/completions"]
    assert [bool(r.body.get("logprobs")) for r in judge] == [True, False]  # one retry, not a loop
