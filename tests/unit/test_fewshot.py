"""Few-shot from corrections: TF-IDF similarity (checked against scikit-learn), leakage guard, prompt slot."""

from __future__ import annotations

import json

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from prelabel.fewshot import (
    FewShotError,
    FewShotExample,
    TfidfIndex,
    fewshot_prompts,
    fill_examples,
    format_examples,
    load_corrections,
    with_examples_slot,
)
from prelabel.metrics import tokenize
from prelabel.prompts import PROMPTS_DIR, PromptSet, render

DOCS = [
    "A: The train to Boston leaves at noon.\nB: I'll book two tickets.",
    "A: Let's cook pasta tonight.\nB: I'll buy tomatoes and basil.",
    "A: My flight to Boston was delayed.\nB: Take the train next time.",
    "A: The concert starts at eight.\nB: I'll bring the tickets.",
]


def examples() -> list[FewShotExample]:
    return [FewShotExample(source_id=f"c{i}", input=d, label=f"label {i}") for i, d in enumerate(DOCS)]


def test_similarities_equal_sklearn_tfidf_cosine():
    index = TfidfIndex(examples())
    query = "A: Is there a train to Boston tomorrow?\nB: Yes, at noon. I will buy tickets."
    vectorizer = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None)
    matrix = vectorizer.fit_transform(DOCS)
    expected = cosine_similarity(vectorizer.transform([query]), matrix)[0]
    assert index.similarities(query) == pytest.approx(list(expected))


def test_nearest_by_hand_and_never_the_input_itself():
    index = TfidfIndex(examples())
    nearest = index.nearest("train to Boston", k=2)
    assert [e.source_id for e, _ in nearest] == ["c0", "c2"]
    assert nearest[0][1] >= nearest[1][1] > 0
    own = index.nearest(DOCS[0], k=3)
    assert "c0" not in [e.source_id for e, _ in own]  # the same text would leak its reviewer's label
    assert "c2" not in [e.source_id for e, _ in index.nearest("boston", k=3, exclude_source="c2")]
    assert index.nearest("anything", k=0) == []
    assert len(index.nearest("zzz unknown words", k=10)) == 4  # no shared term: all similarity 0, in file order


def test_load_corrections_keeps_reviewed_rows(tmp_path):
    path = tmp_path / "corrections.jsonl"
    rows = [
        {"source_id": 1, "input": "A: hi", "corrected_label": "Greeting."},
        {"source_id": 2, "input": "A: bye", "corrected_label": None},
        {"source_id": 3, "input": "A: hi", "corrected_label": "A greeting."},  # later correction of the same input
        {"source_id": 4, "input": "", "corrected_label": "x"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    loaded = load_corrections(path)
    assert [(e.source_id, e.label) for e in loaded] == [("3", "A greeting.")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps(rows[1]) + "\n", encoding="utf-8")
    with pytest.raises(FewShotError):
        load_corrections(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(FewShotError, match="line 1"):
        load_corrections(bad)


def test_slot_goes_above_the_input_heading_and_changes_the_version():
    base = PromptSet.load("summarization")
    shot = fewshot_prompts(base, examples(), k=2)
    assert shot.content_hash != base.content_hash
    assert fewshot_prompts(base, examples()[:3], k=2).content_hash != shot.content_hash
    rendered = render(shot.annotator, input="A: {examples} inside the data")
    block = format_examples(examples()[:2], "summarization")
    prompt = fill_examples(rendered, block)
    assert prompt.index("Examples corrected by human reviewers") < prompt.index(
        "Conversation:\n```\nA: {examples} inside"
    )
    assert "[few-shot" not in prompt and prompt.count("corrected summary:") == 2
    assert prompt.endswith("A: {examples} inside the data\n```")  # the data's own braces are untouched


def test_slot_with_positional_and_explicit_templates():
    positional = with_examples_slot("Summarize this.\n{}", "k=1")
    assert fill_examples(render(positional, input="DATA"), "EX\n") == "Summarize this.\nEX\n```\nDATA\n```"
    explicit = with_examples_slot("{examples}Then: {input}", "k=1")
    assert fill_examples(render(explicit, input="X"), "EX ") == "EX Then: ```\nX\n```"
    classify = (PROMPTS_DIR / "classify.txt").read_text(encoding="utf-8")
    filled = fill_examples(
        render(with_examples_slot(classify, "k=1"), input="great", labels=["a", "b"]),
        format_examples(examples()[:1], "classification"),
    )
    assert filled.index("FewShotExample 1 text:\n```\n") < filled.index("Text:\n```\ngreat\n```")


def test_slot_goes_before_the_real_input_not_an_escaped_one():
    # "{{input}}" is the text "{input}": the examples go above the input placeholder that follows it.
    template = "Write {{input}} as a summary.\nConversation:\n{input}"
    filled = fill_examples(render(with_examples_slot(template, "k=1"), input="DATA"), "EX\n")
    assert filled == "Write {input} as a summary.\nEX\nConversation:\n```\nDATA\n```"
