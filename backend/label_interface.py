"""Reading a Label Studio labeling config: which controls hold the label, the rating and the judge's reason.

Controls are found by their type and role, never by hard-coded names, so a team's own config works as long
as it has an object (Paragraphs or Text), a TextArea (summaries) or Choices (classes) for the label, and
optionally a five-level Choices or a Rating for the judge's level and a read-only TextArea for its reason.
"""

from __future__ import annotations

from typing import Any, Literal
from xml.etree import ElementTree

from pydantic import BaseModel

from prelabel.judge import LEVELS

TaskKind = Literal["summarization", "classification"]

_OBJECT_TAGS = {"paragraphs", "text", "hypertext"}
_REASON_HINTS = ("reason", "rationale", "explanation", "justification")


class LabelConfigError(ValueError):
    """The label config cannot be used by prelabel; the message says what is missing."""


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
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as error:
        raise LabelConfigError(f"label config is not valid XML: {error}") from error

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
            ratings.append(
                Control(name=name, tag=tag, to_name=to_name, max_rating=int(_attr(element, "maxRating") or 5))
            )

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
