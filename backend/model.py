"""The Label Studio ML backend model: predict(tasks, context=None, **kwargs) and fit(event, data, **kwargs),
the names of the Label Studio ML backend 2.x convention.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

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

    def fit(self, event: str, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Record a reviewer's annotation (the webhook); training is not done here."""
        if event in DELETE_EVENTS:
            deleted = data.get("annotations") or ([data["annotation"]] if data.get("annotation") else [])
            ids = [item["id"] for item in deleted if isinstance(item, dict) and "id" in item]
            for annotation_id in ids:
                self.engine.store.delete_correction(annotation_id)
            return {"recorded": bool(ids), "deleted": ids, "action": event}
        if event not in ANNOTATION_EVENTS:
            return {"recorded": False, "reason": f"event {event} is not an annotation event"}
        annotation = data.get("annotation") or {}
        if not isinstance(annotation, dict) or "id" not in annotation:
            raise ValueError("webhook payload has no annotation with an id")
        task: dict[str, Any] = data["task"] if isinstance(data.get("task"), dict) else {}
        project: dict[str, Any] = (
            data["project"] if isinstance(data.get("project"), dict) else {"id": data.get("project")}
        )
        result = annotation_result(annotation.get("result"))
        config = parse_label_config(split_prompt_control(project.get("label_config") or self.label_config or "")[0])
        parent = annotation.get("parent_prediction")
        if parent is None and isinstance(annotation.get("prediction"), dict):
            parent = annotation["prediction"].get("id")
        self.engine.store.record_correction(
            annotation_id=annotation["id"],
            action=event,
            project=str(project["id"]) if project.get("id") is not None else None,
            task_id=annotation.get("task") or task.get("id"),
            parent_prediction=parent,
            corrected_label=config.label_from_result(result),
            reviewer_level=config.level_from_result(result),
            was_cancelled=bool(annotation.get("was_cancelled")),
            payload={"annotation": annotation, "task_id": task.get("id")},
        )
        return {"recorded": True, "annotation": annotation["id"], "action": event}
