"""The Label Studio ML backend model: predict(tasks, context=None, **kwargs) and fit(event, data, **kwargs),
the names of the Label Studio ML backend 2.x convention.
"""

from __future__ import annotations

import logging
from typing import Any

from backend.label_config import LabelConfig, LabelConfigError, parse_label_config
from backend.pipeline import Engine, LabelOutcome

log = logging.getLogger("prelabel")

ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED"}
# Label Studio sends deletes as ANNOTATIONS_DELETED with a list of {id}; the singular form is accepted too.
DELETE_EVENTS = {"ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}


def prediction_for(outcome: LabelOutcome, config: LabelConfig) -> dict[str, Any]:
    """One Label Studio prediction. A failed task gets an item without a "result": Label Studio stores
    nothing for it (an empty result would be stored and make the next "retrieve predictions" skip the task;
    null would fail the whole batch), so the next retrieve asks for it again."""
    if not outcome.ok:
        return {"model_version": outcome.model_version, "error": outcome.error or "failed"}
    verdict = outcome.verdict
    reason = verdict.reason if verdict else f"unrated: {outcome.unrated_reason}" if outcome.unrated_reason else None
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


class PrelabelModel:
    """LLM annotator + cross-family LLM judge for one Label Studio project (or none, for the CLI)."""

    def __init__(self, engine: Engine, label_config: str | None = None, project: str | None = None):
        self.engine = engine
        self.project = project
        self.label_config = label_config

    def config(self) -> LabelConfig:
        if not self.label_config:
            raise LabelConfigError("no label config: Label Studio sends it in /setup and /predict")
        return parse_label_config(self.label_config)

    @property
    def model_version(self) -> str:
        return self.engine.labeler(self.config()).model_version

    def predict_outcomes(self, tasks: list[dict[str, Any]], deadline_s: float | None = None) -> list[LabelOutcome]:
        labeler = self.engine.labeler(self.config())
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

    def predict(self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None, **kwargs: Any
                ) -> list[dict[str, Any]]:
        config = self.config()
        deadline = kwargs.get("deadline_s", self.engine.settings.prelabel_predict_deadline)
        return [prediction_for(outcome, config) for outcome in self.predict_outcomes(tasks, deadline)]

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
        task = data.get("task") if isinstance(data.get("task"), dict) else {}
        project = data.get("project") if isinstance(data.get("project"), dict) else {"id": data.get("project")}
        config = parse_label_config(project.get("label_config") or self.label_config or "")
        result = annotation.get("result") or []
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
