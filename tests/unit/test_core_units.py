"""Pure units: dialogue parsing, families, prompts and versions, judge parsing and the G-Eval score,
label config discovery."""

import math
from pathlib import Path

import pytest

from prelabel.dialogue import InputError, parse_dialogue, render_dialogue, truncate
from prelabel.families import ModelRef, SameFamilyError, check_families, family_of
from prelabel.judge import JudgeParseError, expected_level, parse_verdict
from prelabel.label_interface import MAX_XML_DEPTH, LabelConfigError, ResultError, annotation_result, parse_label_config
from prelabel.prompts import PromptSet, render

ROOT = Path(__file__).resolve().parents[2]


# -- dialogues ------------------------------------------------------------------------------------


def test_dialogsum_lines_become_turns():
    turns = parse_dialogue("#Person1#: Hello.\n#Person2#: Hi there: how are you?\n")
    assert [(t.author, t.text) for t in turns] == [("Person1", "Hello."), ("Person2", "Hi there: how are you?")]


def test_speaker_lines_and_continuations():
    turns = parse_dialogue("Alice: We meet at 5.\nbring the slides\nBob: OK")
    assert [(t.author, t.text) for t in turns] == [("Alice", "We meet at 5. bring the slides"), ("Bob", "OK")]


def test_turn_list_is_kept_and_rendered():
    turns = parse_dialogue([{"author": "A", "text": " hi "}, {"author": "B", "text": "yo"}])
    assert render_dialogue(turns) == "A: hi\nB: yo"


@pytest.mark.parametrize(
    "value, field, problem",
    [
        (None, "dialogue", "is missing"),
        ("", "dialogue", "is empty"),
        ([{"author": "A", "text": "   "}], "dialogue", "is empty"),
        ([{"author": "A", "text": 42}], "dialogue[0].text", "must be a string, not int"),
        ([{"author": 7, "text": "x"}], "dialogue[0].author", "must be a string, not int"),
        (12, "dialogue", "not int"),
    ],
)
def test_bad_dialogues_name_the_field(value, field, problem):
    with pytest.raises(InputError) as caught:
        parse_dialogue(value, "dialogue")
    assert caught.value.field == field
    assert problem in str(caught.value)


def test_truncate_cuts_at_a_line_and_flags():
    text = "\n".join(f"A: line {i}" for i in range(100))
    cut, flagged = truncate(text, 200)
    assert flagged and len(cut) <= 200 + len("\n[... truncated ...]")
    assert cut.endswith("[... truncated ...]")
    assert truncate("short", 200) == ("short", False)


# -- families -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, family",
    [
        ("gpt-4o-mini", "openai-gpt"),
        ("gpt-3.5-turbo", "openai-gpt"),
        ("o3-mini", "openai-gpt"),
        ("claude-sonnet-4-5", "anthropic-claude"),
        ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama"),
        ("qwen2.5:0.5b", "alibaba-qwen"),
        ("gemma-3-1b-it", "google-gemini"),
        ("mistral-small-latest", "mistral"),
        ("deepseek-chat", "deepseek"),
        ("SmolLM2-135M-Instruct", "huggingface-smollm"),
    ],
)
def test_family_by_name(model, family):
    assert family_of(model, "openai") == family


def test_unknown_model_takes_explicit_family_else_provider():
    assert family_of("my-finetune", "openai", "acme") == "acme"
    assert family_of("my-finetune", "openai") == "openai-gpt"
    assert family_of("my-finetune", "anthropic") == "anthropic-claude"


def test_same_family_refused_with_both_models_named():
    annotator, judge = ModelRef.parse("openai:gpt-3.5-turbo"), ModelRef.parse("openai:gpt-4o")
    with pytest.raises(SameFamilyError) as caught:
        check_families(annotator, judge, allow_same_family=False)
    message = str(caught.value)
    assert "gpt-3.5-turbo" in message and "gpt-4o" in message and "openai-gpt" in message
    warning = check_families(annotator, judge, allow_same_family=True)
    assert warning and "WARNING" in warning
    assert check_families(annotator, ModelRef.parse("anthropic:claude-haiku-4-5"), False) is None


def test_model_spec_must_name_a_provider():
    with pytest.raises(ValueError, match="provider:model"):
        ModelRef.parse("gpt-4o")
    with pytest.raises(ValueError, match="provider:model"):
        ModelRef.parse("azure:gpt-4o")


# -- prompts and versions -------------------------------------------------------------------------


def test_render_named_and_positional_and_data_braces_untouched():
    assert (
        render("In: {input} / {label}", input="x {label} {}", label="L") == "In: ```\nx {label} {}\n``` / ```\nL\n```"
    )
    assert render("C:\n{}\nS:\n{}", input="dia", label="sum") == "C:\n```\ndia\n```\nS:\n```\nsum\n```"
    assert render("pick {labels}: {input}", input="t", labels=["a", "b"]) == "pick a, b: ```\nt\n```"


def test_default_prompts_are_the_articles():
    prompts = PromptSet.load("summarization")
    assert prompts.annotator.startswith("You are an expert in summarizing the given conversation")
    assert '"very bad", "bad", "moderate", "good", "excellent"' in prompts.judge


def test_model_version_changes_with_prompt_and_model(tmp_path):
    annotator, judge = ModelRef.parse("openai:gpt-4o-mini"), ModelRef.parse("anthropic:claude-haiku-4-5")
    base = PromptSet.load("summarization")
    version = base.model_version(annotator, judge)
    assert version.startswith("summarize@") and "gpt-4o-mini" in version and "claude-haiku-4-5" in version
    edited = tmp_path / "summarize_v2.txt"
    edited.write_text(base.annotator + "\nBe brief.")
    changed = PromptSet.load("summarization", annotator_path=edited)
    assert changed.model_version(annotator, judge) != version
    assert base.model_version(annotator, ModelRef.parse("anthropic:claude-opus-4")) != version
    assert base.model_version(annotator, judge, same_family=True).endswith("+SAME-FAMILY")


# -- judge ----------------------------------------------------------------------------------------


def test_verdict_parses_json_fence_and_bare_level():
    assert parse_verdict('{"rating": "good", "reason": "covers it"}').level == 3
    assert parse_verdict('```json\n{"rating": "Very Bad", "reason": "wrong"}\n```').level == 0
    assert parse_verdict('"excellent"').level == 4
    assert parse_verdict('{"rating": "moderate", "reason": "ok"}').score == 0.5


@pytest.mark.parametrize("text", ['{"rating": "superb", "reason": "x"}', '{"rating": 7}', "I think it is fine", "[]"])
def test_off_scale_or_malformed_verdicts_raise(text):
    with pytest.raises(JudgeParseError):
        parse_verdict(text)


def test_expected_level_hand_computed():
    tokens = ['{"', "rating", '":"', "good", '","', "reason", '":"', "ok", '"}']
    top = [[(t, 0.0)] for t in tokens]
    # At the value position: good 0.6, excellent 0.3, moderate 0.1 -> 0.6*3 + 0.3*4 + 0.1*2 = 3.2
    top[3] = [("good", math.log(0.6)), ("excellent", math.log(0.3)), ("moderate", math.log(0.1))]
    value, probabilities = expected_level(tokens, top)
    assert value == pytest.approx(3.2)
    assert probabilities["good"] == pytest.approx(0.6)


def test_expected_level_with_a_token_spanning_the_quote_and_very_bad():
    tokens = ['{"rating": "', "very", " bad", '", "reason": "x"}']
    top = [[(tokens[0], 0.0)], [("very", math.log(0.5)), ("bad", math.log(0.5))], [(" bad", 0.0)], [(tokens[3], 0.0)]]
    value, _ = expected_level(tokens, top)
    assert value == pytest.approx(0.5)  # 0.5 * 0 + 0.5 * 1


def test_expected_level_refuses_unreadable_mass():
    tokens = ['{"rating":"', "good", '"}']
    top = [[(tokens[0], 0.0)], [("good", math.log(0.2)), ("xyz", math.log(0.8))], [(tokens[2], 0.0)]]
    assert expected_level(tokens, top) is None


# -- label configs --------------------------------------------------------------------------------


def test_summarization_config_controls_found_by_type():
    config = parse_label_config((ROOT / "label_config/summarization.xml").read_text())
    assert config.kind == "summarization" and config.data_key == "dialogue" and config.object_tag == "paragraphs"
    assert config.label.name == "summary" and config.rating.name == "rating" and config.reason.name == "judge_reason"
    assert config.judge_rating.name == "judge_rating"
    result = config.result_for("A summary.", 3, "fine")
    assert [item["from_name"] for item in result] == ["summary", "judge_rating", "judge_reason"]
    assert result[0]["value"] == {"text": ["A summary."]}
    assert result[1]["value"] == {"choices": ["good"]} and result[1]["readonly"] is True
    assert result[2]["value"] == {"text": ["fine"]} and result[2]["readonly"] is True
    # The reviewer's rating is left empty: the judge's level is read from its own control.
    assert config.level_from_result(result) is None and config.judge_level_from_result(result) == 3
    assert config.label_from_result(result) == "A summary." and not config.prefills_rating(result)


def test_renamed_controls_and_rating_stars():
    judge = '<Rating name="auto_stars" toName="conv" maxRating="5" readonly="true"/>'
    xml = """<View><Paragraphs name="conv" value="$chat" nameKey="author" textKey="text"/>
      <TextArea name="my_sum" toName="conv"/><Rating name="stars" toName="conv" maxRating="5"/>{}</View>"""
    config = parse_label_config(xml.format(judge))
    assert (config.label.name, config.rating.name, config.judge_rating.name) == ("my_sum", "stars", "auto_stars")
    assert config.data_key == "chat"
    assert config.result_for("s", 0, None)[1]["value"] == {"rating": 1}
    assert config.result_for("s", 4, None)[1] == {
        "from_name": "auto_stars",
        "to_name": "conv",
        "type": "rating",
        "value": {"rating": 5},
        "origin": "prediction",
        "readonly": True,
    }
    assert config.judge_level_from_result(config.result_for("s", 2, None)) == 2
    # One Rating alone is the older shape's shared control: the reviewer's, never filled by the prediction.
    shared = parse_label_config(xml.format(""))
    assert (shared.rating.name, shared.judge_rating) == ("stars", None)
    assert [item["from_name"] for item in shared.result_for("s", 4, None)] == ["my_sum"]


def test_sentiment_config_is_classification():
    config = parse_label_config((ROOT / "label_config/sentiment.xml").read_text())
    assert config.kind == "classification" and config.class_labels == ["positive", "negative"]
    assert config.result_for("negative", None, None)[0]["value"] == {"choices": ["negative"]}


@pytest.mark.parametrize(
    "xml, message",
    [
        ("<View><Text name='t' value='$text'/></View>", "no text control"),
        ("<View><Header value='x'/></View>", "no Paragraphs or Text object"),
        ("<View><Text name='t' value='$text'/>", "not valid XML"),
        ("<View><Text name='t' value='$text'/><TextArea name='s' toName='zz'/></View>", "not an object"),
    ],
)
def test_unusable_configs_say_why(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)


# -- the harness's folders are settings ----------------------------------------------------------------


def test_harness_folders_come_from_settings(tmp_path, monkeypatch):
    from prelabel.harness import labelstudio_server
    from prelabel.harness.local_model import paths as local_model_paths

    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    for name in ("PRELABEL_LS_VENV", "PRELABEL_LOCAL_VENV", "PRELABEL_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert labelstudio_server.default_venv() == tmp_path / ".venv-labelstudio"
    assert local_model_paths.default_venv_dir() == tmp_path / ".venv-localmodel"
    assert local_model_paths.cache_dir() == tmp_path / "home" / ".cache" / "prelabel"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert local_model_paths.wheel_cache_dir() == tmp_path / "xdg" / "prelabel" / "wheels"

    monkeypatch.setenv("PRELABEL_LS_VENV", "ls")
    monkeypatch.setenv("PRELABEL_LOCAL_VENV", str(tmp_path / "local"))
    monkeypatch.setenv("PRELABEL_CACHE_DIR", "~/cache")
    assert labelstudio_server.default_venv() == tmp_path / "ls"
    assert local_model_paths.default_venv_dir() == tmp_path / "local"
    assert local_model_paths.cache_dir() == tmp_path / "home" / "cache"

    # an empty variable is the default, as before these were settings
    for name in ("PRELABEL_LS_VENV", "PRELABEL_LOCAL_VENV", "PRELABEL_CACHE_DIR"):
        monkeypatch.setenv(name, "")
    assert labelstudio_server.default_venv() == tmp_path / ".venv-labelstudio"
    assert local_model_paths.default_venv_dir() == tmp_path / ".venv-localmodel"
    assert local_model_paths.cache_dir() == tmp_path / "xdg" / "prelabel"

    # and a .env file in the working folder counts, like for every other setting
    monkeypatch.delenv("PRELABEL_LS_VENV")
    (tmp_path / ".env").write_text("PRELABEL_LS_VENV=from-dotenv\n")
    assert labelstudio_server.default_venv() == tmp_path / "from-dotenv"


def test_a_label_studio_data_dir_keeps_its_credentials(tmp_path):
    from prelabel.harness.labelstudio_server import LabelStudioServer, LabelStudioServerError
    from prelabel.labelstudio import LabelStudioError

    first = LabelStudioServer(tmp_path, password="first-password")
    (tmp_path / "label_studio.sqlite3").touch()  # as after Label Studio's first start
    again = LabelStudioServer(tmp_path)
    assert (again.password, again.token) == ("first-password", first.token)
    with pytest.raises(LabelStudioServerError, match="initialised with a different password") as raised:
        LabelStudioServer(tmp_path, password="other-password")
    assert not isinstance(raised.value, LabelStudioError)  # the server's errors are not the client's


def test_label_studio_progress_goes_through_logging(caplog, capsys, monkeypatch):
    import logging

    from prelabel.harness import labelstudio_server

    # Only pytest's handler on the root logger: a CLI test before this one may have left its console handler.
    monkeypatch.setattr(logging.getLogger(), "handlers", [caplog.handler])
    with caplog.at_level(logging.INFO, logger="prelabel.labelstudio"):
        labelstudio_server._say("Installing Label Studio [1/2]")
    assert [record.getMessage() for record in caplog.records] == ["Installing Label Studio [1/2]"]
    assert capsys.readouterr().err == ""  # the CLI's logging handler renders it
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # nobody configured logging
    labelstudio_server._say("Starting Label Studio [2/2]")
    assert capsys.readouterr().err == "label-studio: Starting Label Studio [2/2]\n"


def _rating_config(max_rating: str) -> str:
    return (
        "<View><Text name='t' value='$text'/><TextArea name='s' toName='t'/>"
        f"<Rating name='r' toName='t' maxRating='{max_rating}'/></View>"
    )


@pytest.mark.parametrize("max_rating", ["abc", "4.5", "0", "-1", "1"])
def test_a_rating_max_that_is_not_a_whole_number_of_at_least_two_is_refused(max_rating):
    with pytest.raises(LabelConfigError, match=r"Rating 'r': maxRating"):
        parse_label_config(_rating_config(max_rating))


def test_a_usable_rating_max_is_read():
    assert parse_label_config(_rating_config("10")).rating.max_rating == 10
    assert parse_label_config(_rating_config("")).rating.max_rating == 5


def test_label_config_nesting_is_capped_while_it_is_read():
    inner = "<Text name='t' value='$text'/><TextArea name='s' toName='t'/>"
    inside = MAX_XML_DEPTH - 1  # the controls sit one level below the innermost View
    assert parse_label_config("<View>" * inside + inner + "</View>" * inside).label.name == "s"
    with pytest.raises(LabelConfigError, match="deep"):
        parse_label_config("<View>" * (inside + 1) + inner + "</View>" * (inside + 1))
    with pytest.raises(LabelConfigError, match="deep"):
        parse_label_config("<View>" * 100_000 + inner + "</View>" * 100_000)


def test_annotation_results_are_checked_for_the_shape_that_is_read():
    good = [{"from_name": "s", "to_name": "t", "type": "textarea", "value": {"text": ["x"], "rating": 3}}]
    assert annotation_result(good) == good and annotation_result(None) == []
    with pytest.raises(ResultError, match=r"^annotation\.result\[0\]\.value\.rating: "):
        annotation_result([{"from_name": "s", "value": {"rating": float("nan")}}])
    with pytest.raises(ResultError, match=r"^annotation\.result\[0\]\.value\.text\[1\]: "):
        annotation_result([{"from_name": "s", "value": {"text": ["a", {}]}}])
