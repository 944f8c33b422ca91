"""Pushing a sample of an unlabeled pool to a Label Studio project as a review round.

Every task records its stable source id, its round, the design that drew it and the probability with which it
was drawn among the round's candidates (prelabel.review_sampling), so each round draws items never pushed
before, every exported example traces back to its source, and estimates from the reviews can weight each one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prelabel.dialogue import InputError, parse_dialogue, parse_text
from prelabel.judge import MAX_LEVEL, Verdict
from prelabel.label_interface import LabelConfig, parse_label_config
from prelabel.labeling.items import IdTypeError, content_digest, iter_items, source_id
from prelabel.labeling.output import BulkRecord
from prelabel.pipeline import JurorVerdict, LabelOutcome
from prelabel.predictions import UNRATED_PREFIX, prediction_for, split_prompt_control
from prelabel.records import (
    INCLUSION_PROBABILITY_FIELD,
    ROUND_FIELD,
    SOURCE_ID_FIELD,
    STRATEGY_FIELD,
    reason_text,
    reviewed_tasks,
)
from prelabel.review_sampling import (
    DEFAULT_THRESHOLD,
    Calibration,
    JudgeRating,
    calibration_from_reviews,
    check_strategy,
    draw_round,
)
from prelabel.review_tabs import PREVIEW_FIELD, ReviewTabs, dialogue_preview, set_up_review_tabs
from prelabel.tally import Tally
from prelabel.tasks_io import TaskFileError, numbered_records, record_unit

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.labelstudio import LabelStudioClient


class PoolItem(BaseModel):
    source_id: str
    record: dict[str, Any]


class PushPlan(BaseModel):
    round: str
    items: list[PoolItem]
    pool_size: int
    already_pushed: int
    skipped: list[str] = []  # "source id: problem" for records that cannot become tasks
    strategy: str = "random"
    probabilities: list[float] = []  # each item's inclusion probability, in the order of `items`
    candidates: int = 0  # the items never pushed before, the draw's population
    unrated_candidates: int = 0  # candidates without a judge's rating in the labels file (the floor or "unrated")
    basis: str = ""  # where the uncertain design's probabilities came from


def read_pool(path: Path, input_field: str) -> list[PoolItem]:
    """The pool's items; a record that cannot be read, an id that is not a string or an integer, or an id
    repeated with different content refuses the pool, naming the file and the line."""
    items: list[PoolItem] = []
    seen: dict[str, tuple[bytes, int]] = {}  # source id -> (content digest, where first seen)
    unit = record_unit(path)
    for number, record in numbered_records(path):
        if isinstance(record, str):
            raise TaskFileError(f"{path} {unit} {number}: {record}")
        data = record["data"] if isinstance(record.get("data"), dict) else record
        try:
            sid = source_id(data, input_field)
        except IdTypeError as error:
            raise TaskFileError(f"{path} {unit} {number}: {error}") from None
        digest = b"" if sid.startswith("sha1:") else content_digest(data)  # a hashed id is the input itself
        first = seen.setdefault(sid, (digest, number))
        if first[0] != digest:
            raise TaskFileError(
                f"{path} {unit} {number}: source id {sid!r} is already used by {unit} {first[1]} with different content"
            )
        if first[1] != number:  # the same item twice in the pool is one item
            continue
        items.append(PoolItem(source_id=sid, record=data))
    return items


def plan_round(
    pool: list[PoolItem],
    pushed: set[str],
    sample: int | None,
    seed: int | None,
    round_name: str,
    *,
    strategy: str = "random",
    ratings: dict[str, JudgeRating | None] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    calibration: Calibration | None = None,
) -> PushPlan:
    """Draw `sample` items of the pool that were never pushed (all of them when sample is None) by `strategy`;
    `ratings` (the judge's rating per source id, None for an unrated or failed label) feed the designs that
    need them, and a candidate missing from them counts as unrated."""
    fresh = [item for item in pool if item.source_id not in pushed]
    candidate_ratings = None if ratings is None else [ratings.get(item.source_id) for item in fresh]
    draw = draw_round(
        strategy, candidate_ratings, len(fresh), sample, seed, threshold=threshold, calibration=calibration
    )
    already = sum(1 for item in pool if item.source_id in pushed)
    return PushPlan(
        round=round_name,
        items=[fresh[i] for i in draw.chosen],
        pool_size=len(pool),
        already_pushed=already,
        strategy=strategy,
        probabilities=[draw.probabilities[i] for i in draw.chosen],
        candidates=len(fresh),
        unrated_candidates=0 if candidate_ratings is None else sum(r is None for r in candidate_ratings),
        basis=draw.basis,
    )


def read_labels(path: Path) -> dict[str, BulkRecord]:
    """A `prelabel label` output file, by source id (a later line for the same id wins, as a rerun's does). A
    line that is not one of its records refuses the file, naming the line; a last line without its newline (a
    run still writing) is left out."""
    records: dict[str, BulkRecord] = {}
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise TaskFileError(f"--labels {path}: {error.strerror or error}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = BulkRecord.model_validate_json(line)
            except ValueError:
                if not line.endswith("\n"):
                    break
                raise TaskFileError(
                    f"--labels {path} line {number}: not a line of `prelabel label` output (source_id, label, "
                    "level, score, ...)"
                ) from None
            records[record.source_id] = record
    return records


def judge_rating(record: BulkRecord) -> JudgeRating | None:
    """The judge's rating in a labels line: None for a failed or unrated label."""
    outcome = outcome_from_record(record)
    if not outcome.ok or outcome.verdict is None:
        return None
    jury = [juror.level for juror in outcome.jury if juror.level is not None]
    return JudgeRating(
        level=outcome.verdict.level,
        expected_level=outcome.verdict.expected_level,
        jury_levels=jury if len(outcome.jury) > 1 else None,
    )


def review_calibration(client: LabelStudioClient, project_id: int, config: LabelConfig, threshold: int) -> Calibration:
    """The project's earlier reviews as (judge level, reviewer level) pairs per judge level."""
    tasks = reviewed_tasks(config, client.export(project_id, title="prelabel push calibration"))
    pairs = [
        (task.llm_level, task.human_level)
        for task in tasks
        if task.reviewed and task.llm_level is not None and task.human_level is not None
    ]
    return calibration_from_reviews(pairs, threshold)


def task_data(
    item: PoolItem, config: LabelConfig, round_name: str, input_field: str | None, keep_fields: Iterable[str] = ()
) -> dict[str, Any]:
    """Label Studio task data: the input in the config's field (dialogues as turns, with a one-line text
    preview for the Data Manager), source id, round."""
    field = input_field or config.data_key
    value = item.record.get(field)
    where = f"source {item.source_id} field {field!r}"
    preview: str | None = None
    try:
        if config.kind == "summarization" and config.object_tag == "paragraphs":
            turns = parse_dialogue(value, field)
            converted: Any = [turn.model_dump() for turn in turns]
            preview = dialogue_preview(turns)
        else:
            converted = parse_text(value, field) if config.kind == "classification" else value
            if converted is None:
                raise InputError(field, "is missing")
    except InputError as error:
        raise InputError(field, f"{where}: {error.problem}") from None
    data = {config.data_key: converted, SOURCE_ID_FIELD: item.source_id, ROUND_FIELD: round_name}
    if preview is not None:
        data[PREVIEW_FIELD] = preview
    for name in keep_fields:
        if name in item.record:
            data[name] = item.record[name]
    return data


def next_round_name(existing_rounds: set[str]) -> str:
    number = 1
    while f"round-{number}" in existing_rounds:
        number += 1
    return f"round-{number}"


class PushResult(BaseModel):
    project_id: int
    round: str
    task_ids: list[int]
    source_ids: list[str]
    pool_size: int
    already_pushed: int
    predicted: int = 0
    prediction_failures: list[str] = []
    skipped: list[str] = []
    model_version: str | None = None
    tabs: ReviewTabs | None = None
    outcomes: Tally = Tally()  # the round's predictions: rated, unrated with reasons, failed
    strategy: str = "random"
    inclusion_probabilities: list[float] = []  # per task, in the order of task_ids
    candidates: int = 0
    unrated_candidates: int = 0
    basis: str = ""
    from_labels: int = 0  # predictions taken from the labels file

    @property
    def probability_range(self) -> tuple[float, float] | None:
        values = self.inclusion_probabilities
        return (min(values), max(values)) if values else None


def push_round(
    client: LabelStudioClient,
    label_config_xml: str,
    project_title: str,
    pool_path: Path,
    *,
    sample: int | None = None,
    seed: int | None = None,
    round_name: str | None = None,
    input_field: str | None = None,
    keep_fields: Iterable[str] = (),
    engine: Engine | None = None,
    backend_url: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    strategy: str = "random",
    labels_path: Path | None = None,
    threshold: int = DEFAULT_THRESHOLD,
) -> PushResult:
    """Create or reuse the project, draw a fresh sample by `strategy`, import it (with locally computed
    predictions when an engine is given), and optionally connect the ML backend and ask Label Studio for
    predictions. The Data Manager's tabs show the score, weakest first and unrated apart (prelabel.review_tabs).

    `labels_path`, a `prelabel label` output of the pool, gives the judge's ratings the uncertain and stratified
    designs draw by; a task whose item has a label there gets that label as its prediction, so reviewers rate
    exactly the label that will be exported. The uncertain design is calibrated by the project's earlier reviews.
    """
    check_strategy(strategy, labels_path is not None)  # before any call to Label Studio
    labels = read_labels(labels_path) if labels_path is not None else None
    project = client.ensure_project(project_title, label_config_xml)
    config = parse_label_config(project.label_config or label_config_xml)
    pool = read_pool(pool_path, input_field or config.data_key)
    pushed = client.task_data_values(project.id, SOURCE_ID_FIELD)
    rounds = client.task_data_values(project.id, ROUND_FIELD)
    calibration = None
    if strategy == "uncertain" and pushed:
        calibration = client.guarded(
            "read the earlier reviews", review_calibration, project.id, config, threshold, idempotent=True
        )
    plan = plan_round(
        pool,
        pushed,
        sample,
        seed,
        round_name or next_round_name(rounds),
        strategy=strategy,
        ratings=None if labels is None else {sid: judge_rating(record) for sid, record in labels.items()},
        threshold=threshold,
        calibration=calibration,
    )

    tasks: list[dict[str, Any]] = []
    probabilities: list[float] = []
    skipped: list[str] = []
    for item, probability in zip(plan.items, plan.probabilities):
        try:
            data = task_data(item, config, plan.round, input_field, keep_fields)
        except InputError as error:
            skipped.append(str(error))
            continue
        data[INCLUSION_PROBABILITY_FIELD] = probability
        data[STRATEGY_FIELD] = plan.strategy
        tasks.append({"data": data})
        probabilities.append(probability)

    result = PushResult(
        project_id=project.id,
        round=plan.round,
        task_ids=[],
        source_ids=[task["data"][SOURCE_ID_FIELD] for task in tasks],
        pool_size=plan.pool_size,
        already_pushed=plan.already_pushed,
        skipped=skipped,
        strategy=plan.strategy,
        inclusion_probabilities=probabilities,
        candidates=plan.candidates,
        unrated_candidates=plan.unrated_candidates,
        basis=plan.basis,
    )
    if labels is not None:
        result.model_version = _labels_predictions(tasks, labels, config, result)
    to_predict = [task for task in tasks if "predictions" not in task]
    if engine is not None and to_predict:
        labeler = engine.labeler(config)
        result.model_version = result.model_version or labeler.model_version
        outcomes = engine.run_batch(
            labeler, [{"id": f"source {task['data'][SOURCE_ID_FIELD]}", **task} for task in to_predict]
        )
        for task, outcome in zip(to_predict, outcomes):
            result.outcomes.add(
                error=outcome.error, unrated_reason=outcome.unrated_reason, rated=outcome.verdict is not None
            )
            if outcome.ok:
                task["predictions"] = [prediction_for(outcome, config)]
                result.predicted += 1
            else:  # no prediction stored: a later "retrieve predictions" can still fill it
                result.prediction_failures.append(outcome.error or "unknown error")
    result.task_ids = client.import_tasks(project.id, tasks) if tasks else []
    if backend_url:
        client.connect_backend(project.id, backend_url, basic_auth=basic_auth)
        unpredicted = [task_id for task_id, task in zip(result.task_ids, tasks) if "predictions" not in task]
        if engine is None and unpredicted:
            client.retrieve_predictions(project.id, unpredicted)
            result.model_version = result.model_version or client.backend_model_version(project.id, backend_url)
            result.outcomes = client.guarded(
                "read the stored predictions", tally_stored, project.id, result.task_ids, config, idempotent=True
            )
    if result.model_version:
        client.set_model_version(project.id, result.model_version)
    result.tabs = set_up_review_tabs(client, project.id, config)
    return result


def _labels_predictions(
    tasks: list[dict[str, Any]], labels: dict[str, BulkRecord], config: LabelConfig, result: PushResult
) -> str | None:
    """Give each task whose item has a label in the labels file that label as its prediction; the most common
    model_version among them (the project's, which the Data Manager's score column counts)."""
    versions: dict[str, int] = {}
    for task in tasks:
        record = labels.get(task["data"][SOURCE_ID_FIELD])
        if record is None:
            continue
        outcome = outcome_from_record(record)
        if not outcome.ok:
            continue  # a failed label: predicted here or by the backend, as an item without a line
        task["predictions"] = [prediction_for(outcome, config)]
        result.outcomes.add(error=None, unrated_reason=outcome.unrated_reason, rated=outcome.verdict is not None)
        result.predicted += 1
        result.from_labels += 1
        versions[outcome.model_version] = versions.get(outcome.model_version, 0) + 1
    return max(versions, key=lambda version: versions[version]) if versions else None


# -- labeled items into a project as predictions (evaluate --push-project, label --project) -------------


class ProjectImport(BaseModel):
    """What one import of labeled items did. Every item becomes one task, once; a prediction is added
    unless its task already holds one of the same model_version, so reruns import nothing twice."""

    project_id: int
    task_ids: list[int] = []  # tasks created by this import
    predictions_on_new_tasks: int = 0
    predictions_added: int = 0  # to tasks imported before
    already_present: int = 0  # items whose task already holds that model_version's prediction
    not_predicted: list[str] = []  # "source id: error" for items without a usable label
    skipped: list[str] = []  # records that cannot become tasks
    model_version: str | None = None
    view_id: int | None = None
    outcomes: Tally = Tally()  # the imported items' labels: rated, unrated with reasons, failed


def resolve_project(client: LabelStudioClient, name_or_id: str, label_config_xml: str) -> Any:
    """A project by its id (digits) or by its title (created with the config if absent)."""
    if name_or_id.strip().isdigit():
        return client.project(int(name_or_id))
    return client.ensure_project(name_or_id, label_config_xml)


def outcome_from_record(record: BaseModel) -> LabelOutcome:
    """A saved result (an evaluation item, a `label` output line) as the outcome predictions are built from."""
    values = record.model_dump()
    verdict = None
    if values.get("level") is not None:
        score = values.get("score")
        # The saved score may be a G-Eval expectation rather than level / 4: keep it exact.
        expected = score * MAX_LEVEL if score is not None and score != values["level"] / MAX_LEVEL else None
        verdict = Verdict(level=values["level"], reason=values.get("reason") or "", expected_level=expected)
    return LabelOutcome(
        task_id=values.get("source_id"),
        model_version=values.get("model_version") or "",
        label=values.get("label"),
        verdict=verdict,
        unrated_reason=values.get("unrated_reason"),
        error=values.get("error") or (None if values.get("label") is not None else "no label"),
        jury=_jury_of(values.get("jury")),
        disagreement=values.get("disagreement"),
    )


def _jury_of(saved: Any) -> list[JurorVerdict]:
    """A saved jury: a labels line's {provider:model: level}, or an evaluation item's list of jurors."""
    if isinstance(saved, dict):
        return [JurorVerdict(model=str(model), level=level) for model, level in saved.items()]
    if isinstance(saved, list):
        return [JurorVerdict.model_validate(juror) for juror in saved]
    return []


def tally_stored(client: LabelStudioClient, project_id: int, task_ids: list[int], config: LabelConfig) -> Tally:
    """How the backend's predictions for these tasks came out, read back from Label Studio: a task without
    one failed, one without a score is unrated (its reason box says why), one with a score is rated."""
    wanted = set(task_ids)
    stored: dict[int, Any] = {}
    for prediction in client.sdk.predictions.list(project=project_id):
        if prediction.task in wanted:
            stored[prediction.task] = prediction  # the latest per task
    tally = Tally()
    for task_id in task_ids:
        prediction = stored.get(task_id)
        if prediction is None:
            tally.add(error="no prediction stored (see the backend's log)", unrated_reason=None, rated=False)
            continue
        result = list(prediction.result or [])
        reason = reason_text(config, [item for item in result if isinstance(item, dict)])
        unrated = None
        if prediction.score is None:
            unrated = (reason or "").removeprefix(UNRATED_PREFIX).strip() or "no rating"
        tally.add(error=None, unrated_reason=unrated, rated=prediction.score is not None)
    return tally


def _import_predictions(client: LabelStudioClient, project_id: int, predictions: list[dict[str, Any]]) -> None:
    client.sdk.projects.import_predictions(id=project_id, request=predictions)  # type: ignore[arg-type]


def _tasks_by_source(client: LabelStudioClient, project_id: int) -> dict[str, int]:
    ids: dict[str, int] = {}
    for task in client.iter_tasks(project_id):
        value = (task.data or {}).get(SOURCE_ID_FIELD)
        if value is not None:
            ids.setdefault(str(value), task.id)
    return ids


def _prediction_versions(client: LabelStudioClient, project_id: int) -> set[tuple[int, str]]:
    return {(p.task, p.model_version or "") for p in client.sdk.predictions.list(project=project_id)}


def import_outcomes(
    client: LabelStudioClient,
    project: str,
    label_config_xml: str,
    items: Iterable[tuple[PoolItem, Sequence[LabelOutcome]]],
    *,
    round_name: str,
    input_field: str | None = None,
    keep_fields: Iterable[str] = (),
    model_version: str | None = None,
    batch_size: int = 500,
) -> ProjectImport:
    """Import labeled items into a project (by title or id) as tasks with predictions, `batch_size` at a time.

    Tasks are matched to items by the recorded source id, so an item already in the project only gets the
    predictions of model_versions it lacks. `model_version` becomes the project's, the one the Data Manager's
    prediction score counts, and a "weakest first" tab orders tasks by that score (prelabel.review_tabs).
    """
    project_obj = resolve_project(client, project, label_config_xml)
    config = parse_label_config(split_prompt_control(project_obj.label_config or label_config_xml)[0])
    existing = client.guarded("list the project's tasks", _tasks_by_source, project_obj.id, idempotent=True)
    have = client.guarded("list the project's predictions", _prediction_versions, project_obj.id, idempotent=True)
    result = ProjectImport(project_id=project_obj.id, model_version=model_version)
    keep = tuple(keep_fields)

    def flush(new_tasks: list[dict[str, Any]], added: list[dict[str, Any]]) -> None:
        if new_tasks:
            result.task_ids += client.import_tasks(project_obj.id, new_tasks)
        if added:
            client.guarded("import predictions", _import_predictions, project_obj.id, added)
            result.predictions_added += len(added)

    new_tasks: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for item, outcomes in items:
        predictions = []
        for outcome in outcomes:
            result.outcomes.add(
                error=outcome.error, unrated_reason=outcome.unrated_reason, rated=outcome.verdict is not None
            )
            if outcome.ok:
                predictions.append(prediction_for(outcome, config))
            else:
                result.not_predicted.append(f"{item.source_id}: {outcome.error or 'no label'}")
        task_id = existing.get(item.source_id)
        if task_id is None:
            try:
                data = task_data(item, config, round_name, input_field, keep)
            except InputError as error:
                result.skipped.append(str(error))
                continue
            new_tasks.append({"data": data, "predictions": predictions})
            existing[item.source_id] = -1  # the same source twice in one import is one task
            result.predictions_on_new_tasks += len(predictions)
        elif task_id > 0:
            for prediction in predictions:
                if (task_id, prediction["model_version"]) in have:
                    result.already_present += 1
                else:
                    added.append({"task": task_id, **prediction})
                    have.add((task_id, prediction["model_version"]))
        if len(new_tasks) + len(added) >= batch_size:
            flush(new_tasks, added)
            new_tasks, added = [], []
    flush(new_tasks, added)
    if model_version:
        client.set_model_version(project_obj.id, model_version)
    result.view_id = set_up_review_tabs(client, project_obj.id, config).weakest_first
    return result


def labeled_output_items(
    pool_path: Path, output_path: Path, input_field: str
) -> Iterable[tuple[PoolItem, list[LabelOutcome]]]:
    """The pool's items joined with their lines of a `prelabel label` output file (by source id, as that
    command assigns them). Items without a line yet (batch jobs still running) wait for a later import."""
    records: dict[str, BulkRecord] = {}
    if output_path.exists():
        with output_path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = BulkRecord.model_validate_json(line)
                except ValueError:
                    continue  # a blank line or one cut short by a kill: that item is labeled again on a rerun
                records[record.source_id] = record
    for item in iter_items(pool_path, input_field):
        if item.task is None:
            continue  # unreadable record: `label` reports it
        saved = records.get(item.source_id)
        if saved is not None:
            yield PoolItem(source_id=item.source_id, record=item.task["data"]), [outcome_from_record(saved)]
