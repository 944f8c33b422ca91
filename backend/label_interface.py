"""Reading a Label Studio labeling config: which controls hold the label, the rating and the judge's reason.

Controls are found by their type and role, never by hard-coded names, so a team's own config works as long
as it has an object (Paragraphs or Text), a TextArea (summaries) or Choices (classes) for the label, and
optionally a five-level Choices or a Rating for the judge's level and a read-only TextArea for its reason.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from xml.etree import ElementTree

from pydantic import BaseModel, Field, StrictStr, TypeAdapter, ValidationError, field_validator

from prelabel.judge import LEVELS

TaskKind = Literal["summarization", "classification"]

_OBJECT_TAGS = {"paragraphs", "text", "hypertext"}
_REASON_HINTS = ("reason", "rationale", "explanation", "justification")
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
    rating: Control | None = None
    reason: Control | None = None
    xml: str = ""

    @property
    def class_labels(self) -> list[str]:
        return self.label.choices if self.kind == "classification" else []

    def result_for(self, label: str, level: int | None, reason: str | None) -> list[dict[str, Any]]:
        """Label Studio prediction result items for a label and the judge's level and reason."""
        items = [self._item(self.label, label)]
        if level is not None and self.rating is not None:
            if self.rating.tag == "rating":
                # Stars 1..max; level 0..4 maps onto the scale's ends.
                stars = 1 + round(level * (self.rating.max_rating - 1) / (len(LEVELS) - 1))
                items.append(self._raw(self.rating, {"rating": stars}))
            else:
                items.append(self._item(self.rating, _choice_for_level(self.rating, level)))
        if reason and self.reason is not None:
            # The judge's reason is shown, not edited: a read-only region has no Edit or Delete button.
            items.append({**self._item(self.reason, reason), "readonly": True})
        return items

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
        """The level a result's rating control holds (a reviewer's or a prediction's), if any."""
        if self.rating is None:
            return None
        for item in result:
            if item.get("from_name") != self.rating.name:
                continue
            value = item.get("value", {})
            if "rating" in value:
                stars = int(value["rating"])
                return round((stars - 1) * (len(LEVELS) - 1) / (self.rating.max_rating - 1))
            for choice in value.get("choices", []):
                if choice.strip().lower() in LEVELS:
                    return LEVELS.index(choice.strip().lower())
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
    choice_sets: list[Control] = []
    ratings: list[Control] = []
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
            choice_sets.append(Control(name=name, tag=tag, to_name=to_name, choices=values))
        else:
            max_rating = _max_rating(name, _attr(element, "maxRating"))
            ratings.append(Control(name=name, tag=tag, to_name=to_name, max_rating=max_rating))

    rating = next((c for c in choice_sets if _is_level_choices(c.choices)), None) or (ratings[0] if ratings else None)
    class_sets = [c for c in choice_sets if not _is_level_choices(c.choices)]

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
        reason=reason,
        xml=xml,
    )
