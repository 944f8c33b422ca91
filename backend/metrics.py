"""Label-quality metrics from the libraries people compare with: text similarity (edit distance through
rapidfuzz, ROUGE through rouge-score, BLEU through sacrebleu), rating agreement and classification scores
(scikit-learn, scipy), and a paired bootstrap (scipy) for comparing two prompt versions on the same tasks.

Conventions: every score is in [0, 1] (BLEU too, not sacrebleu's 0..100); a statistic that is undefined on its
input (no items, a constant rater) is None rather than NaN, so it survives JSON and shows as "-" in tables.
Sequences compared pairwise must have equal lengths (ValueError otherwise). The libraries are imported when a
metric is first computed, so commands that do not score start fast.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

T = TypeVar("T", bound=Hashable)

__all__ = [
    "ROUGE_RULE",
    "BleuScore",
    "BootstrapCI",
    "CorrelationCI",
    "MeanCI",
    "ClassScores",
    "ClassificationReport",
    "Score",
    "accuracy",
    "bleu_rule",
    "bleu_signature",
    "confusion_matrix",
    "corpus_bleu",
    "exact_agreement",
    "levenshtein",
    "level_distribution",
    "mean",
    "mean_interval",
    "normalized_edit_distance",
    "paired_bootstrap_ci",
    "precision_recall_f1",
    "quadratic_weighted_kappa",
    "quantile",
    "rouge_l",
    "rouge_n",
    "rouge_scores",
    "spearman",
    "spearman_interval",
    "tokenize",
    "within_one_agreement",
]

# ROUGE as the rouge-score package computes it (Google's reimplementation of ROUGE-1.5.5): its default
# tokenizer (lower-cased ASCII letters and digits, so it scores English and other Latin-script text; a script
# without such letters gives no tokens and 0) with Porter stemming, sentence-level ROUGE-L.
ROUGE_STEMMING = True
ROUGE_RULE = "ROUGE: rouge-score, Porter stemming on, sentence-level ROUGE-L, F1"


class Score(NamedTuple):
    precision: float
    recall: float
    f1: float


class BleuScore(NamedTuple):
    """Corpus BLEU and its parts, on the 0..1 scale; `precisions[n-1]` is the modified n-gram precision."""

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    candidate_length: int
    reference_length: int


class ClassScores(NamedTuple):
    precision: float
    recall: float
    f1: float
    support: int


class ClassificationReport(NamedTuple):
    """Per-class scores in `labels` order plus their unweighted (macro) means, as scikit-learn averages."""

    labels: list[str]
    per_class: dict[str, ClassScores]
    macro: Score
    accuracy: float | None


class MeanCI(NamedTuple):
    """A mean with its Student-t confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float


class CorrelationCI(NamedTuple):
    """A rank correlation with its confidence interval."""

    rho: float
    low: float
    high: float
    n: int
    confidence: float


class BootstrapCI(NamedTuple):
    """Mean of the paired differences b - a and its percentile bootstrap interval."""

    mean_difference: float
    low: float
    high: float
    n: int
    confidence: float


def _check_lengths(a: Sequence[object], b: Sequence[object]) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired sequences differ in length: {len(a)} != {len(b)}")


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


# -- basic helpers ---------------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean (fsum, so long lists of small shares do not drift); None for no values."""
    return math.fsum(values) / len(values) if values else None


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanCI | None:
    """The mean and its Student-t interval (scipy), mean +- t(n-1) * s / sqrt(n). None with fewer than two
    values; a constant sample has a zero-width interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    centre = math.fsum(values) / n
    spread = math.sqrt(math.fsum((v - centre) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * spread / math.sqrt(n)
    return MeanCI(centre, centre - half, centre + half, n, confidence)


def level_distribution(levels: Sequence[int], n_levels: int = 5) -> list[int]:
    """How many times each level 0..n_levels-1 occurs."""
    counts = [0] * n_levels
    for level in levels:
        _check_level(level, n_levels)
        counts[level] += 1
    return counts


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default method)."""
    import numpy as np

    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    return float(np.quantile(np.asarray(values, dtype=float), q))


# -- text similarity -------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (any script): word counts and few-shot similarity, not scores."""
    return _TOKEN.findall(text.lower())


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Unit-cost insert/delete/substitute distance (rapidfuzz)."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b))


def normalized_edit_distance(a: str, b: str) -> float:
    """Character Levenshtein distance divided by the longer length (rapidfuzz's normalized distance with unit
    weights): 0 identical, 1 nothing shared. Two empty strings are identical (0.0)."""
    from rapidfuzz.distance import Levenshtein

    return float(Levenshtein.normalized_distance(a, b))


@functools.cache
def _rouge_scorer() -> RougeScorer:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=ROUGE_STEMMING)


def rouge_scores(candidate: str, reference: str) -> dict[str, Score]:
    """ROUGE-1, ROUGE-2 and ROUGE-L of one candidate against one reference, keyed "rouge1", "rouge2",
    "rougeL" (one tokenisation for the three). A side without n-grams scores 0, even when both are empty."""
    scores = _rouge_scorer().score(reference, candidate)  # rouge-score takes (target, prediction)
    return {name: Score(s.precision, s.recall, s.fmeasure) for name, s in scores.items()}


def rouge_n(candidate: str, reference: str, n: int = 1) -> Score:
    """ROUGE-1 or ROUGE-2: clipped n-gram overlap over the candidate's (precision) and reference's (recall)."""
    if n not in (1, 2):
        raise ValueError(f"ROUGE-N is computed for n = 1 or 2, got {n}")
    return rouge_scores(candidate, reference)[f"rouge{n}"]


def rouge_l(candidate: str, reference: str) -> Score:
    """ROUGE-L (sentence level): longest common token subsequence over each side's length; F1 with beta=1."""
    return rouge_scores(candidate, reference)["rougeL"]


@functools.cache
def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    # sacrebleu's defaults: 13a tokenisation, case-sensitive, exponential smoothing, BLEU-4.
    bleu = BLEU()
    bleu.corpus_score(["."], [["."]])  # its signature states the number of references only once it has scored
    return bleu


def bleu_signature() -> str:
    """sacrebleu's signature of the BLEU computed here (tokenizer, smoothing, case, version)."""
    return str(_bleu().get_signature())


def bleu_rule() -> str:
    """One line for reports: which BLEU this is."""
    return f"BLEU: sacrebleu corpus BLEU-4 on 0..1, {bleu_signature()}"


def corpus_bleu(candidates: Sequence[str], references: Sequence[str]) -> BleuScore:
    """Corpus BLEU-4 against one reference per candidate, as sacrebleu computes it with its defaults
    (`bleu_signature()`), scaled to 0..1."""
    _check_lengths(candidates, references)
    if not candidates:
        return BleuScore(0.0, (0.0, 0.0, 0.0, 0.0), 0.0, 0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sacrebleu warns about empty candidates; they score 0
        result = _bleu().corpus_score(list(candidates), [list(references)])
    return BleuScore(
        score=min(1.0, result.score / 100),  # 100.00000000000004 / 100 is still a perfect score
        precisions=tuple(p / 100 for p in result.precisions),
        brevity_penalty=float(result.bp),
        candidate_length=int(result.sys_len),
        reference_length=int(result.ref_len),
    )


# -- rating agreement ------------------------------------------------------------------------------


def _check_level(level: int, n_levels: int) -> None:
    if not 0 <= level < n_levels:
        raise ValueError(f"level {level!r} is outside 0..{n_levels - 1}")


def exact_agreement(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Share of pairs with the same level."""
    _check_lengths(a, b)
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else None


def within_one_agreement(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Share of pairs at most one level apart ("good" vs "excellent" counts, "bad" vs "good" does not)."""
    _check_lengths(a, b)
    return sum(abs(x - y) <= 1 for x, y in zip(a, b)) / len(a) if a else None


def quadratic_weighted_kappa(a: Sequence[int], b: Sequence[int], n_levels: int = 5) -> float | None:
    """Cohen's kappa with quadratic weights on the fixed scale 0..n_levels-1 (scikit-learn).

    The scale is passed as the labels rather than taken from the levels that occur, so a two-level gap
    always weighs 4. None when there are no pairs or the expected disagreement is 0 (both raters constant
    on one level).
    """
    _check_lengths(a, b)
    for level in (*a, *b):
        _check_level(level, n_levels)
    if not a or (len(set(a)) == 1 and set(a) == set(b)):
        return None
    from sklearn.metrics import cohen_kappa_score

    return _finite_or_none(cohen_kappa_score(a, b, labels=list(range(n_levels)), weights="quadratic"))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (scipy; ties share average ranks). None with fewer than two pairs or a constant side."""
    _check_lengths(a, b)
    if len(a) < 2 or len(set(a)) == 1 or len(set(b)) == 1:
        return None
    from scipy.stats import spearmanr

    return _finite_or_none(spearmanr(a, b).statistic)


def spearman_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> CorrelationCI | None:
    """Spearman's rho with its Fisher-z interval, using Fieller, Hartley and Pearson's (1957) variance
    1.06 / (n - 3) for rank correlations (the plain 1 / (n - 3) is Pearson's and too narrow for ranks).
    None with fewer than five pairs or a constant side; the interval is closed to [-1, 1]."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rho = spearman(a, b)
    n = len(a)
    if rho is None or n < 5:
        return None
    from scipy.stats import norm

    # atanh is infinite at |rho| = 1: a perfect ordering keeps its end of the interval at the bound.
    clipped = max(-0.999999, min(0.999999, rho))
    half = float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(1.06 / (n - 3))
    centre = math.atanh(clipped)
    return CorrelationCI(rho, math.tanh(centre - half), math.tanh(centre + half), n, confidence)


# -- classification --------------------------------------------------------------------------------


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float | None:
    _check_lengths(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true) if y_true else None


def _labels_or_seen(labels: Sequence[T] | None, y_true: Sequence[T], y_pred: Sequence[T]) -> list[T]:
    if labels is not None:
        return list(dict.fromkeys(labels))
    return sorted(set(y_true) | set(y_pred), key=str)


def confusion_matrix(labels: Sequence[T] | None, y_true: Sequence[T], y_pred: Sequence[T]) -> list[list[int]]:
    """Rows are true labels, columns predicted, both in `labels` order (sorted seen labels when None), as
    scikit-learn counts them: pairs where either side is not in `labels` are left out."""
    _check_lengths(y_true, y_pred)
    order = _labels_or_seen(labels, y_true, y_pred)
    if not y_true:
        return [[0] * len(order) for _ in order]
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return [[int(count) for count in row] for row in sk_confusion_matrix(y_true, y_pred, labels=order)]


def precision_recall_f1(
    labels: Sequence[str] | None, y_true: Sequence[str], y_pred: Sequence[str]
) -> ClassificationReport:
    """Per-class precision, recall, F1 and support, and their macro means (scikit-learn, zero_division=0).

    A prediction outside `labels` (say the annotator answered "neutral" on a positive/negative task) is a
    miss for the true class and a false positive for none.
    """
    _check_lengths(y_true, y_pred)
    order = _labels_or_seen(labels, y_true, y_pred)
    if not y_true:
        empty = ClassScores(0.0, 0.0, 0.0, 0)
        return ClassificationReport(order, {label: empty for label in order}, Score(0.0, 0.0, 0.0), None)
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=order, zero_division=0)
    per_class = {
        label: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i, label in enumerate(order)
    }
    macro = Score(*(float(sum(column) / len(order)) for column in (precision, recall, f1)))
    return ClassificationReport(order, per_class, macro, accuracy(y_true, y_pred))


# -- comparing two versions ------------------------------------------------------------------------


def paired_bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI | None:
    """Percentile bootstrap interval for mean(b - a) over paired items (the same tasks under two prompts),
    through scipy.stats.bootstrap.

    Resampling the differences keeps each task's pairing, so task difficulty cancels out. Seeded, so the
    same inputs always give the same interval. None when there are no pairs.
    """
    _check_lengths(a, b)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not a:
        return None
    differences = [float(y) - float(x) for x, y in zip(a, b)]
    n = len(differences)
    observed = math.fsum(differences) / n
    if len(set(differences)) == 1:  # every resample has the same mean: the interval is that point
        return BootstrapCI(observed, observed, observed, n, confidence)
    import numpy as np
    from scipy.stats import bootstrap

    interval = bootstrap(
        (np.asarray(differences),),
        np.mean,
        n_resamples=n_resamples,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return BootstrapCI(observed, float(interval.low), float(interval.high), n, confidence)
