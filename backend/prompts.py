"""Prompt templates, rendering, and versioning by content.

Templates are text files with {input}, {label} and {labels} placeholders; the article's originals use a
bare {} (input first, then label), which is accepted too. Rendering is plain substitution, so braces in the
templates or in the data are never interpreted.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import BaseModel

from backend.families import ModelRef

PROMPTS_DIR = Path(__file__).parent / "prompts"

DEFAULT_TEMPLATES = {
    "summarization": ("summarize.txt", "judge_summary.txt"),
    "classification": ("classify.txt", "judge_classify.txt"),
}


class PromptError(ValueError):
    """A prompt template cannot be read or lacks its placeholders."""


_PLACEHOLDER = re.compile(r"\{(input|label|labels)\}")


def render(template: str, *, input: str, label: str = "", labels: list[str] | None = None) -> str:
    if "{input}" not in template and "{}" in template:
        # The article's positional form: the first {} is the input, the second the label.
        first, _, rest = template.partition("{}")
        before, found, after = rest.partition("{}")
        return first + input + (before + label + after if found else rest)
    values = {"input": input, "label": label, "labels": ", ".join(labels or [])}
    # One pass over the template, so a placeholder that appears inside the data stays as it is.
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def read_template(path: Path, role: str, needs_label: bool) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PromptError(f"{role} prompt {path}: {error.strerror or error}") from error
    if "{input}" not in text and "{}" not in text:
        raise PromptError(f"{role} prompt {path} has no {{input}} (or {{}}) placeholder")
    if needs_label and "{label}" not in text and text.count("{}") < 2:
        raise PromptError(f"{role} prompt {path} has no {{label}} placeholder for the label to rate")
    return text


class PromptSet(BaseModel, frozen=True):
    """The annotator and judge templates of one prompt version."""

    name: str
    annotator: str
    judge: str

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for part in (self.annotator, "\x00", self.judge):
            digest.update(part.encode("utf-8"))
        return digest.hexdigest()[:8]

    def model_version(self, annotator: ModelRef, judge: ModelRef | None, same_family: bool = False) -> str:
        """Changes whenever a prompt or a model changes, so Label Studio predicts again."""
        models = annotator.model + (f"+{judge.model}" if judge else "")
        flag = "+SAME-FAMILY" if same_family else ""
        return f"{self.name}@{self.content_hash}:{models}{flag}"

    @classmethod
    def load(
        cls,
        kind: str,
        annotator_path: Path | None = None,
        judge_path: Path | None = None,
        name: str | None = None,
    ) -> "PromptSet":
        default_annotator, default_judge = DEFAULT_TEMPLATES[kind]
        annotator_file = annotator_path or PROMPTS_DIR / default_annotator
        judge_file = judge_path or PROMPTS_DIR / default_judge
        return cls(
            name=name or annotator_file.stem,
            annotator=read_template(annotator_file, "annotator", needs_label=False),
            judge=read_template(judge_file, "judge", needs_label=True),
        )
