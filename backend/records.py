"""Exported Label Studio tasks read into one flat record each: the input, the LLM's prediction and the
reviewer's latest annotation. Pull statistics and the fine-tuning export both start from these records.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel

from prelabel.dialogue import InputError, parse_dialogue, render_dialogue
from prelabel.judge import MAX_LEVEL
from prelabel.label_interface import LabelConfig, ResultError, annotation_result
from prelabel.review_sampling import STRATEGIES

SOURCE_ID_FIELD = "source_id"
ROUND_FIELD = "prelabel_round"
# Written by push (prelabel.review_sampling): the probability with which the task's item was drawn into its round
# among the round's candidates (a number in (0, 1]), and the design that drew it.
INCLUSION_PROBABILITY_FIELD = "prelabel_inclusion_probability"
STRATEGY_FIELD = "prelabel_strategy"

ReviewContribution = Literal["unreviewed", "edited", "unchanged", "rating_only", "empty"]


class ReviewedTask(BaseModel):
    """One task of a Label Studio project, flattened.

    `human_*` come from the latest annotation that was not cancelled; `llm_*` from the prediction that
    annotation started from, else the latest prediction.
    """

    task_id: int
    source_id: str | None = None
    round: str | None = None
    input_text: str  # the input as the prompts render it (a dialogue as "Author: text" lines)
    data: dict[str, Any] = {}
    llm_label: str | None = None
    llm_level: int | None = None
    llm_score: float | None = None
    llm_reason: str | None = None
    model_version: str | None = None
    prediction_id: int | None = None
    human_label: str | None = None
    human_level: int | None = None
    annotation_id: int | None = None
    annotated_at: str | None = None
    inclusion_probability: float | None = None  # None: pushed before push recorded it, or not a probability
    strategy: str | None = None
    # The reviewer's rating may have started from the judge's level: the prediction this annotation started
    # from filled the control the reviewer's level is read from (every prediction did before blind reviews).
    rating_anchored: bool = False
    # Results of the wrong shape that were left out (the task then reads as if they were absent), each
    # naming the task and the field, for pull and export to report.
    problems: list[str] = []

    @property
    def reviewed(self) -> bool:
        return self.annotation_id is not None

    @property
    def accepted_unchanged(self) -> bool:
        return review_contribution(self) == "unchanged"


def review_contribution(task: ReviewedTask) -> ReviewContribution:
    """What the reviewer's annotation gives the task; pull's statistics and the export both read it here.

    "edited": a label of the reviewer's own (differing from the LLM's, or there was no LLM label);
    "unchanged": the LLM's label submitted as it was (whitespace aside), with or without a rating;
    "rating_only": no label text, but a rating of the LLM's label; "empty": neither label text nor rating,
    which leaves the task as if unreviewed; "unreviewed": no annotation.
    """
    if not task.reviewed:
        return "unreviewed"
    human = (task.human_label or "").strip()
    if human:
        return "unchanged" if human == (task.llm_label or "").strip() else "edited"
    return "rating_only" if task.human_level is not None else "empty"


# Why a task gives the dataset no example (export's SelectionCounts names a counter after each).
Dropped = Literal["dropped_unedited_low_rating", "dropped_unrated", "dropped_low_rating", "dropped_no_label"]


def dataset_label(task: ReviewedTask, threshold: int) -> tuple[str, Literal["human", "llm"]] | Dropped:
    """The label a task gives the fine-tuning dataset and where it came from, or why it gives none. One rule,
    read by export's selection and by the quality statement export writes with it.

    A reviewer's rating outranks the judge's: when a reviewer rated the LLM label but left no label of their
    own, their level decides whether the LLM label is kept; when they submitted the LLM's label unedited but
    rated it below the threshold, it is not gold and is dropped. An empty review leaves the task to the judge.
    """
    review = review_contribution(task)
    if review == "unchanged" and task.human_level is not None and task.human_level < threshold:
        return "dropped_unedited_low_rating"
    if review in ("edited", "unchanged"):
        return (task.human_label or "").strip(), "human"
    llm = (task.llm_label or "").strip()
    if not llm:
        return "dropped_no_label"
    level = task.human_level if review == "rating_only" else task.llm_level
    if level is None:
        return "dropped_unrated"
    if level < threshold:
        return "dropped_low_rating"
    return llm, "llm"


def input_text(config: LabelConfig, data: dict[str, Any]) -> str:
    value = data.get(config.data_key)
    if config.kind == "summarization":
        try:
            return render_dialogue(parse_dialogue(value, f"data.{config.data_key}"))
        except InputError:
            return str(value or "")
    return str(value or "")


def reason_text(config: LabelConfig, result: list[dict[str, Any]]) -> str | None:
    """The text of the judge's reason box in a result (a prediction's), if the config has one."""
    return config.reason_from_result(result)


def judge_level(config: LabelConfig, prediction: dict[str, Any]) -> int | None:
    """The judge's level of a prediction, wherever its config shape put it. In a config of the older shape
    whose prediction carries it nowhere (no reason box), the score stands in: level / 4, or the G-Eval
    expected level / 4, rounded back to a level."""
    level = config.judge_level_from_result(prediction["result"])
    score = prediction.get("score")
    if level is None and config.judge_rating is None and config.rating is not None and isinstance(score, int | float):
        if 0 <= score <= 1:
            level = round(score * MAX_LEVEL)
    return level


def reviewed_task(config: LabelConfig, task: dict[str, Any]) -> ReviewedTask:
    data = task.get("data") or {}
    if not isinstance(data, dict):
        data = {}
    problems: list[str] = []
    where = f"task {task.get('id')}"
    annotations = _readable(task.get("annotations"), f"{where} annotation", problems)
    annotations = [a for a in annotations if not a.get("was_cancelled")]
    annotations.sort(key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), _int(a.get("id"))))
    latest = annotations[-1] if annotations else None

    predictions = [p for p in _readable(task.get("predictions"), f"{where} prediction", problems) if p["result"]]
    predictions.sort(key=lambda p: (str(p.get("created_at") or ""), _int(p.get("id"))))
    prediction = predictions[-1] if predictions else None
    if latest is not None and latest.get("parent_prediction"):
        prediction = next((p for p in predictions if p.get("id") == latest["parent_prediction"]), prediction)

    record = ReviewedTask(
        task_id=task["id"],
        source_id=_optional_str(data.get(SOURCE_ID_FIELD)),
        round=_optional_str(data.get(ROUND_FIELD)),
        input_text=input_text(config, data),
        data=data,
        problems=problems,
        inclusion_probability=_probability(data.get(INCLUSION_PROBABILITY_FIELD), where, problems),
        strategy=_strategy(data.get(STRATEGY_FIELD), where, problems),
    )
    if prediction is not None:
        result = prediction["result"]
        record.llm_label = config.label_from_result(result)
        record.llm_level = judge_level(config, prediction)
        record.llm_score = prediction.get("score")
        record.llm_reason = reason_text(config, result)
        record.model_version = prediction.get("model_version")
        record.prediction_id = prediction.get("id")
    if latest is not None:
        result = latest["result"]
        record.human_label = config.label_from_result(result)
        record.human_level = config.level_from_result(result)
        record.annotation_id = latest.get("id")
        record.annotated_at = latest.get("updated_at") or latest.get("created_at")
        # When Label Studio recorded no parent prediction, the latest one (the llm_* above) is assumed.
        record.rating_anchored = prediction is not None and config.prefills_rating(prediction["result"])
    return record


def _readable(entries: Any, what: str, problems: list[str]) -> list[dict[str, Any]]:
    """The annotations or predictions whose result has the shape prelabel reads, each with its result checked
    (the same check as the webhook's); the others are left out and named in `problems`."""
    readable = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            problems.append(f"{what}: not an object")
            continue
        try:
            result = annotation_result(entry.get("result"), f"{what} {entry.get('id')}.result")
        except ResultError as problem:
            problems.append(str(problem))
            continue
        readable.append({**entry, "result": result})
    return readable


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _probability(value: Any, where: str, problems: list[str]) -> float | None:
    """The recorded inclusion probability; a value that is not a number in (0, 1] is named in `problems`."""
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # a task imported from CSV holds its data as text
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not 0 < number <= 1:
        problems.append(f"{where} data.{INCLUSION_PROBABILITY_FIELD}: {value!r} is not a probability in (0, 1]")
        return None
    return number


def _strategy(value: Any, where: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    if value not in STRATEGIES:
        problems.append(f"{where} data.{STRATEGY_FIELD}: {value!r} is not one of {', '.join(STRATEGIES)}")
        return None
    return str(value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def reviewed_tasks(config: LabelConfig, export: list[dict[str, Any]]) -> list[ReviewedTask]:
    return [reviewed_task(config, task) for task in export]


def result_problems(records: list[ReviewedTask]) -> list[str]:
    """Every result left out of `records` because of its shape, each naming the task and the field."""
    return [problem for record in records for problem in record.problems]
