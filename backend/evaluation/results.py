"""One evaluated item of one prompt version: the label, the judge's verdict, and what to slice and preview it by."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prelabel import metrics
from prelabel.evaluation.evalset import input_features, reference_class
from prelabel.label_interface import LabelConfig
from prelabel.pipeline import JurorVerdict
from prelabel.push import PoolItem
from prelabel.subsets import SliceRow

if TYPE_CHECKING:
    from prelabel.pipeline import LabelOutcome

PREVIEW_CHARS = 300


class ItemResult(BaseModel):
    """One evaluated item of one prompt version: what is saved per line of items/<version>.jsonl."""

    source_id: str
    version: str
    model_version: str
    label: str | None = None
    level: int | None = None
    rating: str | None = None
    score: float | None = None
    reason: str | None = None
    unrated_reason: str | None = None
    error: str | None = None
    truncated: bool = False
    reference: str | None = None
    features: dict[str, Any] = {}
    fields: dict[str, Any] = {}  # the item's other scalar data fields (topic, ...), for slicing
    input_preview: str = ""
    rouge1: float | None = None  # F1 against the reference (summaries)
    rouge2: float | None = None
    rougeL: float | None = None
    # A jury's: every juror's part (model, level, expected level, reason) and their spread; None with one judge.
    jury: list[JurorVerdict] | None = None
    disagreement: int | None = None

    def slice_row(self, extra: dict[str, Any] | None = None) -> SliceRow:
        return SliceRow(
            source_id=self.source_id,
            level=self.level,
            label=self.label,
            reason=self.reason,
            input_preview=self.input_preview,
            values={**self.fields, **self.features, **(extra or {})},
        )


def _scalar_fields(record: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in skip and (v is None or isinstance(v, (str, int, float, bool)))}


def _preview(text: str) -> str:
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS].rstrip() + "…"


def item_result(
    name: str,
    item: PoolItem,
    outcome: LabelOutcome,
    config: LabelConfig,
    input_field: str,
    reference_field: str | None,
) -> ItemResult:
    features, text = input_features(config.kind, item.record.get(input_field))
    reference_value = item.record.get(reference_field) if reference_field else None
    if config.kind == "classification":
        reference = reference_class(reference_value, config.class_labels)
    else:
        reference = None if reference_value is None else str(reference_value)
    verdict = outcome.verdict
    error = outcome.error
    if error and error.startswith(f"task {outcome.task_id}: "):
        error = error[len(f"task {outcome.task_id}: ") :]
    result = ItemResult(
        source_id=item.source_id,
        version=name,
        model_version=outcome.model_version,
        label=outcome.label,
        level=verdict.level if verdict else None,
        rating=verdict.level_name if verdict else None,
        score=verdict.score if verdict else None,
        reason=verdict.reason if verdict else None,
        unrated_reason=outcome.unrated_reason,
        error=error,
        truncated=outcome.truncated,
        reference=reference,
        features=features,
        fields=_scalar_fields(item.record, {input_field, reference_field or "", "source_id"}),
        input_preview=_preview(text),
        jury=list(outcome.jury) or None,
        disagreement=outcome.disagreement if outcome.jury else None,
    )
    if config.kind == "summarization" and reference is not None and outcome.label is not None:
        rouge = metrics.rouge_scores(outcome.label, reference)
        result.rouge1, result.rouge2, result.rougeL = (rouge[name].f1 for name in ("rouge1", "rouge2", "rougeL"))
    return result
