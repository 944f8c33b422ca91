"""Reading a Label Studio labeling config: which controls hold the label, the ratings and the judge's reason.

Controls are found by their type and role, never by hard-coded names, so a team's own config works as long
as it has an object (Paragraphs or Text), a TextArea (summaries) or Choices (classes) for the label, and
optionally five-level Choices or Ratings for the levels and a read-only TextArea for the judge's reason.

Blind reviews: the judge's level goes into a control of its own (read-only: marked readonly="true" or named
like "judge_rating"), and the reviewer's rating is a separate control the prediction never fills, so the
reviewer rates before reading the judge. A config of the older shape has one five-level control shared by
judge and reviewer: the prediction no longer fills it either; the judge's level is written at the start of
its reason instead ("judge: good. <reason>") and, as always, as the prediction's score.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from xml.etree import ElementTree

from pydantic import BaseModel, Field, StrictStr, TypeAdapter, ValidationError, field_validator

from prelabel.judge import LEVELS

TaskKind = Literal["summarization", "classification"]

_OBJECT_TAGS = {"paragraphs", "text", "hypertext"}
_REASON_HINTS = ("reason", "rationale", "explanation", "justification")
# A level control named like these is the judge's (shown read-only), not the reviewer's.
_JUDGE_HINTS = ("judge", "predicted", "prediction")
# How the judge's level opens its reason in a config without a judge's control of its own.
JUDGE_PREFIX = "judge:"
_JUDGE_PREFIX_RE = re.compile(rf"^\s*{JUDGE_PREFIX}\s*({'|'.join(LEVELS)})\s*\.", re.IGNORECASE)
# A Label Studio config is a handful of levels deep; far deeper nesting is refused while it is read, before
# anything walks the tree recursively (ElementTree's serializer does).
MAX_XML_DEPTH = 64


class LabelConfigError(ValueError):
    """The label config cannot be used by prelabel; the message says what is missing."""


class _DepthCappedBuilder:
    """A TreeBuilder target that refuses elements nested deeper than MAX_XML_DEPTH as they are read."""

    def __init__(self) -> None:
        self.builder = ElementTree.TreeBuilder()
        self.depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ElementTree.Element:
        self.depth += 1
        if self.depth > MAX_XML_DEPTH:
            raise LabelConfigError(f"label config nests elements more than {MAX_XML_DEPTH} deep (at <{tag}>)")
        return self.builder.start(tag, attrs)

    def end(self, tag: str) -> ElementTree.Element:
        self.depth -= 1
        return self.builder.end(tag)

    def data(self, data: str) -> None:
        self.builder.data(data)

    def close(self) -> ElementTree.Element:
        return self.builder.close()


def parse_xml(xml: str) -> ElementTree.Element:
    """The config's root element; LabelConfigError if it is not XML or nests deeper than MAX_XML_DEPTH."""
    parser = ElementTree.XMLParser(target=_DepthCappedBuilder())
    try:
        parser.feed(xml)
        root: ElementTree.Element = parser.close()
    except ElementTree.ParseError as error:
        raise LabelConfigError(f"label config is not valid XML: {error}") from error
    return root


def _max_rating(name: str, raw: str | None) -> int:
    """A Rating's maxRating: a whole number of stars, at least 2 (levels map onto stars 1..max)."""
    if raw is None or not raw.strip():
        return 5
    try:
        value = int(raw.strip())
    except ValueError:
        raise LabelConfigError(f"Rating {name!r}: maxRating {raw!r} is not a whole number") from None
    if value < 2:
        raise LabelConfigError(f"Rating {name!r}: maxRating {raw!r} must be at least 2")
    return value


class ResultError(ValueError):
    """An annotation result of the wrong shape; the message names the field."""


class ResultValue(BaseModel, extra="allow"):
    """The parts of a result item's value prelabel reads: a TextArea's text, a Choices', a Rating's."""

    text: list[StrictStr] | None = None
    choices: list[StrictStr] | None = None
    rating: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = None

    @field_validator("rating", mode="before")
    @classmethod
    def _no_null_rating(cls, value: Any) -> Any:
        # Absent is fine (a result without stars); an explicit null is a rating that is not a number.
        if value is None:
            raise ValueError("Input should be a valid number, not null")
        return value


class ResultItem(BaseModel, extra="allow"):
    from_name: StrictStr
    value: ResultValue


_RESULT = TypeAdapter(list[ResultItem])


def annotation_result(raw: Any, where: str = "annotation.result") -> list[dict[str, Any]]:
    """A Label Studio result list checked for the shape prelabel reads; ResultError names what is wrong."""
    if raw is None:
        return []
    try:
        _RESULT.validate_python(raw)
    except ValidationError as problem:
        first = problem.errors()[0]
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
        raise ResultError(f"{where}{field}: {first['msg']}") from None
    return list(raw)


class Control(BaseModel):
    name: str
    tag: str  # lower-cased tag name: textarea, choices, rating
    to_name: str
    choices: list[str] = []
    max_rating: int = 5

    @property
    def result_type(self) -> str:
        return self.tag


class LabelConfig(BaseModel):
    kind: TaskKind
    object_name: str
    object_tag: str
    data_key: str
    label: Control
    # The reviewer's rating: the control the reviewer's level is read from. The prediction never fills it.
    rating: Control | None = None
    # The judge's level, shown read-only; None in a config of the older shape (one control for both).
    judge_rating: Control | None = None
    reason: Control | None = None
    xml: str = ""

    @property
    def class_labels(self) -> list[str]:
        return self.label.choices if self.kind == "classification" else []

    @property
    def rates(self) -> bool:
        """The config has a control for a level, the judge's or the reviewer's."""
        return self.rating is not None or self.judge_rating is not None

    def result_for(self, label: str, level: int | None, reason: str | None) -> list[dict[str, Any]]:
        """Label Studio prediction result items for a label and the judge's level and reason.

        The reviewer's rating control is never written: the reviewer rates with it empty. The judge's level
        goes into its own read-only control, or, without one, at the start of the reason ("judge: good. ...")."""
        items = [self._item(self.label, label)]
        if level is not None and self.judge_rating is not None:
            # Read-only like the reason: the reviewer sees the judge's level but cannot change or submit it as theirs.
            items.append({**self._level_item(self.judge_rating, level), "readonly": True})
        elif level is not None and 0 <= level < len(LEVELS):
            reason = f"{JUDGE_PREFIX} {LEVELS[level]}. {reason or ''}".strip()
        if reason and self.reason is not None:
            # The judge's reason is shown, not edited: a read-only region has no Edit or Delete button.
            items.append({**self._item(self.reason, reason), "readonly": True})
        return items

    def review_result(self, label: str | None, level: int | None) -> list[dict[str, Any]]:
        """A result as a reviewer submits it: their label, and their own level in the reviewer's rating control
        (for reviews made through the API: scripts, benchmarks, tests)."""
        items = [] if label is None else [self._item(self.label, label)]
        if level is not None and self.rating is not None:
            items.append(self._level_item(self.rating, level))
        return [{**item, "origin": "manual"} for item in items]

    def _level_item(self, control: Control, level: int) -> dict[str, Any]:
        if control.tag == "rating":
            # Stars 1..max; level 0..4 maps onto the scale's ends.
            stars = 1 + round(level * (control.max_rating - 1) / (len(LEVELS) - 1))
            return self._raw(control, {"rating": stars})
        return self._item(control, _choice_for_level(control, level))

    def _item(self, control: Control, value: str) -> dict[str, Any]:
        if control.tag == "textarea":
            return self._raw(control, {"text": [value]})
        return self._raw(control, {"choices": [value]})

    def _raw(self, control: Control, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "from_name": control.name,
            "to_name": control.to_name,
            "type": control.result_type,
            "value": value,
            "origin": "prediction",
        }

    def level_from_result(self, result: list[dict[str, Any]]) -> int | None:
        """The level the reviewer's rating control holds in a result (an annotation's), if any."""
        return _level_in(self.rating, result)

    def judge_level_from_result(self, result: list[dict[str, Any]]) -> int | None:
        """The judge's level a prediction's result carries: its judge's control; else, for a prediction made
        before blind reviews, the shared control it filled; else the "judge: <level>." opening of its reason."""
        for control in (self.judge_rating, self.rating):
            level = _level_in(control, result)
            if level is not None:
                return level
        match = _JUDGE_PREFIX_RE.match(self.reason_from_result(result) or "")
        return LEVELS.index(match.group(1).lower()) if match else None

    def prefills_rating(self, result: list[dict[str, Any]]) -> bool:
        """Whether a prediction's result fills the reviewer's rating control (as predictions did before blind
        reviews): a reviewer starting from it found a level already set, so their rating may be anchored."""
        return self.rating is not None and any(item.get("from_name") == self.rating.name for item in result)

    def reason_from_result(self, result: list[dict[str, Any]]) -> str | None:
        """The text of the judge's reason box in a result (a prediction's), if the config has one."""
        if self.reason is None:
            return None
        for item in result:
            if item.get("from_name") == self.reason.name:
                texts = item.get("value", {}).get("text") or []
                return "\n".join(map(str, texts)) or None
        return None

    def label_from_result(self, result: list[dict[str, Any]]) -> str | None:
        """The label a result's label control holds, if any."""
        for item in result:
            if item.get("from_name") != self.label.name:
                continue
            value = item.get("value", {})
            texts = value.get("text") or value.get("choices") or []
            if texts:
                return "\n".join(str(text) for text in texts)
        return None


def _level_in(control: Control | None, result: list[dict[str, Any]]) -> int | None:
    """The level a control holds in a result: a five-level choice, or stars mapped onto 0..4."""
    if control is None:
        return None
    for item in result:
        if item.get("from_name") != control.name:
            continue
        value = item.get("value", {})
        if "rating" in value:
            stars = int(value["rating"])
            return round((stars - 1) * (len(LEVELS) - 1) / (control.max_rating - 1))
        for choice in value.get("choices", []):
            if choice.strip().lower() in LEVELS:
                return LEVELS.index(choice.strip().lower())
    return None


def _choice_for_level(control: Control, level: int) -> str:
    wanted = LEVELS[level]
    for choice in control.choices:
        if choice.strip().lower() == wanted:
            return choice
    return wanted


def _is_level_choices(choices: list[str]) -> bool:
    return sorted(choice.strip().lower() for choice in choices) == sorted(LEVELS)


def _attr(element: ElementTree.Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if key.lower() == name.lower():
            return value
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "yes"}


def _rating_roles(levels: list[tuple[Control, ElementTree.Element]]) -> tuple[Control | None, Control | None]:
    """The reviewer's rating control and the judge's among a config's level controls.

    A control marked readonly="true" is always the judge's. A name like "judge_rating" marks the judge's only
    beside another level control: a lone unmarked control is the older shape's shared one, which the reviewer
    rates in (the prediction no longer fills it). The reviewer's is the first control left; the judge's, the
    first one marked.
    """

    def is_judge(control: Control, element: ElementTree.Element) -> bool:
        named = len(levels) > 1 and any(hint in control.name.lower() for hint in _JUDGE_HINTS)
        return named or _truthy(_attr(element, "readonly"))

    judges = [c for c, e in levels if is_judge(c, e)]
    reviewers = [c for c, e in levels if not is_judge(c, e)]
    return (reviewers[0] if reviewers else None), (judges[0] if judges else None)


def parse_label_config(xml: str) -> LabelConfig:
    """Find the object and the controls of a Label Studio config by type; raise LabelConfigError."""
    root = parse_xml(xml)

    objects = {}
    for element in root.iter():
        tag = element.tag.lower()
        name, value = _attr(element, "name"), _attr(element, "value")
        if tag in _OBJECT_TAGS and name and value and value.startswith("$"):
            objects[name] = (tag, value[1:])
    if not objects:
        raise LabelConfigError("label config has no Paragraphs or Text object bound to task data ($field)")

    textareas: list[tuple[Control, ElementTree.Element]] = []
    choice_sets: list[tuple[Control, ElementTree.Element]] = []
    ratings: list[tuple[Control, ElementTree.Element]] = []
    for element in root.iter():
        tag = element.tag.lower()
        name, to_name = _attr(element, "name"), _attr(element, "toName")
        if not name or not to_name or tag not in {"textarea", "choices", "rating"}:
            continue
        to_name = to_name.split(",")[0]
        if to_name not in objects:
            raise LabelConfigError(f"control {name!r} points to {to_name!r}, which is not an object of the config")
        if tag == "textarea":
            textareas.append((Control(name=name, tag=tag, to_name=to_name), element))
        elif tag == "choices":
            values = [_attr(choice, "value") or "" for choice in element if choice.tag.lower() == "choice"]
            choice_sets.append((Control(name=name, tag=tag, to_name=to_name, choices=values), element))
        else:
            max_rating = _max_rating(name, _attr(element, "maxRating"))
            ratings.append((Control(name=name, tag=tag, to_name=to_name, max_rating=max_rating), element))

    # Level controls, five-level Choices before Ratings (as before blind reviews).
    levels = [(c, e) for c, e in choice_sets if _is_level_choices(c.choices)] + ratings
    rating, judge_rating = _rating_roles(levels)
    class_sets = [c for c, _ in choice_sets if not _is_level_choices(c.choices)]

    def is_reason(control: Control, element: ElementTree.Element) -> bool:
        return _truthy(_attr(element, "readonly")) or any(hint in control.name.lower() for hint in _REASON_HINTS)

    reason = next((c for c, e in textareas if is_reason(c, e)), None)
    label_areas = [c for c, e in textareas if not is_reason(c, e)]

    if label_areas:
        label, kind = label_areas[0], "summarization"
    elif class_sets:
        label, kind = class_sets[0], "classification"
        if len(label.choices) < 2:
            raise LabelConfigError(f"Choices {label.name!r} needs at least two class labels")
    else:
        raise LabelConfigError(
            "label config has no text control for the label: add a TextArea (summaries) "
            "or a Choices with class labels (classification) bound to the object"
        )
    object_tag, data_key = objects[label.to_name]
    return LabelConfig(
        kind=kind,
        object_name=label.to_name,
        object_tag=object_tag,
        data_key=data_key,
        label=label,
        rating=rating,
        judge_rating=judge_rating,
        reason=reason,
        xml=xml,
    )
