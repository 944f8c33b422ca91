"""Few-shot examples from reviewers' corrections: for each input, the k reviewed examples most similar to it
(TF-IDF cosine, stdlib only) go into the annotator prompt, with the label the reviewer settled on.

The examples are placed where the template has an `{examples}` slot, else just before the input's heading
line ("Conversation:", "Text:") or the input itself. The judge prompt is left alone: the judge rates the
label, it does not learn from corrections.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prelabel.fencing import fence
from prelabel.metrics import tokenize
from prelabel.pipeline import Labeler
from prelabel.prompts import PromptSet, placeholder_position

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.label_interface import LabelConfig

EXAMPLES_SLOT = "{examples}"


class FewShotError(ValueError):
    """The corrections file cannot be used for few-shot examples."""


class FewShotExample(BaseModel):
    source_id: str | None = None
    input: str
    label: str


def load_corrections(path: Path) -> list[FewShotExample]:
    """Examples from a corrections JSONL written by `prelabel pull`: the input and the reviewer's label.

    Rows without a reviewer label are skipped; the same input twice keeps its last correction.
    """
    examples: dict[str, FewShotExample] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise FewShotError(f"{path}: {error.strerror or error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FewShotError(f"{path} line {number}: not valid JSON: {error.msg}") from None
        text, label = row.get("input"), row.get("corrected_label")
        if not isinstance(text, str) or not text.strip() or not isinstance(label, str) or not label.strip():
            continue
        sid = row.get("source_id")
        examples[text.strip()] = FewShotExample(
            source_id=None if sid is None else str(sid), input=text.strip(), label=label.strip()
        )
    if not examples:
        raise FewShotError(f"{path}: no row has both an input and a reviewer's corrected label")
    return list(examples.values())


def _unit(weights: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(math.fsum(w * w for w in weights.values()))
    return {t: w / norm for t, w in weights.items()} if norm else {}


class TfidfIndex:
    """TF-IDF vectors (raw term counts, smoothed idf = ln((1 + N) / (1 + df)) + 1, L2 norm: scikit-learn's
    TfidfVectorizer defaults) over the examples, queried by cosine similarity."""

    def __init__(self, examples: Sequence[FewShotExample]):
        self.examples = list(examples)
        documents = [Counter(tokenize(e.input)) for e in self.examples]
        df: Counter[str] = Counter()
        for counts in documents:
            df.update(counts.keys())
        n = len(documents)
        self.idf = {term: math.log((1 + n) / (1 + count)) + 1 for term, count in df.items()}
        self.vectors = [self.vector_of_counts(counts) for counts in documents]

    def vector_of_counts(self, counts: Counter[str]) -> dict[str, float]:
        # Terms no example has carry no weight: they cannot make any example more similar.
        return _unit({t: c * self.idf[t] for t, c in counts.items() if t in self.idf})

    def vector(self, text: str) -> dict[str, float]:
        return self.vector_of_counts(Counter(tokenize(text)))

    def similarities(self, text: str) -> list[float]:
        query = self.vector(text)
        return [math.fsum(w * doc.get(t, 0.0) for t, w in query.items()) for doc in self.vectors]

    def nearest(self, text: str, k: int, exclude_source: str | None = None) -> list[tuple[FewShotExample, float]]:
        """The k most similar examples, best first (ties by position). The input itself is never its own
        example: an example with the same text or source id is left out, or evaluation would leak the answer."""
        own = text.strip()
        scored = [
            (example, score, i)
            for i, (example, score) in enumerate(zip(self.examples, self.similarities(text)))
            if example.input != own and (exclude_source is None or example.source_id != exclude_source)
        ]
        scored.sort(key=lambda item: (-item[1], item[2]))
        return [(example, score) for example, score, _ in scored[: max(k, 0)]]


def format_examples(examples: Sequence[FewShotExample], kind: str) -> str:
    if not examples:
        return ""
    input_name, label_name = ("conversation", "summary") if kind == "summarization" else ("text", "label")
    # Headings differ from the template's own ("Conversation:") so the real input stays unambiguous.
    # Examples are data like the input: fenced, so a reviewer's text cannot read as instructions either.
    blocks = [
        f"FewShotExample {i} {input_name}:\n{fence(e.input)}\nExample {i} corrected {label_name}:\n{fence(e.label)}"
        for i, e in enumerate(examples, start=1)
    ]
    return "Examples corrected by human reviewers:\n\n" + "\n\n".join(blocks) + "\n\n"


def with_examples_slot(template: str, tag: str) -> str:
    """The template with an `{examples}` slot ahead of the input; `tag` names the corrections and k, so the
    prompt hash (and with it model_version) changes whenever they do."""
    marker = f"[few-shot {tag}]\n"
    if EXAMPLES_SLOT in template:
        return template.replace(EXAMPLES_SLOT, marker + EXAMPLES_SLOT, 1)
    at = placeholder_position(template, "input")
    if at is None:
        at = placeholder_position(template, "")
    if at is None:  # a template without its input is refused when read; nothing to put the slot before
        at = len(template)
    line_start = template.rfind("\n", 0, at) + 1
    if not template[line_start:at].strip():  # the placeholder starts its line: put the slot above its heading
        heading_start = template.rfind("\n", 0, max(line_start - 1, 0)) + 1
        heading = template[heading_start:line_start].strip()
        if heading.endswith(":") and len(heading) <= 40:
            line_start = heading_start
    return template[:line_start] + marker + EXAMPLES_SLOT + template[line_start:]


def corrections_digest(examples: Sequence[FewShotExample]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.input.encode("utf-8") + b"\x00" + example.label.encode("utf-8") + b"\x01")
    return digest.hexdigest()[:8]


def fewshot_prompts(prompts: PromptSet, examples: Sequence[FewShotExample], k: int) -> PromptSet:
    tag = f"k={k} corrections={corrections_digest(examples)}"
    return prompts.model_copy(update={"annotator": with_examples_slot(prompts.annotator, tag)})


_SLOT = re.compile(r"\[few-shot [^\]\n]*\]\n\{examples\}")


def fill_examples(prompt: str, examples_text: str) -> str:
    """Fill the slot of a rendered prompt; the tag line only versions the template and is not sent. The slot
    precedes the input, so the first match is the template's own even when the input holds the same text."""
    return _SLOT.sub(lambda _: examples_text, prompt, count=1)


def fewshot_labeler(engine: Engine, config: LabelConfig, prompts: PromptSet, index: TfidfIndex, k: int) -> Any:
    """A Labeler whose annotator prompt carries the k nearest corrected examples of each input."""

    class FewShotLabeler(Labeler):
        def annotator_prompt(self, text: str) -> str:
            chosen = [example for example, _ in index.nearest(text, k)]
            return fill_examples(super().annotator_prompt(text), format_examples(chosen, self.config.kind))

    return FewShotLabeler(engine, config, fewshot_prompts(prompts, index.examples, k))
