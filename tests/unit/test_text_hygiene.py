"""The text-hygiene functions on their own: what `redact` scrubs and what it leaves (near misses), Markdown
escaping, the template grammar's escapes, and the check for text no model can be sent."""

from __future__ import annotations

import itertools
import random

import pytest

from prelabel.dialogue import InputError, parse_dialogue, parse_text
from prelabel.evaluation.formatting import md
from prelabel.families import ModelRef
from prelabel.fencing import fence
from prelabel.prompts import escape_text, placeholders, render, with_input_section
from prelabel.providers import Completion, ProviderError, describe_error
from prelabel.providers.batch import BatchError, RequestResult
from prelabel.redact import REDACTED, redact, remember_secrets


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("Incorrect API key provided: sk-test-openai-0000.", "Incorrect API key provided: [redacted]."),
        ("key sk-ant-api03-AbC_dEf-123456789", "key [redacted]"),
        ("sk-proj-Zt7Qk2mVx9LpR4sW8nB3cD6f", "[redacted]"),
        ("Authorization: Bearer abcdefgh", "Authorization: Bearer [redacted]"),
        ("authorization='bearer eyJhbGciOi.J9x-y_z'", "authorization='bearer [redacted]'"),
        ("Authorization: Token 3f2a9c0e8b7d6a5f4e3d2c1b0a998877", "Authorization: Token [redacted]"),
        ('{"x-api-key": "AbCdEfGh12345678Zz"}', '{"x-api-key": "[redacted]"}'),
        ("api_key=0123456789abcdef0123", "api_key=[redacted]"),
        ("apiKey: 1234567890abcdefgh", "apiKey: [redacted]"),
        ('"access_token":"ya29.a0AfH6SMBx1234567"', '"access_token":"[redacted]"'),
        ("client_secret = dGhpcyBpcyBhIHNlY3JldA9==", "client_secret = [redacted]"),
        ("PASSWORD: hunter2hunter2hunter2", "PASSWORD: [redacted]"),
    ],
)
def test_key_shaped_strings_are_scrubbed(text, scrubbed):
    assert redact(text) == scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "Summary: Person1 asks for the key to room 12; Person2 says the token is on the desk.",
        "the token limit is 4096 tokens",
        "max_tokens: 1234567890123456789",  # "tokens", not "token"
        "sk-learn-metrics is a package name",  # no digit: not a key
        "task-1234567890abcdef",  # sk inside a word
        "a monkey: 1234567890abcdefgh",  # "monkey" only ends in "key"
        "keyboard: 1234567890abcdefgh",
        "the key: value",  # short
        "token: internationalization",  # long, but no digit: a word
        "sha256 3f2a9c0e8b7d6a5f4e3d2c1b0a998877 and request id req_0123456789abcdef01234567",
        "Bearer short",  # 5 characters
        "basic income of $1,200",
        "Rating: good. The summary misses the secret ingredient.",
        "openai:gpt-4o-mini: RateLimitError (HTTP 429): Rate limit reached for requests",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


def test_configured_keys_are_scrubbed_exactly_even_when_not_key_shaped(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plainword-credential")
    monkeypatch.setenv("OPENAI_API_KEY", "short")  # too short to scrub: it would be ordinary text too
    assert redact("got plainword-credential, short") == f"got {REDACTED}, short"
    remember_secrets(["from-dotenv-file-value", None, ""])  # a key read from .env, not the environment
    assert redact("x from-dotenv-file-value y") == f"x {REDACTED} y"


def test_settings_remember_their_keys_wherever_they_were_read(make_settings):
    make_settings(LABEL_STUDIO_API_KEY="ls-opaque-value-from-settings")
    assert redact("token ls-opaque-value-from-settings") == f"token {REDACTED}"


def test_every_provider_text_is_scrubbed_where_it_enters():
    ref = ModelRef.parse("openai:gpt-4o-mini")
    leaked = 'Error code: 401 - {"error": {"message": "Incorrect API key provided: sk-test-openai-0000"}}'
    assert "sk-test" not in str(ProviderError(leaked)) and REDACTED in str(ProviderError(leaked))
    assert "sk-test" not in str(BatchError(leaked))
    assert "sk-test" not in (RequestResult(custom_id="p1", error=leaked).error or "")

    class SDKError(Exception):
        status_code = 401
        message = "x" * 280 + " sk-test-openai-0000 and more"  # the key straddles the 300-character cut

    described = describe_error(ref, SDKError())
    assert "sk-test" not in described and "sk-" not in described
    completion = Completion(
        text="the key is sk-test-openai-0000",
        tokens=["the", " key", " sk-test-openai-0000"],
        top_logprobs=[[("sk-test-openai-0000", -0.1), ("good", -2.0)]],
    )
    assert completion.text == f"the key is {REDACTED}"
    assert completion.tokens == ["the", " key", f" {REDACTED}"]
    assert completion.top_logprobs == [[(REDACTED, -0.1), ("good", -2.0)]]
    # Read back from the store's JSON, an older cache entry is scrubbed too.
    stored = '{"text": "Bearer abcdefgh12345", "usage": {"input_tokens": 1, "output_tokens": 1}}'
    assert Completion.model_validate_json(stored).text == f"Bearer {REDACTED}"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("a | b", r"a \| b"),
        ("two\nlines\r\nthree", "two lines three"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert\\(1\\)&lt;/script&gt;"),
        ("[x](javascript:alert(1))", r"\[x\]\(javascript:alert\(1\)\)"),
        ("# heading", r"\# heading"),
        ("*bold* _it_ `code` ~del~ ![img](x)", r"\*bold\* \_it\_ \`code\` \~del\~ \!\[img\]\(x\)"),
        ("back\\slash & co", "back\\\\slash &amp; co"),
        ("0.53", "0.53"),
        ("$0.0011", "$0.0011"),
        (None, "-"),
        (12, "12"),
    ],
)
def test_markdown_cells_are_inert(value, shown):
    assert md(value) == shown


def test_markdown_escaping_keeps_every_character_on_one_line():
    for char in ["\n", "\r", "\v", "\f", "\x1c", "\x85", "\u2028", "\u2029"]:
        assert "\n" not in md(f"a{char}b") and "".join(md(f"a{char}b").split()) == "ab"


def test_braces_in_templates():
    assert placeholders("Say {input} and {label}; {labels}") == {"input", "label", "labels"}
    assert placeholders('{x} {"a": 1} {{ }} {{input}} {{}} {{} {input}}') == set()
    assert placeholders("a {} b {}") == {""}
    data = "x {label} {} {{input}}"
    assert render("In: {input} / {label}", input=data, label="L") == f"In: {fence(data)} / {fence('L')}"
    assert render("a {} b {} c {}", input="I", label="L") == f"a {fence('I')} b {fence('L')} c {{}}"
    assert render("keep {{input}} and {{}} and {{{label}}}: {input}", input="I") == (
        f"keep {{input}} and {{}} and {{{{label}}}}: {fence('I')}"
    )


def test_escaped_text_renders_as_itself():
    pieces = ["{", "}", "input", "label", "labels", "x", " ", "{}", "\n"]
    rng = random.Random(7)
    samples = ["".join(p) for p in itertools.product(["{", "}", "input"], repeat=5)]
    samples += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    for text in samples:
        escaped = escape_text(text)
        assert placeholders(escaped) == set(), text
        assert render(escaped + "\n{input}", input="I") == f"{text}\n{fence('I')}", text


def test_a_reviewers_instruction_is_words_unless_it_keeps_the_input_line():
    words = 'Answer like {} or {"a": 1}; keep {input}, {label} and {labels} as they are'
    template = with_input_section(words, "classification")
    assert render(template, input="t", labels=["a", "b"]) == f"{words}\nLabels: a, b\nText:\n{fence('t')}\nLabel:"
    shown = "Classify into {labels}.\nText:\n{input}\nLabel:"  # the box's template, revised
    assert with_input_section(shown, "classification") == shown
    assert with_input_section(template, "classification") == template  # sent back unchanged: the same version


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("A: hi \ud800", "data.dialogue"),
        (["A: fine", "B: \udfff"], "data.dialogue[1]"),
        ([{"author": "A", "text": "x\ud83d"}], "data.dialogue[0].text"),
        ([{"author": "\udc80", "text": "x"}], "data.dialogue[0].author"),
    ],
)
def test_a_dialogue_no_model_can_be_sent_names_its_field(value, field):
    with pytest.raises(InputError) as raised:
        parse_dialogue(value, "data.dialogue")
    assert raised.value.field == field and "cannot be encoded as UTF-8" in raised.value.problem


def test_text_no_model_can_be_sent_names_its_field_and_real_text_passes():
    with pytest.raises(InputError, match=r"'data.text': holds U\+D800 at character 5"):
        parse_text("great\ud800", "data.text")
    assert parse_text(" emoji 😀 and 中文 ", "data.text") == "emoji 😀 and 中文"
    assert parse_dialogue("A: emoji 😀")[0].text == "emoji 😀"
