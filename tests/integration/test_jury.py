"""Juries: several judges in PRELABEL_JUDGE, each of another family than the annotator's, through the real SDKs
against the fake providers on 127.0.0.1 (an Anthropic juror and an OpenAI-compatible llama at its own endpoint)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from prelabel.costs import UsageMeter
from prelabel.engine import Engine, build_engine, close_engine
from prelabel.evaluation.report import REPORT_HTML, REPORT_MD
from prelabel.evaluation.runs import load_items, load_run
from prelabel.families import SameFamilyError
from prelabel.judge import LEVELS
from prelabel.label_interface import parse_label_config
from prelabel.labeling.batch import label_file_batch
from prelabel.labeling.live import label_file
from prelabel.labeling.output import BulkRecord
from prelabel.pipeline import JurorVerdict, aggregate
from prelabel.predictions import prediction_for
from prelabel.providers import ProviderError
from prelabel.providers.batch import BatchError
from prelabel.push import judge_rating, outcome_from_record, read_labels
from prelabel.review_sampling import JudgeRating, draw_round, probability_at_least
from prelabel.scripts import evaluate as evaluate_command
from prelabel.store import Store
from prelabel.testing import FakeReply, FakeRequest
from tests.conftest import DIALOGSUM, ROOT, SUMMARY_CONFIG, ScriptedLLM, ls_task, section
from tests.integration.test_bulk import read_output, write_pool

SUMMARY = parse_label_config(SUMMARY_CONFIG)
CLAUDE = "anthropic:claude-haiku-4-5"
LLAMA = "openai:llama-3.1-8b"


class JuryLLM(ScriptedLLM):
    """The annotator of ScriptedLLM; each juror rates by its model: `levels[model](conversation)`, or a reply
    of its own from `replies[model]` (an error, an answer that does not parse)."""

    def __init__(self) -> None:
        super().__init__()
        self.levels: dict[str, Any] = {"claude-haiku-4-5": lambda text: 3, "llama-3.1-8b": lambda text: 1}
        self.replies: dict[str, Any] = {}

    def _judge(self, request: FakeRequest, prompt: str) -> FakeReply | dict:
        if request.model in self.replies:
            return self.replies[request.model]
        level = self.levels[request.model](section(prompt, "Conversation"))
        answer = {"rating": LEVELS[level], "reason": f"{request.model} finds it {LEVELS[level]}."}
        return answer if request.tool else FakeReply(content=json.dumps(answer))


@pytest.fixture
def llm() -> JuryLLM:
    return JuryLLM()


@pytest.fixture
def jury(make_settings, provider):
    """Settings of a jury of two: Claude, and a llama at an OpenAI-compatible endpoint of its own."""

    def build(**overrides: Any):
        return make_settings(PRELABEL_JUDGE=f"{CLAUDE},{LLAMA}@{provider.base_url}", **overrides)

    return build


def judge_requests(provider) -> list[str]:
    return [r.model for r in provider.requests if r.model != "gpt-4o-mini"]


def usage(settings) -> dict[tuple[str, str], dict[str, Any]]:
    """The usage log's rows by (role, model), read from the store file."""
    store = Store(settings.store_path)
    try:
        return {(row["role"], row["model"]): row for row in store.usage_totals()}
    finally:
        store.close()


def label_one(settings, record, meter=None):
    engine = build_engine(settings, meter)
    try:
        return engine.labeler(SUMMARY).label_task(ls_task(1, record)), engine
    finally:
        close_engine(engine)


def test_a_jury_of_two_rates_cached_and_metered_per_model(jury, provider, dialogsum):
    settings = jury()
    assert [ref.spec for ref in settings.judges] == [CLAUDE, LLAMA]
    assert settings.judges[1].base_url == provider.base_url and settings.judges[1].family == "meta-llama"
    meter = UsageMeter()
    outcome, engine = label_one(settings, dialogsum[0], meter)
    assert outcome.ok, outcome.error
    # good (3) and bad (1): the lower median is bad, the mean expected level 2.0, the score 0.5.
    assert outcome.verdict.level == 1 and outcome.verdict.expected_level == 2.0 and outcome.score == 0.5
    assert outcome.disagreement == 2
    assert [(j.model, j.level, j.expected_level) for j in outcome.jury] == [(CLAUDE, 3, 3.0), (LLAMA, 1, 1.0)]
    assert outcome.verdict.reason == (
        "claude-haiku-4-5: claude-haiku-4-5 finds it good. | llama-3.1-8b: llama-3.1-8b finds it bad."
    )
    assert outcome.model_version.endswith(":gpt-4o-mini+claude-haiku-4-5+llama-3.1-8b")
    assert not outcome.warnings
    assert sorted(judge_requests(provider)) == ["claude-haiku-4-5", "llama-3.1-8b"]
    llama_body = next(r.body for r in provider.requests if r.model == "llama-3.1-8b")
    assert llama_body["logprobs"] is True  # an OpenAI-compatible juror is asked for log-probs
    # Metered and logged per model: each juror a judge row of its own.
    metered = {(u.role, u.model): u for u in meter.roles()}
    assert set(metered) == {("annotator", "gpt-4o-mini"), ("judge", "claude-haiku-4-5"), ("judge", "llama-3.1-8b")}
    assert all(u.calls == 1 and u.input_tokens > 0 for u in metered.values())
    logged = usage(settings)
    assert logged[("judge", "llama-3.1-8b")]["calls"] == 1 and logged[("judge", "claude-haiku-4-5")]["calls"] == 1

    # A rerun asks nobody: every juror's answer is in the cache, and the verdict is the same.
    before = provider.count
    again, _ = label_one(jury(), dialogsum[0], UsageMeter())
    assert provider.count == before
    assert again.verdict == outcome.verdict and again.jury == outcome.jury
    logged = usage(settings)
    assert (
        logged[("judge", "llama-3.1-8b")]["cache_hits"] == 1
        and logged[("judge", "claude-haiku-4-5")]["cache_hits"] == 1
    )


def test_the_jury_verdict_is_the_lower_median_and_the_mean_expected_level():
    def jurors(*levels: int, expected: list[float | None] | None = None) -> list[JurorVerdict]:
        expected = expected or [None] * len(levels)
        return [
            JurorVerdict(model=f"openai:m{i}", level=level, expected_level=e, reason=f"r{i}")
            for i, (level, e) in enumerate(zip(levels, expected))
        ]

    assert aggregate(jurors(0, 4, 2)).level == 2
    assert aggregate(jurors(4, 1, 2, 3)).level == 2  # even count: the lower of the middle two
    verdict = aggregate(jurors(4, 1, 2, 3, expected=[3.5, 1.25, None, None]))
    assert verdict.expected_level == pytest.approx((3.5 + 1.25 + 2 + 3) / 4) and verdict.score == round(9.75 / 16, 4)
    assert aggregate([JurorVerdict(model="openai:m", unrated_reason="x")]) is None
    # A juror without a level is left out of both figures.
    mixed = [*jurors(1, 3), JurorVerdict(model="openai:m9", unrated_reason="judge call failed: x")]
    assert aggregate(mixed).level == 1 and aggregate(mixed).expected_level == 2.0


def test_g_eval_expected_levels_are_averaged(jury, provider, llm, dialogsum):
    # The llama juror's rating token: bad 0.5, moderate 0.5 -> expected 1.5; Claude has no log-probs: 3.
    llm.replies["llama-3.1-8b"] = FakeReply(
        content='{"reason": "thin", "rating": "bad"}',
        logprobs=[
            ('{"reason": "thin", "rating": "', 0.0, [('{"reason": "thin", "rating": "', 0.0)]),
            ("bad", math.log(0.5), [("bad", math.log(0.5)), ("moderate", math.log(0.5))]),
            ('"}', 0.0, [('"}', 0.0)]),
        ],
    )
    outcome, _ = label_one(jury(), dialogsum[1])
    assert [j.expected_level for j in outcome.jury] == [3.0, pytest.approx(1.5)]
    assert outcome.verdict.expected_level == pytest.approx(2.25) and outcome.score == pytest.approx(2.25 / 4)


def test_a_failing_juror_leaves_the_others_verdict_with_a_warning(jury, provider, llm, dialogsum):
    llm.replies["llama-3.1-8b"] = FakeReply(status=400, error_message="model overloaded")
    outcome, _ = label_one(jury(), dialogsum[2])
    assert outcome.ok and outcome.unrated_reason is None
    assert outcome.verdict.level == 3 and outcome.score == 0.75 and outcome.disagreement == 0
    assert outcome.jury[1].level is None and outcome.jury[1].unrated_reason.startswith("judge call failed")
    assert any(w.startswith(f"juror {LLAMA} left out of the jury: judge call failed") for w in outcome.warnings)
    # The reviewer reads which juror is missing.
    reason = SUMMARY.reason_from_result(prediction_for(outcome, SUMMARY)["result"])
    assert reason.startswith("jury: claude-haiku-4-5 good, llama-3.1-8b unrated (spread 0). ")

    # A rerun asks the failed juror again, and only it.
    del llm.replies["llama-3.1-8b"]
    before = provider.count
    again, _ = label_one(jury(), dialogsum[2])
    assert [r.model for r in provider.requests[before:]] == ["llama-3.1-8b"]
    assert again.verdict.level == 1 and again.disagreement == 2 and not again.warnings


def test_an_unparsed_juror_is_asked_twice_then_left_out_and_no_rating_leaves_the_item_unrated(
    jury, provider, llm, dialogsum
):
    llm.replies["llama-3.1-8b"] = FakeReply(content="pretty decent I suppose")
    outcome, _ = label_one(jury(), dialogsum[3])
    assert judge_requests(provider).count("llama-3.1-8b") == 2  # the two-tries rule, per juror
    assert outcome.verdict.level == 3 and "did not parse twice" in outcome.jury[1].unrated_reason
    assert "pretty decent" in outcome.judge_raw

    provider.reset()
    llm.replies["claude-haiku-4-5"] = {"rating": "superb", "reason": "x"}
    outcome, _ = label_one(jury(PRELABEL_MAX_RETRIES="0"), dialogsum[4])
    assert outcome.ok and outcome.verdict is None and outcome.jury and outcome.disagreement is None
    assert outcome.unrated_reason.startswith("judge answer did not parse twice")
    assert f"({CLAUDE})" in outcome.unrated_reason and f"({LLAMA})" in outcome.unrated_reason

    # A passing failure of one juror and a parse failure of the other: the item is worth rating again.
    provider.reset()
    llm.replies["llama-3.1-8b"] = FakeReply(status=400, error_message="gone")
    outcome, _ = label_one(jury(PRELABEL_MAX_RETRIES="0"), dialogsum[5])
    assert outcome.verdict is None and outcome.unrated_reason.startswith("judge call failed")


def test_one_judge_keeps_its_output_and_model_version(make_settings, provider, dialogsum, tmp_path):
    settings = make_settings()
    outcome, _ = label_one(settings, dialogsum[0])
    assert outcome.jury == [] and outcome.disagreement is None
    assert outcome.model_version.split(":", 1)[1] == "gpt-4o-mini+claude-haiku-4-5"
    line = json.loads(BulkRecord.from_outcome("a", outcome).line())
    assert list(line) == [
        "source_id",
        "label",
        "rating",
        "level",
        "score",
        "reason",
        "unrated_reason",
        "error",
        "model_version",
    ]
    reason = SUMMARY.reason_from_result(prediction_for(outcome, SUMMARY)["result"])
    assert reason == "claude-haiku-4-5 finds it good."


def test_bulk_output_carries_the_jury_and_a_rerun_makes_no_call(jury, provider, llm, dialogsum, tmp_path):
    llm.levels["llama-3.1-8b"] = lambda text: 3 if len(text) % 2 else 0
    settings = jury(PRELABEL_CONCURRENCY="4")
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 12)
    label_file(settings, SUMMARY, pool, tmp_path / "one.jsonl")
    rows = read_output(tmp_path / "one.jsonl")
    assert len(rows) == 12 and all(row["error"] is None for row in rows)
    for row in rows:
        llama = row["jury"][LLAMA]
        assert row["jury"] == {CLAUDE: 3, LLAMA: llama} and row["disagreement"] == 3 - llama
        assert row["level"] == min(3, llama) and row["score"] == round((3 + llama) / 8, 4)
    assert {row["disagreement"] for row in rows} == {0, 3}  # both kinds of item are in the pool
    calls = provider.count
    assert calls == 36

    # Into fresh outputs: the first rerun answers from the call cache, the next from the item memo; no call,
    # the same bytes.
    for name in ("two.jsonl", "three.jsonl"):
        label_file(jury(PRELABEL_CONCURRENCY="4"), SUMMARY, pool, tmp_path / name)
        assert provider.count == calls
        lines = (tmp_path / name).read_bytes().splitlines()
        assert sorted(lines) == sorted((tmp_path / "one.jsonl").read_bytes().splitlines())  # written as they end
    logged = usage(settings)
    assert logged[("judge", "llama-3.1-8b")]["cache_hits"] == 24
    assert logged[("judge", "claude-haiku-4-5")]["cache_hits"] == 24

    # The labels file feeds predictions and routing with the jury.
    labels = read_labels(tmp_path / "one.jsonl")
    split = next(record for record in labels.values() if record.disagreement == 3)
    reason = SUMMARY.reason_from_result(prediction_for(outcome_from_record(split), SUMMARY)["result"])
    assert reason.startswith("jury: claude-haiku-4-5 good, llama-3.1-8b very bad (spread 3). claude-haiku-4-5: ")
    assert judge_rating(split) == JudgeRating(level=0, expected_level=1.5, jury_levels=[3, 0])


def test_the_reviewers_rating_is_never_prefilled_and_the_judges_control_holds_the_aggregate(jury, dialogsum):
    outcome, _ = label_one(jury(), dialogsum[0])
    prediction = prediction_for(outcome, SUMMARY)
    result = prediction["result"]
    assert SUMMARY.rating is not None and SUMMARY.judge_rating is not None
    assert not SUMMARY.prefills_rating(result) and SUMMARY.level_from_result(result) is None
    assert SUMMARY.judge_level_from_result(result) == 1
    assert SUMMARY.reason_from_result(result).startswith("jury: claude-haiku-4-5 good, llama-3.1-8b bad (spread 2). ")
    assert prediction["score"] == 0.5


def test_each_juror_is_checked_against_the_annotators_family(make_settings, provider):
    same = make_settings(PRELABEL_JUDGE=f"{CLAUDE},openai:gpt-4.1-mini@{provider.base_url}")
    with pytest.raises(SameFamilyError, match="gpt-4.1-mini"):
        Engine(same)
    allowed = make_settings(
        PRELABEL_JUDGE=f"{CLAUDE},openai:gpt-4.1-mini@{provider.base_url}", PRELABEL_ALLOW_SAME_FAMILY="1"
    )
    engine = Engine(allowed)
    assert "gpt-4.1-mini" in engine.family_warning and "claude" not in engine.family_warning
    assert engine.labeler(SUMMARY).model_version.endswith("+claude-haiku-4-5+gpt-4.1-mini+SAME-FAMILY")
    # Two jurors of one family: allowed, with a warning.
    pair = Engine(make_settings(PRELABEL_JUDGE=f"{CLAUDE},anthropic:claude-sonnet-4-5"))
    assert pair.family_warning is None
    assert "jurors of one family" in pair.jury_warning and "anthropic-claude" in pair.jury_warning


def test_settings_name_the_bad_entry(make_settings, provider):
    for value, expected in [
        (f"{CLAUDE},,{LLAMA}", "PRELABEL_JUDGE entry 2 of"),
        (f"{CLAUDE},gemini-pro", "PRELABEL_JUDGE entry 'gemini-pro'"),
        (f"{CLAUDE},mistral:large@http://x/v1", "PRELABEL_JUDGE entry 'mistral:large@http://x/v1'"),
        (f"{CLAUDE}, {CLAUDE}@http://127.0.0.1:1/v1", "listed twice"),
    ]:
        with pytest.raises(ValidationError, match=expected):
            make_settings(PRELABEL_JUDGE=value)
    # PRELABEL_JUDGE_BASE_URL and PRELABEL_JUDGE_FAMILY apply to the first juror; an entry's @url wins.
    settings = make_settings(
        PRELABEL_JUDGE=f"openai:judge-a,{LLAMA}@http://127.0.0.1:9/v1,openai:qwen2.5-7b",
        PRELABEL_JUDGE_BASE_URL="http://127.0.0.1:8/v1",
        PRELABEL_JUDGE_FAMILY="acme",
    )
    assert [(r.model, r.base_url, r.family) for r in settings.judges] == [
        ("judge-a", "http://127.0.0.1:8/v1", "acme"),
        ("llama-3.1-8b", "http://127.0.0.1:9/v1", "meta-llama"),
        ("qwen2.5-7b", None, "alibaba-qwen"),
    ]
    assert settings.judge == settings.judges[0]


def test_each_jurors_key_is_checked(make_settings, provider):
    settings = make_settings(
        PRELABEL_JUDGE=f"{LLAMA}@{provider.base_url},{CLAUDE}", ANTHROPIC_API_KEY="", ANTHROPIC_BASE_URL=""
    )
    with pytest.raises(ProviderError, match=f"{CLAUDE}: ANTHROPIC_API_KEY is not set"):
        Engine(settings)


def test_batch_api_refuses_a_jury(jury, dialogsum, tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 2)
    with pytest.raises(BatchError, match="PRELABEL_JUDGE lists 2 judges.*--batch-api"):
        label_file_batch(jury(), SUMMARY, pool, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_routing_gives_a_split_jury_more_reviews():
    split = JudgeRating(level=1, expected_level=2.0, jury_levels=[3, 1])
    agreed = JudgeRating(level=3, expected_level=3.0, jury_levels=[3, 3])
    low = JudgeRating(level=0, expected_level=0.5, jury_levels=[1, 0, 0])
    assert probability_at_least(split) == pytest.approx(1.5 / 3)
    assert probability_at_least(agreed) == pytest.approx(2.5 / 3)
    assert probability_at_least(low) == pytest.approx(0.5 / 4)
    # With one judge, the logistic figure as before.
    assert probability_at_least(JudgeRating(level=3)) == pytest.approx(1 / (1 + math.exp(-0.5 / 0.25)))
    ratings = [agreed] * 30 + [split] * 10
    draw = draw_round("uncertain", ratings, len(ratings), 8, seed=1)
    assert draw.basis == "the jurors' shares at the threshold"
    assert draw.probabilities[-1] > draw.probabilities[0]
    assert sum(draw.probabilities) == pytest.approx(8)


def evaluate_app() -> typer.Typer:
    app = typer.Typer()
    app.command(name="evaluate")(evaluate_command.evaluate)
    app.command(name="report")(evaluate_command.report)
    return app


def test_evaluate_reports_the_jurors_pairwise_kappa(jury, provider, llm, tmp_path: Path):
    llm.levels["claude-haiku-4-5"] = lambda text: len(text) % 5
    llm.levels["llama-3.1-8b"] = lambda text: min(4, len(text) % 5 + len(text) % 2)
    jury(PRELABEL_CONCURRENCY="4")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        evaluate_app(),
        [
            "evaluate",
            str(DIALOGSUM),
            "--label-config",
            str(ROOT / "label_config" / "summarization.xml"),
            "--eval-set",
            str(tmp_path / "eval_set.jsonl"),
            "--size",
            "30",
            "--seed",
            "0",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    run = load_run(out)
    (name,) = run.versions
    summary = run.versions[name]
    items = load_items(out, name)
    assert all(len(item.jury or []) == 2 for item in items)
    pairs = [(item.jury[0].level, item.jury[1].level) for item in items]
    assert all(item.disagreement == abs(a - b) for item, (a, b) in zip(items, pairs))
    (pair,) = summary.jury_agreement
    expected = cohen_kappa_score([a for a, _ in pairs], [b for _, b in pairs], labels=range(5), weights="quadratic")
    assert (pair.a, pair.b, pair.n) == (CLAUDE, LLAMA, 30)
    assert pair.kappa == pytest.approx(expected) and 0 < expected < 1
    assert "the jurors' agreement" in result.output and f"{expected:.2f}" in result.output
    report = (out / REPORT_MD).read_text(encoding="utf-8")
    html = (out / REPORT_HTML).read_text(encoding="utf-8")
    assert "The jurors' agreement" in report and f"{expected:.2f}" in report and "Jury agreement:" in report
    assert 'class="jury-agreement"' in html and f"{expected:.2f}" in html


def test_an_item_with_one_juror_cached_is_not_answered_from_the_cache_alone(jury, provider, llm, dialogsum, tmp_path):
    llm.replies["llama-3.1-8b"] = FakeReply(status=400, error_message="gone")
    settings = jury()
    pool = tmp_path / "pool.jsonl"
    write_pool(pool, dialogsum, 3)
    label_file(settings, SUMMARY, pool, tmp_path / "one.jsonl")
    assert all(row["jury"] == {CLAUDE: 3, LLAMA: None} for row in read_output(tmp_path / "one.jsonl"))
    # Claude's answers are cached, llama's are not: the rerun asks llama alone, through the live path.
    del llm.replies["llama-3.1-8b"]
    before = provider.count
    label_file(jury(), SUMMARY, pool, tmp_path / "two.jsonl")
    assert [r.model for r in provider.requests[before:]] == ["llama-3.1-8b"] * 3
    rows = read_output(tmp_path / "two.jsonl")
    assert all(row["jury"] == {CLAUDE: 3, LLAMA: 1} and row["disagreement"] == 2 for row in rows)


def test_a_jury_that_gave_no_rating_warns_nothing_beyond_its_reason(jury, provider, llm, dialogsum):
    llm.replies["llama-3.1-8b"] = FakeReply(status=400, error_message="gone")
    llm.replies["claude-haiku-4-5"] = FakeReply(status=400, error_message="gone too")
    outcome, _ = label_one(jury(PRELABEL_MAX_RETRIES="0"), dialogsum[6])
    assert outcome.verdict is None and not outcome.warnings and outcome.score is None
    assert outcome.unrated_reason.count("judge call failed") == 2
    prediction = prediction_for(outcome, SUMMARY)
    assert "score" not in prediction
    assert SUMMARY.reason_from_result(prediction["result"]).startswith("unrated: judge call failed")
