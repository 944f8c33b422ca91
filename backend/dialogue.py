"""Task inputs: dialogues normalised to turns, and plain texts for classification.

A dialogue arrives as a list of {author, text} turns (Label Studio's Paragraphs format) or as one string of
"Speaker: text" / "#Person1#: text" lines. Everything downstream sees the same list of Turn.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel


class InputError(ValueError):
    """A task's input cannot be used; the message names the field and what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field!r}: {problem}")
        self.field = field
        self.problem = problem


class Turn(BaseModel):
    author: str
    text: str


# "#Person1#: text" (DialogSum) or "Speaker name: text" (a name of up to 40 characters, no colon).
_SPEAKER_LINE = re.compile(r"^\s*(#[^#\n]{1,40}#|[^:\n#]{1,40}?)\s*:\s?(.*)$")


def parse_dialogue(value: Any, field: str = "dialogue") -> list[Turn]:
    """Normalise a dialogue to turns; raise InputError naming `field` when it cannot be used."""
    if value is None:
        raise InputError(field, "is missing")
    if isinstance(value, str):
        turns = _parse_lines(sendable(value, field))
    elif isinstance(value, list):
        turns = [_parse_turn(item, field, index) for index, item in enumerate(value)]
    else:
        raise InputError(field, f"must be a list of {{author, text}} turns or a string, not {type(value).__name__}")
    turns = [turn for turn in turns if turn.text.strip()]
    if not turns:
        raise InputError(field, "is empty: no turn has any text")
    return turns


def _parse_turn(item: Any, field: str, index: int) -> Turn:
    where = f"{field}[{index}]"
    if isinstance(item, str):
        parsed = _parse_lines(sendable(item, where))
        if len(parsed) == 1:
            return parsed[0]
        return Turn(author="", text=item)
    if not isinstance(item, dict):
        raise InputError(where, f"must be an object with author and text, not {type(item).__name__}")
    text = item.get("text")
    author = item.get("author", item.get("speaker", ""))
    if not isinstance(text, str):
        raise InputError(f"{where}.text", f"must be a string, not {type(text).__name__}")
    if not isinstance(author, str):
        raise InputError(f"{where}.author", f"must be a string, not {type(author).__name__}")
    sendable(text, f"{where}.text")
    sendable(author, f"{where}.author")
    return Turn(author=author.strip().strip("#"), text=text.strip())


def _parse_lines(text: str) -> list[Turn]:
    turns: list[Turn] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _SPEAKER_LINE.match(line)
        if match:
            turns.append(Turn(author=match.group(1).strip().strip("#"), text=match.group(2).strip()))
        elif turns:
            # A continuation line belongs to the previous speaker.
            turns[-1] = Turn(author=turns[-1].author, text=f"{turns[-1].text} {line.strip()}")
        else:
            turns.append(Turn(author="", text=line.strip()))
    return turns


def sendable(text: str, field: str) -> str:
    """The text, or InputError naming `field` when it holds a character UTF-8 cannot encode (a lone surrogate,
    as a JSON "\\ud800" escape gives): no provider can be sent it, so the task fails here, once, instead of
    failing inside every call and its retries."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        raise InputError(
            field,
            f"holds U+{code:04X} at character {error.start}, which cannot be encoded as UTF-8 (a lone surrogate): "
            "it cannot be sent to a model",
        ) from None
    return text


def render_dialogue(turns: list[Turn]) -> str:
    """The dialogue as the annotator and judge read it: one "Author: text" line per turn."""
    return "\n".join(f"{turn.author}: {turn.text}" if turn.author else turn.text for turn in turns)


def parse_text(value: Any, field: str = "text") -> str:
    """A plain text input (classification)."""
    if value is None:
        raise InputError(field, "is missing")
    if not isinstance(value, str):
        raise InputError(field, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InputError(field, "is empty")
    return sendable(value, field).strip()


def truncate(text: str, max_chars: int) -> tuple[str, bool]:
    """Cut an over-long input at a line boundary, returning (text, truncated)."""
    if len(text) <= max_chars:
        return text, False
    cut = text.rfind("\n", 0, max_chars)
    if cut < max_chars // 2:
        cut = max_chars
    return text[:cut].rstrip() + "\n[... truncated ...]", True
