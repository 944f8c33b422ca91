"""The Label Studio ML backend model: predict(tasks, context=None, **kwargs) and fit(event, data, **kwargs),
the names of the Label Studio ML backend 2.x convention.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import BaseModel, Field, ValidationError

from prelabel.label_interface import LabelConfig, LabelConfigError, annotation_result, parse_label_config
from prelabel.predictions import PromptControl, prediction_for, split_prompt_control
from prelabel.prompts import PromptError, PromptRegistry, PromptSet, with_input_section

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.pipeline import LabelOutcome

log = logging.getLogger("prelabel")

ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
# Label Studio sends deletes as ANNOTATIONS_DELETED with a list of {id}; the singular form is accepted too.
DELETE_EVENTS = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}


class ContextError(ValueError):
    """An interactive /predict context that cannot be read."""


class ContextRegion(BaseModel, extra="allow"):
    from_name: str | None = None
    type: str | None = None
    value: dict[str, Any] = {}


class InteractiveContext(BaseModel, extra="allow"):
    """What Label Studio sends as params.context for an interactive backend: the reviewer's current regions."""

    result: list[ContextRegion] = []


def instruction_from_context(context: Any, control: PromptControl) -> str | None:
    """The text the reviewer typed into the prompt box, if the context holds one."""
    if not context:
        return None
    try:
        parsed = InteractiveContext.model_validate(context)
    except ValidationError as problem:
        first = problem.errors()[0]
        raise ContextError(f"params.context.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    for region in parsed.result:
        if region.from_name == control.name:
            texts = region.value.get("text") or []
            text = "\n".join(str(part) for part in (texts if isinstance(texts, list) else [texts])).strip()
            if text:
                return text
    return None


def prompt_region(control: PromptControl, text: str) -> dict[str, Any]:
    """The prompt box's region, sent back with every prediction so the box shows the instruction in use."""
    return {
        "from_name": control.name,
        "to_name": control.to_name,
        "type": "textarea",
        "value": {"text": [text]},
        "origin": "prediction",
    }


class PrelabelModel:
    """LLM annotator + cross-family LLM judge for one Label Studio project (or none, for the CLI)."""

    def __init__(self, engine: Engine, label_config: str | None = None, project: str | None = None):
        self.engine = engine
        self.project = project
        self.label_config = label_config

    def config(self) -> LabelConfig:
        if not self.label_config:
            raise LabelConfigError("no label config: Label Studio sends it in /setup and /predict")
        return parse_label_config(split_prompt_control(self.label_config)[0])

    def prompt_control(self) -> PromptControl | None:
        return split_prompt_control(self.label_config)[1] if self.label_config else None

    def revised_prompts(self, config: LabelConfig, instruction: str, tasks: list[dict[str, Any]]) -> PromptSet:
        """A reviewer's instruction as a named, stored prompt version (with the configured judge prompt)."""
        base = self.engine.prompts_for(config.kind)
        template = with_input_section(instruction, config.kind)
        settings = self.engine.settings
        task_ids = ", ".join(str(task.get("id")) for task in tasks if isinstance(task, dict))
        version = PromptRegistry(settings.model_dir, settings.store_path).save(
            template,
            config.kind,
            base_name=base.name,
            origin=f"label studio project {self.project or '?'}, task {task_ids or '?'}",
        )
        log.info("prompt version %s from Label Studio (%s)", version.name, version.origin)
        return PromptSet(name=version.name, annotator=template, judge=base.judge)

    @property
    def model_version(self) -> str:
        return self.engine.labeler(self.config()).model_version

    def predict_outcomes(
        self, tasks: list[dict[str, Any]], deadline_s: float | None = None, prompts: PromptSet | None = None
    ) -> list[LabelOutcome]:
        labeler = self.engine.labeler(self.config(), prompts)
        outcomes = self.engine.run_batch(labeler, tasks, deadline_s)
        for outcome in outcomes:
            self.engine.store.record_prediction(
                project=self.project,
                task_id=outcome.task_id,
                model_version=outcome.model_version,
                label=outcome.label,
                level=outcome.verdict.level if outcome.verdict else None,
                score=outcome.score,
                reason=outcome.verdict.reason if outcome.verdict else outcome.unrated_reason,
                error=outcome.error,
            )
            if outcome.error:
                log.warning("%s", outcome.error)
        return outcomes

    def predict(
        self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Predictions for the tasks. With a prompt box in the config and the reviewer's instruction in an
        interactive context, that instruction becomes a new prompt version and labels the task."""
        config = self.config()
        deadline = kwargs.get("deadline_s", self.engine.settings.prelabel_predict_deadline)
        control = self.prompt_control()
        instruction = instruction_from_context(context, control) if control else None
        try:
            prompts = self.revised_prompts(config, instruction, tasks) if instruction else None
        except PromptError as problem:
            raise ContextError(f"revised prompt: {problem}") from None
        predictions = [prediction_for(outcome, config) for outcome in self.predict_outcomes(tasks, deadline, prompts)]
        if control is not None:
            shown = prompts.annotator if prompts else self.engine.prompts_for(config.kind).annotator
            for prediction in predictions:
                if "result" in prediction:
                    prediction["result"].append(prompt_region(control, shown))
        return predictions

    def fit(self, event: str, data: dict[str, Any], *, source: AnnotationSource, **kwargs: Any) -> dict[str, Any]:
        """Record a reviewer's annotation (the webhook); training is not done here.

        The event is only a notification: its ids say which annotation changed, and the annotation itself is
        read back from Label Studio (`source`), so nothing a poster writes into the body reaches the store."""
        parsed = parse_event(event, data)
        if event in DELETE_EVENTS:
            return self._forget(event, [ref.id for ref in parsed.deleted()], source)
        if event not in ANNOTATION_EVENTS:
            return {"recorded": False, "reason": f"event {event} is not an annotation event"}
        if parsed.annotation is None:
            raise ValueError("webhook payload has no annotation with an id")
        annotation_id = parsed.annotation.id
        record = source.annotation(annotation_id)
        if record is None:
            return {"recorded": False, "annotation": annotation_id, "reason": UNKNOWN_ANNOTATION.format(annotation_id)}
        project, task_id = record.get("project"), record.get("task")
        if project is None:
            raise ValueError(f"Label Studio's annotation {annotation_id} names no project")
        result = annotation_result(record.get("result"))
        config = parse_label_config(split_prompt_control(source.label_config(int(project)))[0])
        self.engine.store.record_correction(
            annotation_id=annotation_id,
            action=event,
            project=str(project),
            task_id=task_id,
            parent_prediction=record.get("parent_prediction"),
            corrected_label=config.label_from_result(result),
            reviewer_level=config.level_from_result(result),
            was_cancelled=bool(record.get("was_cancelled")),
            payload=stored_payload(record),
        )
        return {"recorded": True, "annotation": annotation_id, "action": event}

    def _forget(self, event: str, ids: list[int], source: AnnotationSource) -> dict[str, Any]:
        """Mark deleted the stored corrections Label Studio confirms are gone; ids the store does not hold need
        no question to Label Studio (so a post full of made-up ids costs nothing)."""
        stored = {row["annotation_id"] for row in self.engine.store.corrections()}
        deleted, kept = [], []
        for annotation_id in dict.fromkeys(ids):
            if str(annotation_id) not in stored:
                continue
            if source.annotation(annotation_id) is None:
                self.engine.store.delete_correction(annotation_id)
                deleted.append(annotation_id)
            else:
                kept.append(annotation_id)  # Label Studio still has it: the deletion did not happen
        return {"recorded": bool(deleted), "deleted": deleted, "kept": kept, "action": event}


UNKNOWN_ANNOTATION = "Label Studio has no annotation {}: nothing recorded"
# What pull and export read of an annotation; the rest of Label Studio's record is not kept.
STORED_FIELDS = ("id", "task", "project", "result", "parent_prediction", "was_cancelled", "completed_by", "updated_at")
MAX_STORED_RESULT_CHARS = 64_000


class AnnotationSource(Protocol):
    """Where the webhook reads annotations back from: Label Studio, with the backend's own credentials."""

    def annotation(self, annotation_id: int) -> dict[str, Any] | None:
        """Label Studio's record of the annotation, None when it has none."""
        ...

    def label_config(self, project_id: int) -> str: ...


EventId = Annotated[int, Field(strict=True, gt=0)]


class EventRef(BaseModel):
    id: EventId


class WebhookEvent(BaseModel):
    """The ids of a Label Studio webhook event; everything else in the body is ignored."""

    annotation: EventRef | None = None
    annotations: list[EventRef] = []

    def deleted(self) -> list[EventRef]:
        return self.annotations or ([self.annotation] if self.annotation else [])


def parse_event(event: str, data: dict[str, Any]) -> WebhookEvent:
    """The event's annotation ids; a ValueError naming the field when they are not positive integers."""
    wanted = {key: data[key] for key in ("annotation", "annotations") if data.get(key) is not None}
    try:
        return WebhookEvent.model_validate(wanted)
    except ValidationError as problem:
        first = problem.errors()[0]
        raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def stored_payload(record: dict[str, Any]) -> dict[str, Any]:
    """Label Studio's annotation trimmed to what pull and export read; an outsized result is left out (the
    correction's label and level are stored in their own columns)."""
    kept = {key: record.get(key) for key in STORED_FIELDS}
    if len(json.dumps(kept.get("result"), ensure_ascii=False)) > MAX_STORED_RESULT_CHARS:
        kept["result"] = None
        kept["result_omitted"] = f"over {MAX_STORED_RESULT_CHARS} characters"
    return {"annotation": kept, "source": "label studio"}
