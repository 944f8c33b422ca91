"""Prompt templates, rendering, and versioning by content.

Templates are text files with {input}, {label} and {labels} placeholders; the article's originals use a
bare {} (input first, then label), which is accepted too. Rendering is plain substitution, so braces in the
data, and any other braces in the template ({x}, {"a": 1}, {{), are never interpreted. A placeholder written
with doubled braces ({{input}}, {{}}) is the literal text with one brace less ({input}, {}): that is how a
reviewer's instruction keeps its own "{input}" or "{}" as words.

A prompt revised outside a file (a reviewer's instruction typed in Label Studio) becomes a named version:
its text under MODEL_DIR/prompts/<name>.txt and a row in the store, so `evaluate --prompt NAME` can use it.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sqlite3
import time
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel

from prelabel.families import ModelRef
from prelabel.fencing import RENDER_FORMAT, fence
from prelabel.schema import connect

PROMPTS_DIR = Path(str(files("prelabel").joinpath("prompt_templates")))  # package data

DEFAULT_TEMPLATES = {
    "summarization": ("summarize.txt", "judge_summary.txt"),
    "classification": ("classify.txt", "judge_classify.txt"),
}


class PromptError(ValueError):
    """A prompt template cannot be read or lacks its placeholders."""


# A placeholder-shaped run of braces: {input}, {label}, {labels}, {} (the positional form) with one brace on
# each side, or an escape of one with more ({{input}} is the text "{input}"). Whole runs are matched, so "{{}"
# or "{input}}" (uneven braces) is text as it stands.
_BRACED = re.compile(r"(?<!\{)(\{+)(input|labels|label|)(\}+)(?!\})")


def _placeholder(match: re.Match[str]) -> str | None:
    """The placeholder's name ("" for the positional {}) when the run is one, None when it is text."""
    opening, name, closing = match.groups()
    return name if len(opening) == len(closing) == 1 else None


def _unescaped(match: re.Match[str]) -> str:
    """The text a braced run stands for: an escape loses one brace on each side, anything else is as it is."""
    opening, name, closing = match.groups()
    if len(opening) == len(closing):
        return opening[1:] + name + closing[1:]
    return match.group(0)


def placeholders(template: str) -> set[str]:
    """The names of the template's placeholders ("" for the positional {}); escaped ones are text."""
    return {name for match in _BRACED.finditer(template) if (name := _placeholder(match)) is not None}


def placeholder_position(template: str, name: str) -> int | None:
    """Where the template's first placeholder `name` ("" for {}) starts; escaped ones are text, not found."""
    for match in _BRACED.finditer(template):
        if _placeholder(match) == name:
            return match.start(2) - 1
    return None


def escape_text(text: str) -> str:
    """`text` as template text that renders as itself: every placeholder-shaped run gets one more brace on each
    side. For text from people (a reviewer's instruction), which must never be taken for placeholders."""

    def more_braces(match: re.Match[str]) -> str:
        opening, name, closing = match.groups()
        return "{" + match.group(0) + "}" if len(opening) == len(closing) else match.group(0)

    return _BRACED.sub(more_braces, text)


def render(template: str, *, input: str, label: str = "", labels: list[str] | None = None) -> str:
    """The prompt for one item. The input and the label are data: each is fenced (backend/fencing.py), so
    nothing inside them reads as the template's headings or instructions."""
    values = {"input": fence(input), "label": fence(label), "labels": ", ".join(labels or [])}
    # The template is split once (_parts); the data is put in its slots, never scanned for placeholders.
    return "".join(part if name is None else values[name] for part, name in _parts(template))


@functools.lru_cache(maxsize=256)
def _parts(template: str) -> tuple[tuple[str, str | None], ...]:
    """The template as literal text and slots: (text, None) or ("", name). Escaped braces lose one level; the
    article's positional form maps the first {} to the input and the second to the label, any more are text."""
    positional = iter(["input", "label"] if "input" not in placeholders(template) else [])
    parts: list[tuple[str, str | None]] = []
    at = 0
    for match in _BRACED.finditer(template):
        parts.append((template[at : match.start()], None))
        at = match.end()
        name = _placeholder(match)
        if name is None:
            parts.append((_unescaped(match), None))
        elif name == "":
            slot = next(positional, None)
            parts.append(("{}", None) if slot is None else ("", slot))
        else:
            parts.append(("", name))
    parts.append((template[at:], None))
    return tuple(parts)


def read_template(path: Path, role: str, needs_label: bool) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PromptError(f"{role} prompt {path}: {error.strerror or error}") from error
    names = placeholders(text)
    if "input" not in names and "" not in names:
        raise PromptError(f"{role} prompt {path} has no {{input}} (or {{}}) placeholder")
    positional = sum(1 for match in _BRACED.finditer(text) if _placeholder(match) == "")
    if needs_label and "label" not in names and ("input" in names or positional < 2):
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
        for part in (self.annotator, "\x00", self.judge, "\x00", RENDER_FORMAT):
            digest.update(part.encode("utf-8"))
        return digest.hexdigest()[:8]

    def model_version(
        self, annotator: ModelRef, judge: ModelRef | Sequence[ModelRef] | None, same_family: bool = False
    ) -> str:
        """Changes whenever a prompt or a model changes, so Label Studio predicts again. A jury names every
        juror, in order ("...:gpt-4o-mini+claude-haiku-4-5+llama-3.1-8b")."""
        jurors = [] if judge is None else [judge] if isinstance(judge, ModelRef) else list(judge)
        models = annotator.model + "".join(f"+{juror.model}" for juror in jurors)
        flag = "+SAME-FAMILY" if same_family else ""
        return f"{self.name}@{self.content_hash}:{models}{flag}"

    @classmethod
    def load(
        cls,
        kind: str,
        annotator_path: Path | None = None,
        judge_path: Path | None = None,
        name: str | None = None,
    ) -> PromptSet:
        default_annotator, default_judge = DEFAULT_TEMPLATES[kind]
        annotator_file = annotator_path or PROMPTS_DIR / default_annotator
        judge_file = judge_path or PROMPTS_DIR / default_judge
        return cls(
            name=name or annotator_file.stem,
            annotator=read_template(annotator_file, "annotator", needs_label=False),
            judge=read_template(judge_file, "judge", needs_label=True),
        )


# -- named prompt versions ---------------------------------------------------------------------------

# What a reviewer's instruction lacks to become a template: where the input goes.
INPUT_SECTIONS = {
    "summarization": "\nConversation:\n{input}",
    "classification": "\nLabels: {labels}\nText:\n{input}\nLabel:",
}

_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


# The prompt box shows the template in use, whose input stands on a line of its own ("Conversation:\n{input}").
_INPUT_LINE = re.compile(r"^[ \t]*\{input\}[ \t]*$", re.MULTILINE)


def with_input_section(text: str, kind: str) -> str:
    """A reviewer's instruction as a template. Text that keeps the box's `{input}` line is the template revised
    and is kept as it is (its {input}, {label} and {labels} are placeholders; {} and any other braces are
    text). Any other text is words only: its braces, "{input}" and "{}" included, are escaped so it reaches
    the model verbatim, and the input section is appended."""
    if _INPUT_LINE.search(text):
        return text
    return escape_text(text.rstrip()) + INPUT_SECTIONS[kind]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


class PromptVersion(BaseModel):
    """An annotator template saved under MODEL_DIR/prompts and recorded in the store by name."""

    name: str
    kind: str
    content_hash: str  # of the annotator template alone; model_version also hashes the judge's
    path: str
    origin: str | None = None  # where it came from, e.g. "label studio project 3, task 17"
    created_at: float


class PromptRegistry:
    """Named annotator prompt versions: a file per version under MODEL_DIR/prompts and a row in the store's
    prompt_versions table (backend/schema.py).

    The same text saved twice is one version (found by its hash), so a reviewer re-sending an instruction
    never multiplies versions.
    """

    def __init__(self, model_dir: Path, store_path: Path):
        self.directory = Path(model_dir) / "prompts"
        self.store_path = Path(store_path)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.store_path)  # the store's file, its schema (prompt_versions too) up to date

    def save(
        self, text: str, kind: str, name: str | None = None, base_name: str = "prompt", origin: str | None = None
    ) -> PromptVersion:
        """The version holding this template: the existing one, or a new one named `name` (default
        `<base_name>-<hash>`). Raises PromptError if the name is taken by other text."""
        if kind not in DEFAULT_TEMPLATES:
            raise PromptError(f"unknown task kind {kind!r}")
        digest = text_hash(text)
        name = name or f"{base_name}-{digest}"
        if not _VERSION_NAME.match(name):
            raise PromptError(f"prompt version name {name!r}: use letters, digits and . _ + -, at most 64 characters")
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT * FROM prompt_versions WHERE kind = ? AND content_hash = ?", (kind, digest)
                ).fetchone()
                if row is None:
                    taken = db.execute("SELECT content_hash FROM prompt_versions WHERE name = ?", (name,)).fetchone()
                    if taken is not None:
                        raise PromptError(f"prompt version {name!r} already exists with other text")
                    path = self.directory / f"{name}.txt"
                    self.directory.mkdir(parents=True, exist_ok=True)
                    path.write_text(text, encoding="utf-8")
                    db.execute(
                        "INSERT INTO prompt_versions (name, kind, content_hash, path, origin, created_at)"
                        " VALUES (?,?,?,?,?,?)",
                        (name, kind, digest, str(path), origin, time.time()),
                    )
                    row = db.execute("SELECT * FROM prompt_versions WHERE name = ?", (name,)).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return PromptVersion(**dict(row))
        finally:
            db.close()

    def get(self, name: str) -> PromptVersion | None:
        db = self._connect()
        try:
            row = db.execute("SELECT * FROM prompt_versions WHERE name = ?", (name,)).fetchone()
        finally:
            db.close()
        return PromptVersion(**dict(row)) if row else None

    def versions(self) -> list[PromptVersion]:
        db = self._connect()
        try:
            rows = db.execute("SELECT * FROM prompt_versions ORDER BY created_at, name").fetchall()
        finally:
            db.close()
        return [PromptVersion(**dict(row)) for row in rows]

    def path_of(self, name: str) -> Path:
        """The template file of a stored version; raises PromptError naming the versions there are."""
        version = self.get(name)
        if version is None:
            known = ", ".join(v.name for v in self.versions()) or "none"
            raise PromptError(
                f"no prompt version {name!r} in {self.store_path} (stored: {known}); use NAME=PATH for a template file"
            )
        return Path(version.path)
