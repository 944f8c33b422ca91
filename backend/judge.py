"""The judge's answer: five quality levels, the structured-output schema, parsing, and the G-Eval score.

Levels follow the article: very bad=0 ... excellent=4. The Label Studio prediction score is level / 4, so the
Data Manager can sort tasks from the weakest label up.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel

LEVELS: tuple[str, ...] = ("very bad", "bad", "moderate", "good", "excellent")
MAX_LEVEL = len(LEVELS) - 1

JUDGE_SCHEMA_NAME = "rate_label"


def judge_schema(reason_max_chars: int | None = None) -> dict[str, Any]:
    """The judge's structured answer. A length cap on the reason keeps small local models, whose
    grammar-constrained strings otherwise run on to the token limit, from cutting their JSON short."""
    reason: dict[str, Any] = {"type": "string", "description": "one sentence saying why"}
    if reason_max_chars:
        reason["maxLength"] = reason_max_chars
    # The reason comes first: structured output writes properties in schema order, so the rating is chosen
    # after the reason is written and follows from it, instead of a reason made up after the fact.
    return {
        "type": "object",
        "properties": {
            "reason": reason,
            "rating": {"type": "string", "enum": list(LEVELS), "description": "the quality of the label"},
        },
        "required": ["reason", "rating"],
        "additionalProperties": False,
    }


class JudgeParseError(ValueError):
    """The judge's answer is not one of the five levels with a reason."""


class Verdict(BaseModel):
    """A parsed judge answer. `expected_level` is the probability-weighted level when log-probs exist."""

    level: int
    reason: str
    expected_level: float | None = None
    level_probabilities: dict[str, float] | None = None

    @property
    def level_name(self) -> str:
        return LEVELS[self.level]

    @property
    def score(self) -> float:
        """Prediction score in [0, 1]: the G-Eval expectation when available, else the level."""
        value = self.expected_level if self.expected_level is not None else float(self.level)
        return round(value / MAX_LEVEL, 4)


def level_from_name(name: Any) -> int:
    if not isinstance(name, str):
        raise JudgeParseError(f"rating must be one of {list(LEVELS)}, got {name!r}")
    cleaned = name.strip().strip("\"'.").lower()
    if cleaned not in LEVELS:
        raise JudgeParseError(f"rating must be one of {list(LEVELS)}, got {name!r}")
    return LEVELS.index(cleaned)


def threshold_level(value: str | int) -> int:
    """A threshold given as a level name ("good") or number ("3")."""
    text = str(value).strip()
    if text.isdigit() and int(text) <= MAX_LEVEL:
        return int(text)
    try:
        return level_from_name(text)
    except JudgeParseError:
        raise ValueError(
            f"threshold must be a level 0..{MAX_LEVEL} or one of {', '.join(LEVELS)}, got {value!r}"
        ) from None


def parse_verdict(text: str) -> Verdict:
    """Parse the judge's JSON answer (or a bare level name from endpoints without structured output)."""
    stripped = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", stripped, re.DOTALL)
    if fenced:
        stripped = fenced.group(1)
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        try:
            return Verdict(level=level_from_name(stripped), reason="")
        except JudgeParseError:
            raise JudgeParseError(f"judge answer is not JSON with a rating: {_preview(text)}") from None
    if isinstance(data, str):
        return Verdict(level=level_from_name(data), reason="")
    if not isinstance(data, dict):
        raise JudgeParseError(f"judge answer is not a JSON object: {_preview(text)}")
    level = level_from_name(data.get("rating"))
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        raise JudgeParseError(f"judge reason must be a string, got {type(reason).__name__}")
    reason = " ".join(reason.split())
    named = contradicting_level(level, reason)
    if named is not None:  # asked again like an answer that does not parse; never shown as if it agreed
        raise JudgeParseError(f"the reason reads as {LEVELS[named]!r} but the rating is {LEVELS[level]!r}")
    return Verdict(level=level, reason=reason)


# A level name in the reason, as whole words ("very bad" before "bad"), and the words that negate it just before.
_LEVEL_WORDS = re.compile(r"\b(very bad|excellent|moderate|good|bad)\b")
_NEGATION = re.compile(
    r"(?:\b(?:not|no|never|nothing|hardly|nor|without|far from|rather than|instead of|than)|\w+n't)\b"
    r"\W+(?:\w+\W+){0,2}$"  # up to two words between the negation and the level name
)


def contradicting_level(level: int, reason: str) -> int | None:
    """The level a reason names when it contradicts the rating, else None.

    A reason contradicts when every level it names plainly (not negated: "not excellent", "rather than good")
    is two or more levels away from the rating, e.g. "excellent coverage" rated very bad. Naming the rating
    or a neighbour ("good, not excellent") is consistent, and so is naming none.
    """
    text = reason.lower().replace("’", "'")
    named = []
    for match in _LEVEL_WORDS.finditer(text):
        if _NEGATION.search(text[max(0, match.start() - 40) : match.start()]):
            continue
        named.append(LEVELS.index(match.group(1)))
    if not named or any(abs(other - level) <= 1 for other in named):
        return None
    return max(named, key=lambda other: abs(other - level))


def _preview(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


TokenLogprobs = list[tuple[str, float]]


def expected_level(tokens: list[str], top_logprobs: list[TokenLogprobs]) -> tuple[float, dict[str, float]] | None:
    """G-Eval: the probability-weighted level at the token where the rating value starts.

    `tokens` are the generated tokens and `top_logprobs[i]` the alternatives at position i. The levels'
    first letters differ (v, b, m, g, e), so each alternative maps to at most one level by prefix.
    Returns None when the rating position or enough probability mass cannot be found.
    """
    text = "".join(tokens)
    match = re.search(r'"rating"\s*:\s*"', text)
    if match is None:
        return None
    value_start = match.end()
    offset = 0
    for position, token in enumerate(tokens):
        if offset + len(token) > value_start:
            consumed = value_start - offset  # part of this token before the value starts
            prefix = token[:consumed]
            mass = [0.0] * len(LEVELS)
            for alternative, logprob in top_logprobs[position]:
                if not alternative.startswith(prefix):
                    continue
                piece = alternative[consumed:].lower()
                if not piece.strip():
                    continue
                for level, name in enumerate(LEVELS):
                    if name.startswith(piece) or piece.startswith(name):
                        mass[level] += math.exp(logprob)
                        break
            total = sum(mass)
            if total < 0.5:  # most of the mass went to tokens we cannot read: do not pretend
                return None
            probabilities = {LEVELS[i]: round(m / total, 6) for i, m in enumerate(mass)}
            return sum(i * m for i, m in enumerate(mass)) / total, probabilities
        offset += len(token)
    return None
