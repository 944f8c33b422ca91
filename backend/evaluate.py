"""Quantitative evaluation of prompt versions on one fixed evaluation set, their comparison, and judge
calibration against reviewers.

The evaluation set is a seeded sample of the pool written to a file the first time and read back verbatim
afterwards, so every prompt version, today's and next week's, is measured on exactly the same items. A run
directory holds one JSONL of per-item results per version and `summary.json` with every version's
summary; evaluating another version into the same directory adds it, so versions can be compared later.

Judge levels are the verdict; ROUGE and BLEU against reference labels are reported as string-matching
baselines only. Classification against ground truth gets accuracy, per-class scores and the confusion matrix.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from prelabel import metrics
from prelabel.atomic import write_atomic
from prelabel.dialogue import InputError, parse_dialogue, parse_text, render_dialogue
from prelabel.judge import LEVELS, MAX_LEVEL
from prelabel.label_interface import LabelConfig, TaskKind
from prelabel.push import PoolItem, read_pool
from prelabel.records import ReviewedTask, reviewed_tasks
from prelabel.review_stats import edit_distance
from prelabel.subsets import SliceReport, SliceRow, analyse

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.pipeline import Labeler, LabelOutcome

GOOD = LEVELS.index("good")
SUMMARY_FILE = "summary.json"
ITEMS_DIR = "items"
PREVIEW_CHARS = 300
DEFAULT_KAPPA_THRESHOLD = 0.4

_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class EvaluationError(ValueError):
    """The evaluation cannot run as asked; the message says why."""


# -- the evaluation set ----------------------------------------------------------------------------


class EvalSet(BaseModel):
    path: str
    items: list[PoolItem]
    sha256: str
    created: bool  # False: read back from the file of an earlier run
    pool_size: int | None = None

    @property
    def source_ids(self) -> list[str]:
        return [item.source_id for item in self.items]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_eval_set(path: Path) -> EvalSet:
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                items.append(PoolItem.model_validate_json(line))
            except ValueError as error:
                raise EvaluationError(f"{path} line {number}: not an evaluation set item: {error}") from None
    if not items:
        raise EvaluationError(f"{path}: the evaluation set is empty")
    return EvalSet(path=str(path), items=items, sha256=file_sha256(path), created=False)


def load_or_create_eval_set(
    eval_set_path: Path, pool_path: Path | None, input_field: str, size: int, seed: int
) -> EvalSet:
    """Read the evaluation set if the file exists (size and seed are then ignored), else draw it from the pool.

    The draw keeps pool order, so the file reads like the pool and diffs cleanly.
    """
    if eval_set_path.exists():
        return read_eval_set(eval_set_path)
    if pool_path is None:
        raise EvaluationError(f"{eval_set_path} does not exist and no pool was given to draw it from")
    if size < 1:
        raise EvaluationError(f"--size must be at least 1, got {size}")
    pool = read_pool(pool_path, input_field)
    if not pool:
        raise EvaluationError(f"{pool_path}: the pool is empty")
    chosen = sorted(random.Random(seed).sample(range(len(pool)), min(size, len(pool))))
    items = [pool[i] for i in chosen]
    write_atomic(eval_set_path, "".join(item.model_dump_json() + "\n" for item in items))
    return EvalSet(
        path=str(eval_set_path), items=items, sha256=file_sha256(eval_set_path), created=True, pool_size=len(pool)
    )


# -- per-item results ------------------------------------------------------------------------------


def input_features(kind: TaskKind, value: Any) -> tuple[dict[str, Any], str]:
    """Features to slice by, and the input as the prompts show it (for previews)."""
    try:
        if kind == "summarization":
            turns = parse_dialogue(value)
            text = render_dialogue(turns)
            return {"chars": len(text), "turns": len(turns), "words": len(metrics.tokenize(text))}, text
        text = parse_text(value)
    except InputError:
        return {}, str(value or "")
    return {"chars": len(text), "words": len(metrics.tokenize(text))}, text


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


def reference_class(value: Any, labels: Sequence[str]) -> str | None:
    """Ground truth mapped onto the config's class labels case-insensitively (kept as is when none match)."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    for label in labels:
        if text.lower() == label.lower():
            return label
    return text


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
    )
    if config.kind == "summarization" and reference is not None and outcome.label is not None:
        result.rouge1 = metrics.rouge_n(outcome.label, reference, 1).f1
        result.rouge2 = metrics.rouge_n(outcome.label, reference, 2).f1
        result.rougeL = metrics.rouge_l(outcome.label, reference).f1
    return result


# -- tokens and cost -------------------------------------------------------------------------------

# List prices in USD per million tokens (input, output), matched by the longest model-name prefix. They change;
# a model not listed (local models, gateways) shows tokens only.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o4-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}


def price_for(model: str) -> tuple[float, float] | None:
    name = model.lower().split("/")[-1]
    matches = [prefix for prefix in PRICES_PER_MTOK if name.startswith(prefix)]
    return PRICES_PER_MTOK[max(matches, key=len)] if matches else None


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float | None:
    price = price_for(model)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


class TokenUsage(BaseModel):
    """LLM calls of one role during one version's run. `*_tokens` were spent now; answers from the cache
    cost nothing now but are counted in `full_*` (what a fresh run would spend)."""

    role: str
    provider: str
    model: str
    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    full_input_tokens: int = 0
    full_output_tokens: int = 0
    cost_usd: float | None = None
    full_cost_usd: float | None = None


def call_log_position(store_path: Path) -> int:
    """The id of the last logged LLM call: a version's calls are those logged after it."""
    with sqlite3.connect(store_path) as db:
        return db.execute("SELECT COALESCE(MAX(id), 0) FROM llm_calls").fetchone()[0]


def usage_between(store_path: Path, after_id: int, upto_id: int | None = None) -> list[TokenUsage]:
    """Token usage of the calls logged in (after_id, upto_id], per role and model.

    A cached call logs zero tokens; its original usage is read from the cache entry it was answered from.
    """
    query = (
        "SELECT c.role, c.provider, c.model, c.cached, c.input_tokens, c.output_tokens, c.error,"
        " k.completion AS cached_completion FROM llm_calls c LEFT JOIN llm_cache k ON k.key = c.cache_key"
        " WHERE c.id > ?" + (" AND c.id <= ?" if upto_id is not None else "")
    )
    args: tuple[int, ...] = (after_id,) if upto_id is None else (after_id, upto_id)
    groups: dict[tuple[str, str, str], TokenUsage] = {}
    with sqlite3.connect(store_path) as db:
        db.row_factory = sqlite3.Row
        for row in db.execute(query, args):
            key = (row["role"], row["provider"], row["model"])
            usage = groups.setdefault(key, TokenUsage(role=key[0], provider=key[1], model=key[2]))
            usage.calls += 1
            usage.errors += row["error"] is not None
            usage.input_tokens += row["input_tokens"]
            usage.output_tokens += row["output_tokens"]
            if row["cached"]:
                usage.cache_hits += 1
                original = json.loads(row["cached_completion"] or "{}").get("usage") or {}
                usage.full_input_tokens += int(original.get("input_tokens") or 0)
                usage.full_output_tokens += int(original.get("output_tokens") or 0)
            else:
                usage.full_input_tokens += row["input_tokens"]
                usage.full_output_tokens += row["output_tokens"]
    for usage in groups.values():
        usage.cost_usd = cost_usd(usage.model, usage.input_tokens, usage.output_tokens)
        usage.full_cost_usd = cost_usd(usage.model, usage.full_input_tokens, usage.full_output_tokens)
    return sorted(groups.values(), key=lambda u: (u.role != "annotator", u.role, u.model))


# -- per-version summary ---------------------------------------------------------------------------


class TextMetrics(BaseModel):
    """String-matching baselines against reference labels: mean sentence ROUGE F1 and corpus BLEU-4."""

    n: int
    rouge1: float | None
    rouge2: float | None
    rougeL: float | None
    bleu: float | None
    note: str = "string-matching baselines, not the verdict: a good summary can use other words"


class ClassMetrics(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class ClassificationMetrics(BaseModel):
    """Against ground truth; an item without a label counts as a wrong prediction."""

    n: int
    labels: list[str]
    accuracy: float | None
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]  # rows true, columns predicted, in `labels` order


class VersionSummary(BaseModel):
    name: str
    model_version: str
    prompt_hash: str
    annotator: str
    judge: str | None
    fewshot: str | None = None
    n_items: int
    n_labelled: int
    n_errors: int
    n_rated: int
    n_unrated: int  # items without a rating: judge failures and items without a label
    unrated_reasons: dict[str, int]
    distribution: list[int]  # rated items per level, very bad .. excellent
    mean_level: float | None
    share_good: float | None  # share of rated items at good or better
    mean_score: float | None
    usage: list[TokenUsage] = []
    tokens_spent: int = 0
    tokens_full: int = 0
    cost_usd: float | None = None  # None when a model's price is unknown
    full_cost_usd: float | None = None
    reference_field: str | None = None
    text_metrics: TextMetrics | None = None
    classification: ClassificationMetrics | None = None
    family_warning: str | None = None
    seconds: float | None = None
    evaluated_at: float | None = None


def _reason_category(text: str) -> str:
    head = text.split(":", 1)[0].strip()
    return head or text.strip()


def summarize_version(
    name: str,
    items: Sequence[ItemResult],
    kind: TaskKind,
    *,
    class_labels: Sequence[str] = (),
    prompt_hash: str = "",
    annotator: str = "",
    judge: str | None = None,
    reference_field: str | None = None,
    usage: Sequence[TokenUsage] = (),
    family_warning: str | None = None,
    fewshot: str | None = None,
    seconds: float | None = None,
) -> VersionSummary:
    levels = [item.level for item in items if item.level is not None]
    scores = [item.score for item in items if item.score is not None]
    reasons: dict[str, int] = {}
    for item in items:
        if item.level is None:
            why = item.error or item.unrated_reason or "no rating"
            category = _reason_category(why)
            reasons[category] = reasons.get(category, 0) + 1
    summary = VersionSummary(
        name=name,
        model_version=items[0].model_version if items else "",
        prompt_hash=prompt_hash,
        annotator=annotator,
        judge=judge,
        fewshot=fewshot,
        n_items=len(items),
        n_labelled=sum(item.label is not None for item in items),
        n_errors=sum(item.error is not None for item in items),
        n_rated=len(levels),
        n_unrated=len(items) - len(levels),
        unrated_reasons=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        distribution=metrics.level_distribution(levels, len(LEVELS)),
        mean_level=metrics.mean(levels),
        share_good=(sum(level >= GOOD for level in levels) / len(levels)) if levels else None,
        mean_score=metrics.mean(scores),
        usage=list(usage),
        tokens_spent=sum(u.input_tokens + u.output_tokens for u in usage),
        tokens_full=sum(u.full_input_tokens + u.full_output_tokens for u in usage),
        cost_usd=_total([u.cost_usd for u in usage]),
        full_cost_usd=_total([u.full_cost_usd for u in usage]),
        reference_field=reference_field,
        family_warning=family_warning,
        seconds=seconds,
        evaluated_at=time.time(),
    )
    with_reference = [item for item in items if item.reference is not None]
    if reference_field and with_reference:
        if kind == "classification":
            summary.classification = classification_metrics(with_reference, class_labels)
        else:
            summary.text_metrics = text_metrics(with_reference)
    return summary


def _total(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def text_metrics(items: Sequence[ItemResult]) -> TextMetrics:
    pairs = [item for item in items if item.label is not None and item.reference is not None]
    bleu = metrics.corpus_bleu([i.label or "" for i in pairs], [i.reference or "" for i in pairs]) if pairs else None
    return TextMetrics(
        n=len(pairs),
        rouge1=metrics.mean([i.rouge1 for i in pairs if i.rouge1 is not None]),
        rouge2=metrics.mean([i.rouge2 for i in pairs if i.rouge2 is not None]),
        rougeL=metrics.mean([i.rougeL for i in pairs if i.rougeL is not None]),
        bleu=bleu.score if bleu else None,
    )


NO_LABEL = "(no label)"


def classification_metrics(items: Sequence[ItemResult], class_labels: Sequence[str]) -> ClassificationMetrics:
    y_true = [item.reference or "" for item in items]
    y_pred = [item.label if item.label is not None else NO_LABEL for item in items]
    labels = list(dict.fromkeys([*class_labels, *sorted(set(y_true) - set(class_labels))]))
    report = metrics.precision_recall_f1(labels, y_true, y_pred)
    return ClassificationMetrics(
        n=len(items),
        labels=labels,
        accuracy=report.accuracy,
        macro_precision=report.macro.precision,
        macro_recall=report.macro.recall,
        macro_f1=report.macro.f1,
        per_class={label: ClassMetrics(**scores._asdict()) for label, scores in report.per_class.items()},
        confusion=metrics.confusion_matrix(labels, y_true, y_pred),
    )


# -- running one version ---------------------------------------------------------------------------


def task_for(item: PoolItem, config: LabelConfig, input_field: str) -> dict[str, Any]:
    """A Label Studio-shaped task whose id is the source id, with the input under the config's data key."""
    data = dict(item.record)
    if input_field != config.data_key and input_field in data:
        data[config.data_key] = data[input_field]
    return {"id": item.source_id, "data": data}


def run_version(
    engine: Engine,
    labeler: Labeler,
    name: str,
    eval_set: EvalSet,
    *,
    input_field: str | None = None,
    reference_field: str | None = None,
    fewshot: str | None = None,
    progress: Callable[[int], None] | None = None,
    chunk_size: int | None = None,
) -> tuple[list[ItemResult], VersionSummary]:
    """Label and judge every item of the evaluation set with one prompt version.

    Items go to engine.run_batch in chunks of a few times the concurrency, so a progress bar can advance
    while every chunk still keeps all workers busy.
    """
    check_version_name(name)
    config = labeler.config
    field = input_field or config.data_key
    chunk = chunk_size or max(4 * engine.settings.prelabel_concurrency, 1)
    start_id = call_log_position(engine.store.path)
    started = time.monotonic()
    outcomes: list[LabelOutcome] = []
    items = eval_set.items
    for begin in range(0, len(items), chunk):
        batch = items[begin : begin + chunk]
        outcomes.extend(engine.run_batch(labeler, [task_for(item, config, field) for item in batch]))
        if progress:
            progress(len(batch))
    seconds = time.monotonic() - started
    results = [
        item_result(name, item, outcome, config, field, reference_field) for item, outcome in zip(items, outcomes)
    ]
    usage = usage_between(engine.store.path, start_id)
    summary = summarize_version(
        name,
        results,
        config.kind,
        class_labels=config.class_labels,
        prompt_hash=labeler.prompts.content_hash,
        annotator=engine.annotator_ref.spec,
        judge=engine.judge_ref.spec if labeler.uses_judge else None,
        reference_field=reference_field,
        usage=usage,
        family_warning=engine.family_warning,
        fewshot=fewshot,
        seconds=round(seconds, 3),
    )
    return results, summary


def check_version_name(name: str) -> None:
    if not _VERSION_NAME.match(name):
        raise EvaluationError(
            f"prompt version name {name!r}: use letters, digits and . _ + - (it names a file), at most 64 characters"
        )


# -- the run directory -----------------------------------------------------------------------------


class RunSummary(BaseModel):
    """summary.json of a run directory: the evaluation set it measured and every version evaluated on it."""

    eval_set: str
    eval_set_sha256: str
    n_items: int
    kind: TaskKind
    data_key: str
    input_field: str
    class_labels: list[str] = []
    reference_field: str | None = None
    family_warning: str | None = None
    versions: dict[str, VersionSummary] = {}  # in the order first evaluated; compare uses the first as base

    def ranking(self) -> list[VersionSummary]:
        """Best first: by mean level, then share at good or better; versions without ratings last."""
        return sorted(
            self.versions.values(),
            key=lambda v: (v.mean_level is None, -(v.mean_level or 0.0), -(v.share_good or 0.0), v.name),
        )


def items_path(run_dir: Path, name: str) -> Path:
    return run_dir / ITEMS_DIR / f"{name}.jsonl"


def load_run(run_dir: Path) -> RunSummary:
    path = run_dir / SUMMARY_FILE
    if not path.exists():
        raise EvaluationError(f"{run_dir} holds no evaluation run ({SUMMARY_FILE} is missing): run evaluate first")
    return RunSummary.model_validate_json(path.read_text(encoding="utf-8"))


def open_run(
    run_dir: Path,
    eval_set: EvalSet,
    config: LabelConfig,
    input_field: str,
    reference_field: str | None,
    family_warning: str | None,
) -> RunSummary:
    """The run directory's summary, new or existing; refuses a directory measured on other items."""
    if (run_dir / SUMMARY_FILE).exists():
        run = load_run(run_dir)
        if run.eval_set_sha256 != eval_set.sha256:
            raise EvaluationError(
                f"{run_dir} was evaluated on another evaluation set ({run.eval_set}); versions in one run directory "
                "must be measured on the same items: use another --out or the same --eval-set"
            )
        if run.kind != config.kind:
            raise EvaluationError(f"{run_dir} holds a {run.kind} run, not {config.kind}")
        run.reference_field = reference_field or run.reference_field
        run.family_warning = family_warning or run.family_warning
        return run
    return RunSummary(
        eval_set=eval_set.path,
        eval_set_sha256=eval_set.sha256,
        n_items=len(eval_set.items),
        kind=config.kind,
        data_key=config.data_key,
        input_field=input_field,
        class_labels=config.class_labels,
        reference_field=reference_field,
        family_warning=family_warning,
    )


def save_version(run_dir: Path, run: RunSummary, items: Sequence[ItemResult], summary: VersionSummary) -> None:
    write_atomic(items_path(run_dir, summary.name), "".join(item.model_dump_json() + "\n" for item in items))
    run.versions[summary.name] = summary
    save_run(run_dir, run)


def save_run(run_dir: Path, run: RunSummary) -> None:
    write_atomic(run_dir / SUMMARY_FILE, run.model_dump_json(indent=2))


def load_items(run_dir: Path, name: str) -> list[ItemResult]:
    path = items_path(run_dir, name)
    if not path.exists():
        raise EvaluationError(f"{run_dir} has no results for version {name!r}")
    with path.open(encoding="utf-8") as handle:
        return [ItemResult.model_validate_json(line) for line in handle if line.strip()]


# -- comparing versions ----------------------------------------------------------------------------


class Mover(BaseModel):
    source_id: str
    base_level: int
    candidate_level: int
    delta: int
    input_preview: str
    base_label: str | None
    candidate_label: str | None
    base_reason: str | None
    candidate_reason: str | None


class Comparison(BaseModel):
    """Two versions on the items both rated: the paired difference in level (candidate - base)."""

    base: str
    candidate: str
    n_paired: int
    n_unpaired: int  # items rated by only one of the two (or neither)
    mean_base: float | None
    mean_candidate: float | None
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    share_good_base: float | None
    share_good_candidate: float | None
    improved: int
    worsened: int
    unchanged: int
    verdict: str
    movers: list[Mover]


def compare_items(
    base: str,
    base_items: Sequence[ItemResult],
    candidate: str,
    candidate_items: Sequence[ItemResult],
    *,
    n_movers: int = 10,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    by_id = {item.source_id: item for item in candidate_items}
    if set(by_id) != {item.source_id for item in base_items}:
        raise EvaluationError(f"versions {base!r} and {candidate!r} were not evaluated on the same items")
    pairs = [
        (b, by_id[b.source_id]) for b in base_items if b.level is not None and by_id[b.source_id].level is not None
    ]
    a = [float(b.level) for b, _ in pairs]  # type: ignore[arg-type]
    c = [float(x.level) for _, x in pairs]  # type: ignore[arg-type]
    ci = metrics.paired_bootstrap_ci(a, c, n_resamples=n_resamples, seed=seed, confidence=confidence)
    if ci is None:
        verdict = "no items rated by both"
    elif ci.low > 0:
        verdict = f"{candidate} is better"
    elif ci.high < 0:
        verdict = f"{candidate} is worse"
    else:
        verdict = "no clear difference"
    movers = [
        Mover(
            source_id=b.source_id,
            base_level=b.level,
            candidate_level=x.level,  # type: ignore[arg-type]
            delta=x.level - b.level,
            input_preview=b.input_preview,  # type: ignore[operator]
            base_label=b.label,
            candidate_label=x.label,
            base_reason=b.reason,
            candidate_reason=x.reason,
        )
        for b, x in pairs
        if x.level != b.level
    ]
    movers.sort(key=lambda m: (-abs(m.delta), m.delta, m.source_id))
    return Comparison(
        base=base,
        candidate=candidate,
        n_paired=len(pairs),
        n_unpaired=len(base_items) - len(pairs),
        mean_base=metrics.mean(a),
        mean_candidate=metrics.mean(c),
        mean_difference=ci.mean_difference if ci else None,
        ci_low=ci.low if ci else None,
        ci_high=ci.high if ci else None,
        confidence=confidence,
        share_good_base=(sum(v >= GOOD for v in a) / len(a)) if a else None,
        share_good_candidate=(sum(v >= GOOD for v in c) / len(c)) if c else None,
        improved=sum(y > x for x, y in zip(a, c)),
        worsened=sum(y < x for x, y in zip(a, c)),
        unchanged=sum(y == x for x, y in zip(a, c)),
        verdict=verdict,
        movers=movers[:n_movers],
    )


def compare_run(
    run_dir: Path, base: str | None = None, candidate: str | None = None, n_movers: int = 10
) -> list[Comparison]:
    """base vs candidate, or, with neither given, every version against the first evaluated."""
    run = load_run(run_dir)
    names = list(run.versions)
    for name in (base, candidate):
        if name is not None and name not in run.versions:
            raise EvaluationError(f"no version {name!r} in {run_dir}; it holds {', '.join(names) or 'none'}")
    if candidate is not None:
        pairs = [(base or names[0], candidate)]
    elif base is not None:
        pairs = [(base, name) for name in names if name != base]
    else:
        pairs = [(names[0], name) for name in names[1:]]
    return [
        compare_items(b, load_items(run_dir, b), c, load_items(run_dir, c), n_movers=n_movers)
        for b, c in pairs
        if b != c
    ]


# -- subset analysis over a run --------------------------------------------------------------------


def review_values(review: ReviewedTask | None) -> dict[str, Any]:
    """What reviewers did to an item, as slice values (only for reviewed items)."""
    if review is None or not review.reviewed:
        return {}
    values: dict[str, Any] = {"reviewer edit": "accepted" if review.accepted_unchanged else "edited"}
    distance = edit_distance(review)
    if distance is not None:
        values["edit distance"] = round(distance, 4)
    return values


def slice_run(
    run_dir: Path,
    slice_fields: Sequence[str] = (),
    reviews: Sequence[ReviewedTask] = (),
    *,
    min_n: int = 5,
    n_worst: int = 5,
) -> dict[str, SliceReport]:
    run = load_run(run_dir)
    by_source = {r.source_id: r for r in reviews if r.source_id is not None and r.reviewed}
    extra_fields = ["reviewer edit"] if by_source else []
    reports = {}
    for name in run.versions:
        rows = [item.slice_row(review_values(by_source.get(item.source_id))) for item in load_items(run_dir, name)]
        reports[name] = analyse(name, rows, [*slice_fields, *extra_fields], min_n=min_n, n_worst=n_worst)
    return reports


# -- judge calibration against reviewers -----------------------------------------------------------


class LevelAgreement(BaseModel):
    level: int
    name: str
    n_reviewer: int  # items the reviewer put at this level
    n_judge: int  # items the judge put at this level
    precision: float  # of the judge's "this level", the share the reviewer agreed with
    recall: float  # of the reviewer's "this level", the share the judge found
    f1: float


class Calibration(BaseModel):
    n_reviewed: int
    n_pairs: int  # reviewed items with both a judge level and a reviewer level
    confusion: list[list[int]]  # rows reviewer level, columns judge level, very bad .. excellent
    kappa: float | None  # quadratic-weighted
    exact: float | None
    within_one: float | None
    spearman: float | None
    mean_judge: float | None
    mean_reviewer: float | None
    per_level: list[LevelAgreement]
    per_version: dict[str, dict[str, float | int | None]]
    threshold: float
    trusted: bool
    warning: str | None


def judge_calibration(
    tasks: Sequence[ReviewedTask], threshold: float = DEFAULT_KAPPA_THRESHOLD, min_pairs: int = 30
) -> Calibration:
    """How far the judge's levels can stand in for reviewers' on the items nobody reviewed."""
    reviewed = [t for t in tasks if t.reviewed]

    def rated(group: Iterable[ReviewedTask]) -> list[tuple[int, int]]:
        return [
            (t.llm_level, t.human_level)
            for t in group  # type: ignore[misc]
            if t.llm_level is not None
            and t.human_level is not None
            and 0 <= t.llm_level <= MAX_LEVEL
            and 0 <= t.human_level <= MAX_LEVEL
        ]

    pairs = rated(reviewed)
    judge = [j for j, _ in pairs]
    human = [h for _, h in pairs]
    kappa = metrics.quadratic_weighted_kappa(judge, human, len(LEVELS))
    report = metrics.precision_recall_f1(list(LEVELS), [LEVELS[h] for h in human], [LEVELS[j] for j in judge])
    per_level = [
        LevelAgreement(
            level=i,
            name=name,
            n_reviewer=human.count(i),
            n_judge=judge.count(i),
            precision=report.per_class[name].precision,
            recall=report.per_class[name].recall,
            f1=report.per_class[name].f1,
        )
        for i, name in enumerate(LEVELS)
    ]
    groups: dict[str, list[ReviewedTask]] = {}
    for task in reviewed:
        groups.setdefault(task.model_version or "-", []).append(task)
    per_version: dict[str, dict[str, float | int | None]] = {}
    for version, group in sorted(groups.items()):
        version_pairs = rated(group)
        per_version[version] = {
            "n": len(version_pairs),
            "kappa": metrics.quadratic_weighted_kappa([j for j, _ in version_pairs], [h for _, h in version_pairs]),
            "exact": metrics.exact_agreement([j for j, _ in version_pairs], [h for _, h in version_pairs]),
        }
    trusted = kappa is not None and kappa >= threshold
    warning = None
    if not pairs:
        warning = "no reviewed item has both a judge rating and a reviewer rating: the judge is not calibrated"
    elif kappa is None:
        warning = "weighted kappa is undefined (one side used a single level): the judge's agreement is unknown"
    elif kappa < threshold:
        warning = (
            f"the judge agrees poorly with reviewers (weighted kappa {kappa:.2f} < {threshold:.2f}): its "
            "ratings cannot be trusted on the unreviewed items; review more or change the judge"
        )
    if pairs and len(pairs) < min_pairs:
        few = f"only {len(pairs)} rated pairs: the agreement figures are uncertain"
        warning = f"{warning}; {few}" if warning else few
    return Calibration(
        n_reviewed=len(reviewed),
        n_pairs=len(pairs),
        confusion=metrics.confusion_matrix(list(range(len(LEVELS))), human, judge),
        kappa=kappa,
        exact=metrics.exact_agreement(judge, human),
        within_one=metrics.within_one_agreement(judge, human),
        spearman=metrics.spearman(judge, human),
        mean_judge=metrics.mean(judge),
        mean_reviewer=metrics.mean(human),
        per_level=per_level,
        per_version=per_version,
        threshold=threshold,
        trusted=trusted,
        warning=warning,
    )


def reviewed_from_corrections(rows: Iterable[dict[str, Any]]) -> list[ReviewedTask]:
    """Records from a corrections file written by `prelabel pull` (every row there was reviewed)."""
    tasks = []
    for number, row in enumerate(rows, start=1):
        task_id = row.get("task_id")
        tasks.append(
            ReviewedTask(
                task_id=task_id if isinstance(task_id, int) else number,
                source_id=None if row.get("source_id") is None else str(row["source_id"]),
                input_text=str(row.get("input") or ""),
                llm_label=row.get("llm_label"),
                llm_level=row.get("judge_level"),
                model_version=row.get("model_version"),
                human_label=row.get("corrected_label"),
                human_level=row.get("reviewer_level"),
                # The file holds reviewed tasks only; the annotation id is not in it, so the row number stands in.
                annotation_id=number,
            )
        )
    return tasks


def load_reviews(path: Path, config: LabelConfig | None = None) -> list[ReviewedTask]:
    """Reviewed records from a corrections JSONL (`prelabel pull`) or a Label Studio JSON export."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        export = json.loads(text)
        if not isinstance(export, list):
            raise EvaluationError(f"{path}: a Label Studio export is a JSON list of tasks")
        if config is None:
            raise EvaluationError(f"{path}: reading a Label Studio export needs the label config")
        return reviewed_tasks(config, export)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise EvaluationError(f"{path} line {number}: not valid JSON: {error.msg}") from None
    return reviewed_from_corrections(rows)
