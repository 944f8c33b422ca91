"""Named prompt versions, the prompt box of a label config, and saved results turned back into predictions."""

from __future__ import annotations

import pytest

from prelabel.label_interface import parse_label_config
from prelabel.labeling.output import BulkRecord
from prelabel.model import ContextError, instruction_from_context
from prelabel.predictions import PromptControl, prediction_for, split_prompt_control
from prelabel.prompts import PromptError, PromptRegistry, text_hash, with_input_section
from prelabel.push import outcome_from_record
from tests.conftest import ROOT, SUMMARY_CONFIG

PROMPT_CONFIG = (ROOT / "label_config" / "summarization_prompt.xml").read_text()


def test_the_same_text_is_one_version_and_a_taken_name_is_refused(tmp_path):
    registry = PromptRegistry(tmp_path, tmp_path / "store.sqlite3")
    first = registry.save("Summarize.\n{input}", "summarization", base_name="summarize", origin="task 1")
    again = registry.save("Summarize.\n{input}", "summarization", base_name="summarize", origin="task 2")
    assert first == again and first.name == "summarize-" + text_hash("Summarize.\n{input}")
    assert (tmp_path / "prompts" / f"{first.name}.txt").read_text() == "Summarize.\n{input}"
    with pytest.raises(PromptError, match="already exists with other text"):
        registry.save("Other.\n{input}", "summarization", name=first.name)
    with pytest.raises(PromptError, match="no prompt version 'missing'.*stored: " + first.name):
        registry.path_of("missing")
    assert [v.name for v in registry.versions()] == [first.name]


def test_an_instruction_without_a_placeholder_gets_the_input_section():
    assert with_input_section("Be brief.", "summarization") == "Be brief.\nConversation:\n{input}"
    # The template the prompt box shows, revised, keeps its own {input} line; an inline "{input}" is words.
    assert (
        with_input_section("Be brief.\nConversation:\n{input}", "summarization") == "Be brief.\nConversation:\n{input}"
    )
    assert with_input_section("Be brief: {input}", "summarization") == "Be brief: {{input}}\nConversation:\n{input}"


def test_the_prompt_box_is_never_the_label_wherever_it_stands():
    first = PROMPT_CONFIG.replace("<View>", '<View><TextArea name="prompt_text" toName="dialogue"/>', 1)
    stripped, control = split_prompt_control(first)
    assert control == PromptControl(name="prompt_text", to_name="dialogue")
    config = parse_label_config(stripped)
    assert (config.label.name, config.rating.name, config.reason.name) == ("summary", "rating", "judge_reason")
    assert split_prompt_control(SUMMARY_CONFIG) == (SUMMARY_CONFIG, None)


def test_the_instruction_is_read_from_the_context_regions():
    control = PromptControl(name="prompt", to_name="dialogue")
    context = {
        "result": [
            {"from_name": "summary", "value": {"text": ["x"]}},
            {"from_name": "prompt", "value": {"text": ["Line one", "line two"]}},
        ]
    }
    assert instruction_from_context(context, control) == "Line one\nline two"
    assert instruction_from_context({"result": []}, control) is None
    assert instruction_from_context(None, control) is None
    with pytest.raises(ContextError, match="params.context.result"):
        instruction_from_context({"result": {"from_name": "prompt"}}, control)


def test_a_saved_result_becomes_the_same_prediction_g_eval_score_included():
    config = parse_label_config(SUMMARY_CONFIG)
    record = BulkRecord(
        source_id="a", label="A summary.", rating="good", level=3, score=0.6875, reason="fine.", model_version="v@1:m+j"
    )
    prediction = prediction_for(outcome_from_record(record), config)
    assert prediction["score"] == 0.6875 and prediction["model_version"] == "v@1:m+j"
    assert [item["value"] for item in prediction["result"]] == [
        {"text": ["A summary."]},
        {"choices": ["good"]},
        {"text": ["fine."]},
    ]
    failed = outcome_from_record(BulkRecord(source_id="b", error="task b: boom", model_version="v@1:m+j"))
    assert not failed.ok


def test_evaluate_refuses_a_stored_version_of_another_task_kind(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from prelabel.scripts.cli import app
    from tests.conftest import DATA

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "unused")
    registry = PromptRegistry(tmp_path, tmp_path / "prelabel.sqlite3")
    version = registry.save("Summarize briefly.\n{input}", "summarization", base_name="summarize")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(DATA / "sentiment" / "amazon.jsonl"),
            "--prompt",
            version.name,
            "-c",
            str(ROOT / "label_config" / "sentiment.xml"),
            "--size",
            "2",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "written for summarization" in said and "classification config" in said
    assert not (tmp_path / "run" / "summary.json").exists()  # refused before any call
