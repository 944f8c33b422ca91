"""One prompt version's summary over the evaluation set (judge levels, unrated reasons, tokens and cost,
metrics against references), and running one version to get it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from prelabel import metrics
from prelabel.evaluation import EvaluationError
from prelabel.evaluation.evalset import EvalSet, task_for
from prelabel.evaluation.results import ItemResult, item_result
from prelabel.evaluation.usage import TokenUsage, usage_between
from prelabel.judge import LEVELS
from prelabel.label_interface import TaskKind
from prelabel.pricing import Price, load_prices

if TYPE_CHECKING:
    from prelabel.engine import Engine
    from prelabel.pipeline import Labeler, LabelOutcome

GOOD = LEVELS.index("good")
NO_LABEL = "(no label)"

_VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


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


class LengthBias(BaseModel):
    """How the judge's level moves with the label's length (Spearman's rho, 95% interval): judges are known to
    favour longer answers. `relative_*` divide the label's length by its input's, so that long inputs with
    long summaries do not count as a preference for length. A positive rho is a warning, not proof: a longer
    summary can also be a more complete one; reviewers' ratings settle which."""

    n: int  # rated items with a label
    rho: float | None = None  # level vs label characters
    low: float | None = None
    high: float | None = None
    relative_rho: float | None = None  # level vs label characters / input characters
    relative_low: float | None = None
    relative_high: float | None = None

    @property
    def favours_length(self) -> bool:
        """The interval of the relative measure (else the plain one) lies wholly above zero."""
        low = self.relative_low if self.relative_low is not None else self.low
        return low is not None and low > 0


class JurorAgreement(BaseModel):
    """Two jurors' agreement over the items both rated: Cohen's kappa with quadratic weights (None when it is
    undefined, e.g. one of them gave a single level throughout)."""

    a: str  # provider:model
    b: str
    n: int
    kappa: float | None = None


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
    length_bias: LengthBias | None = None
    jury_agreement: list[JurorAgreement] | None = None  # with several judges: every pair of jurors


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
    summary.length_bias = length_bias(items)
    summary.jury_agreement = jury_agreement(items)
    with_reference = [item for item in items if item.reference is not None]
    if reference_field and with_reference:
        if kind == "classification":
            summary.classification = classification_metrics(with_reference, class_labels)
        else:
            summary.text_metrics = text_metrics(with_reference)
    return summary


def length_bias(items: Sequence[ItemResult]) -> LengthBias:
    """The judge's level against the label's length in characters (script-neutral, unlike word counts)."""
    rated = [item for item in items if item.level is not None and item.label is not None]
    levels = [float(item.level) for item in rated if item.level is not None]
    lengths = [float(len((item.label or "").strip())) for item in rated]
    bias = LengthBias(n=len(rated))
    plain = metrics.spearman_interval(levels, lengths)
    if plain is not None:
        bias.rho, bias.low, bias.high = plain.rho, plain.low, plain.high
    relative = [
        (level, length / item.features["chars"])
        for level, length, item in zip(levels, lengths, rated)
        if isinstance(item.features.get("chars"), int) and item.features["chars"] > 0
    ]
    if len(relative) == len(rated):  # every item's input length is known: otherwise the two figures mix sets
        ratio = metrics.spearman_interval([r[0] for r in relative], [r[1] for r in relative])
        if ratio is not None:
            bias.relative_rho, bias.relative_low, bias.relative_high = ratio.rho, ratio.low, ratio.high
    return bias


def jury_agreement(items: Sequence[ItemResult]) -> list[JurorAgreement] | None:
    """Every pair of jurors (in PRELABEL_JUDGE's order), over the items both rated; None without a jury."""
    jurors: list[str] = []
    for item in items:
        for juror in item.jury or []:
            if juror.model not in jurors:
                jurors.append(juror.model)
    if len(jurors) < 2:
        return None
    levels = [{juror.model: juror.level for juror in item.jury or [] if juror.level is not None} for item in items]
    pairs = []
    for i, a in enumerate(jurors):
        for b in jurors[i + 1 :]:
            both = [(rated[a], rated[b]) for rated in levels if a in rated and b in rated]
            kappa = metrics.quadratic_weighted_kappa([x for x, _ in both], [y for _, y in both]) if both else None
            pairs.append(JurorAgreement(a=a, b=b, n=len(both), kappa=kappa))
    return pairs


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


def check_version_name(name: str) -> None:
    if not _VERSION_NAME.match(name):
        raise EvaluationError(
            f"prompt version name {name!r}: use letters, digits and . _ + - (it names a file), at most 64 characters"
        )


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
    prices: dict[str, Price] | None = None,
) -> tuple[list[ItemResult], VersionSummary]:
    """Label and judge every item of the evaluation set with one prompt version.

    Items go to engine.run_batch in chunks of a few times the concurrency, so a progress bar can advance
    while every chunk still keeps all workers busy. Cost uses `prices`, by default the built-in table under
    the engine's settings' price file (PRELABEL_PRICES).
    """
    check_version_name(name)
    config = labeler.config
    field = input_field or config.data_key
    chunk = chunk_size or max(4 * engine.concurrency, 1)
    if prices is None:
        prices = load_prices(engine.settings.prelabel_prices)
    start_id = engine.store.last_call_id()
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
    usage = usage_between(engine.store, start_id, prices=prices)
    summary = summarize_version(
        name,
        results,
        config.kind,
        class_labels=config.class_labels,
        prompt_hash=labeler.prompts.content_hash,
        annotator=engine.annotator_ref.spec,
        judge=",".join(ref.spec for ref in engine.judge_refs) if labeler.uses_judge else None,
        reference_field=reference_field,
        usage=usage,
        family_warning=engine.family_warning,
        fewshot=fewshot,
        seconds=round(seconds, 3),
    )
    return results, summary
