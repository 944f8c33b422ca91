"""The judge writes its reason before its rating, and an answer whose reason contradicts its rating is never
taken as if they agreed: it is asked again, like an answer that does not parse."""

from __future__ import annotations

import json

import pytest

from prelabel.judge import LEVELS, JudgeParseError, contradicting_level, judge_schema, parse_verdict


def test_the_schema_asks_for_the_reason_before_the_rating():
    schema = judge_schema()
    assert list(schema["properties"]) == ["reason", "rating"]
    assert schema["required"] == ["reason", "rating"]


@pytest.mark.parametrize(
    "level, reason, named",
    [
        ("very bad", "Excellent summary covering every point.", "excellent"),
        ("excellent", "Very bad: it invents a meeting.", "very bad"),
        ("bad", "It is good.", "good"),
        ("very bad", "Notable good points throughout.", "good"),
    ],
)
def test_a_reason_that_names_a_distant_level_contradicts(level, reason, named):
    assert contradicting_level(LEVELS.index(level), reason) == LEVELS.index(named)
    answer = json.dumps({"reason": reason, "rating": level})
    with pytest.raises(JudgeParseError, match=f"reads as '{named}' but the rating is '{level}'"):
        parse_verdict(answer)


@pytest.mark.parametrize(
    "level, reason",
    [
        ("very bad", "The summary is not excellent: it misses the decision."),
        ("good", "Good but not excellent."),
        ("excellent", "A good summary, arguably excellent."),
        ("excellent", "Nothing bad in it, and complete."),
        ("excellent", "It isn't bad at all; it covers everything."),
        ("excellent", "It doesn't look bad."),
        ("excellent", "Rather than very bad, this is complete."),
        ("very bad", "Far from good; it misses the main point."),
        ("moderate", "Covers the date but not the place."),  # names no level
        ("very bad", "Very bad: invents a meeting."),
    ],
)
def test_negated_neighbouring_or_absent_levels_are_consistent(level, reason):
    assert contradicting_level(LEVELS.index(level), reason) is None
    verdict = parse_verdict(json.dumps({"reason": reason, "rating": level}))
    assert verdict.level_name == level and verdict.reason == reason
