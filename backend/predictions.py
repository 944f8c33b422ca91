"""How a labeled task becomes a Label Studio prediction, and the label config's prompt box (a TextArea the
reviewer edits the annotator instruction in) set apart from the controls the label is read from.

Library logic shared by the ML backend (prelabel.model) and the imports into a project (prelabel.push).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from pydantic import BaseModel

from prelabel.label_interface import LabelConfigError, parse_xml
from prelabel.pipeline import jury_summary

if TYPE_CHECKING:
    from prelabel.label_interface import LabelConfig
    from prelabel.pipeline import LabelOutcome

# A TextArea named like these holds the annotator instruction a reviewer revises (the Label Studio LLM
# example's "prompt" prefix); it is never the label.
PROMPT_CONTROL_PREFIXES = ("prompt", "instruction")

# The judge's reason of a label it left unrated starts with this; the Data Manager's "unrated" tab filters on it.
UNRATED_PREFIX = "unrated:"


class PromptControl(BaseModel):
    name: str
    to_name: str


def split_prompt_control(xml: str) -> tuple[str, PromptControl | None]:
    """The config without its prompt TextArea, and that control. Removing it (rather than relying on its
    position) keeps the label, rating and reason found the same way with or without a prompt box."""
    try:
        root = parse_xml(xml)
    except LabelConfigError:
        return xml, None  # parse_label_config reports the problem
    for parent in root.iter():
        for element in list(parent):
            name = element.get("name") or ""
            if element.tag.lower() == "textarea" and name.lower().startswith(PROMPT_CONTROL_PREFIXES):
                parent.remove(element)
                control = PromptControl(name=name, to_name=(element.get("toName") or "").split(",")[0])
                return ElementTree.tostring(root, encoding="unicode"), control
    return xml, None


def prediction_for(outcome: LabelOutcome, config: LabelConfig) -> dict[str, Any]:
    """One Label Studio prediction. A failed task gets an item without a "result": Label Studio stores
    nothing for it (an empty result would be stored and make the next "retrieve predictions" skip the task;
    null would fail the whole batch), so the next retrieve asks for it again."""
    if not outcome.ok:
        return {"model_version": outcome.model_version, "error": outcome.error or "failed"}
    verdict = outcome.verdict
    reason = verdict.reason if verdict else f"{UNRATED_PREFIX} {outcome.unrated_reason or 'the judge gave no rating'}"
    if verdict and len(outcome.jury) > 1:
        # The reviewer sees every juror's level and how far apart they are, read-only like the reason.
        reason = f"{jury_summary(outcome.jury, outcome.disagreement)} {reason}"
    notes = [warning for warning in outcome.warnings]
    if notes and reason is not None:
        reason = f"{reason} [{'; '.join(notes)}]"
    prediction: dict[str, Any] = {
        "result": config.result_for(outcome.label or "", verdict.level if verdict else None, reason),
        "model_version": outcome.model_version,
    }
    # An unrated label has no score, rather than a made-up one; it sorts apart from rated ones.
    if outcome.score is not None:
        prediction["score"] = outcome.score
    return prediction
