"""Label-quality metrics, pure and stdlib-only: text similarity (edit distance, ROUGE, BLEU), rating
agreement (exact, within one, quadratic-weighted kappa, Spearman), classification scores, and a paired
bootstrap for comparing two prompt versions on the same tasks.

Conventions: every score is in [0, 1] (BLEU too, not 0..100); a statistic that is undefined on its input
(no items, a constant rater) is None rather than NaN, so it survives JSON and shows as "-" in tables.
Sequences compared pairwise must have equal lengths (ValueError otherwise).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import NamedTuple, TypeVar

T = TypeVar("T", bound=Hashable)

__all__ = [
    "BleuScore",
    "BootstrapCI",
    "ClassScores",
    "ClassificationReport",
    "Score",
    "accuracy",
    "average_ranks",
    "confusion_matrix",
    "corpus_bleu",
    "exact_agreement",
    "levenshtein",
    "level_distribution",
    "lcs_length",
    "mean",
    "normalized_edit_distance",
    "paired_bootstrap_ci",
    "precision_recall_f1",
    "quadratic_weighted_kappa",
    "quantile",
    "rouge_l",
    "rouge_n",
    "spearman",
    "tokenize",
    "within_one_agreement",
]


class Score(NamedTuple):
    precision: float
    recall: float
    f1: float


class BleuScore(NamedTuple):
    """Corpus BLEU and its parts; `precisions[n-1]` is the (smoothed) modified n-gram precision."""

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


# -- basic helpers ---------------------------------------------------------------------------------


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean (fsum, so long lists of small shares do not drift); None for no values."""
    return math.fsum(values) / len(values) if values else None


def level_distribution(levels: Sequence[int], n_levels: int = 5) -> list[int]:
    """How many times each level 0..n_levels-1 occurs."""
    counts = [0] * n_levels
    for level in levels:
        _check_level(level, n_levels)
        counts[level] += 1
    return counts


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default method)."""
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span (what Spearman needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for k in range(start, end + 1):
            ranks[order[k]] = rank
        start = end + 1
    return ranks


# -- text similarity -------------------------------------------------------------------------------

_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (any script); punctuation and underscores separate them."""
    return _TOKEN.findall(text.lower())


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Unit-cost insert/delete/substitute distance.

    Bit-parallel (Myers 1999, Hyyrö's Levenshtein form) with Python's unbounded ints: one pass over `b`
    with a handful of integer operations per item, so pulling hundreds of paragraph-long summaries stays
    fast without a compiled dependency.
    """
    # The common prefix and suffix do not change the distance and shrink the bit vectors.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if not a:
        return len(b)
    if not b:
        return len(a)

    m = len(a)
    full = (1 << m) - 1
    high = 1 << (m - 1)
    peq: dict[Hashable, int] = {}
    for i, item in enumerate(a):
        peq[item] = peq.get(item, 0) | (1 << i)
    pv, mv, score = full, 0, m
    for item in b:
        eq = peq.get(item, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & full) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & full
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & full  # the top row grows by one per column: D[0][j] = j
        mh = (mh << 1) & full
        pv = (mh | ~(xv | ph)) & full
        mv = ph & xv
    return score


def normalized_edit_distance(a: str, b: str) -> float:
    """Character Levenshtein distance divided by the longer length: 0 identical, 1 nothing shared.

    Two empty strings are identical (0.0).
    """
    longest = max(len(a), len(b))
    return levenshtein(a, b) / longest if longest else 0.0


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence (bit-parallel, Allison-Dix / Hyyrö)."""
    if not a or not b:
        return 0
    peq: dict[Hashable, int] = {}
    for i, item in enumerate(a):
        peq[item] = peq.get(item, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full  # a 0 bit marks a position of `a` that ends a longer common subsequence
    for item in b:
        matches = row & peq.get(item, 0)
        row = ((row + matches) | (row - matches)) & full
    return len(a) - bin(row).count("1")


def _prf(overlap: int, candidate_total: int, reference_total: int) -> Score:
    precision = overlap / candidate_total if candidate_total else 0.0
    recall = overlap / reference_total if reference_total else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(candidate: str, reference: str, n: int = 1) -> Score:
    """ROUGE-N: clipped n-gram overlap over the candidate's (precision) and reference's (recall) n-grams.

    A side without n-grams scores 0 (as the rouge-score package does), even when both are empty.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cand, ref = _ngrams(tokenize(candidate), n), _ngrams(tokenize(reference), n)
    overlap = sum((cand & ref).values())
    return _prf(overlap, sum(cand.values()), sum(ref.values()))


def rouge_l(candidate: str, reference: str) -> Score:
    """ROUGE-L (sentence level): longest common token subsequence over each side's length; F1 with beta=1."""
    cand, ref = tokenize(candidate), tokenize(reference)
    return _prf(lcs_length(cand, ref), len(cand), len(ref))


BLEU_SMOOTHING_EPSILON = 0.1


def corpus_bleu(candidates: Sequence[str], references: Sequence[str], max_n: int = 4) -> BleuScore:
    """Corpus BLEU-4 against one reference per candidate, on `tokenize` tokens.

    Modified n-gram precisions are summed over the corpus before dividing (Papineni et al. 2002), then
    combined by an unweighted geometric mean and multiplied by the brevity penalty
    exp(1 - r/c) when the candidates are shorter (c <= r). Smoothing is "method1" (Chen & Cherry 2014):
    an order with no matching n-gram gets precision 0.1 / (its n-gram count, at least 1) instead of
    zeroing the whole score, so small corpora still rank. With no unigram match at all the score is 0.

    This equals sacrebleu's smooth_method="floor", smooth_value=0.1 on the same tokens. NLTK's
    method1 can differ a little: it adds at least 1 to the denominator for every sentence too short
    to hold an n-gram of that order.
    """
    _check_lengths(candidates, references)
    matches = [0] * max_n
    totals = [0] * max_n
    candidate_length = reference_length = 0
    for candidate, reference in zip(candidates, references):
        cand, ref = tokenize(candidate), tokenize(reference)
        candidate_length += len(cand)
        reference_length += len(ref)
        for n in range(1, max_n + 1):
            cand_ngrams, ref_ngrams = _ngrams(cand, n), _ngrams(ref, n)
            matches[n - 1] += sum((cand_ngrams & ref_ngrams).values())
            totals[n - 1] += sum(cand_ngrams.values())

    if candidate_length == 0:
        brevity_penalty = 0.0
    elif candidate_length > reference_length:
        brevity_penalty = 1.0
    else:
        brevity_penalty = math.exp(1 - reference_length / candidate_length)
    precisions = tuple(
        matches[i] / max(totals[i], 1) if matches[i] else BLEU_SMOOTHING_EPSILON / max(totals[i], 1)
        for i in range(max_n)
    )
    if matches[0] == 0:
        return BleuScore(0.0, precisions, brevity_penalty, candidate_length, reference_length)
    log_mean = math.fsum(math.log(p) for p in precisions) / max_n
    score = brevity_penalty * math.exp(log_mean)
    return BleuScore(score, precisions, brevity_penalty, candidate_length, reference_length)


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
    """Cohen's kappa with quadratic weights on the fixed scale 0..n_levels-1.

    1 - sum(w * observed) / sum(w * expected), w_ij = (i - j)^2, expected from the two marginals. The
    scale is fixed rather than taken from the levels that occur, so a two-level gap always weighs 4.
    None when there are no pairs or the expected disagreement is 0 (both raters constant on one level).
    """
    _check_lengths(a, b)
    if not a:
        return None
    hist_a, hist_b = level_distribution(a, n_levels), level_distribution(b, n_levels)
    n = len(a)
    observed = math.fsum((x - y) ** 2 for x, y in zip(a, b)) / n
    expected = math.fsum(hist_a[i] * hist_b[j] * (i - j) ** 2 for i in range(n_levels) for j in range(n_levels)) / (
        n * n
    )
    return 1.0 - observed / expected if expected else None


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    sxy = math.fsum((u - mx) * (v - my) for u, v in zip(x, y))
    sxx = math.fsum((u - mx) ** 2 for u in x)
    syy = math.fsum((v - my) ** 2 for v in y)
    if sxx == 0 or syy == 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson correlation of average ranks. None with fewer than two pairs or a constant side."""
    _check_lengths(a, b)
    if len(a) < 2:
        return None
    return _pearson(average_ranks(a), average_ranks(b))


# -- classification --------------------------------------------------------------------------------


def accuracy(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> float | None:
    _check_lengths(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true) if y_true else None


def _labels_or_seen(labels: Sequence[T] | None, y_true: Sequence[T], y_pred: Sequence[T]) -> list[T]:
    if labels is not None:
        return list(dict.fromkeys(labels))
    return sorted(set(y_true) | set(y_pred), key=str)


def confusion_matrix(labels: Sequence[T] | None, y_true: Sequence[T], y_pred: Sequence[T]) -> list[list[int]]:
    """Rows are true labels, columns predicted, both in `labels` order (sorted seen labels when None).

    Pairs where either side is not in `labels` are left out, as scikit-learn does.
    """
    _check_lengths(y_true, y_pred)
    order = _labels_or_seen(labels, y_true, y_pred)
    index = {label: i for i, label in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for t, p in zip(y_true, y_pred):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix


def precision_recall_f1(
    labels: Sequence[str] | None, y_true: Sequence[str], y_pred: Sequence[str]
) -> ClassificationReport:
    """Per-class precision, recall, F1 and support, and their macro means.

    A ratio with a zero denominator is 0 (scikit-learn's zero_division=0). A prediction outside `labels`
    (say the annotator answered "neutral" on a positive/negative task) is a miss for the true class and
    a false positive for none. Macro F1 is the mean of per-class F1, as scikit-learn computes it.
    """
    _check_lengths(y_true, y_pred)
    order = _labels_or_seen(labels, y_true, y_pred)
    per_class: dict[str, ClassScores] = {}
    for label in order:
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred))
        predicted = sum(p == label for p in y_pred)
        support = sum(t == label for t in y_true)
        precision, recall, f1 = _prf(tp, predicted, support)
        per_class[label] = ClassScores(precision, recall, f1, support)
    scores = list(per_class.values())
    macro = Score(
        mean([s.precision for s in scores]) or 0.0,
        mean([s.recall for s in scores]) or 0.0,
        mean([s.f1 for s in scores]) or 0.0,
    )
    return ClassificationReport(order, per_class, macro, accuracy(y_true, y_pred))


# -- comparing two versions ------------------------------------------------------------------------


def paired_bootstrap_ci(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI | None:
    """Percentile bootstrap interval for mean(b - a) over paired items (the same tasks under two prompts).

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
    differences = [y - x for x, y in zip(a, b)]
    n = len(differences)
    rng = random.Random(seed)
    means = [math.fsum(rng.choices(differences, k=n)) / n for _ in range(n_resamples)]
    tail = (1.0 - confidence) / 2
    return BootstrapCI(
        mean_difference=math.fsum(differences) / n,
        low=quantile(means, tail),
        high=quantile(means, 1.0 - tail),
        n=n,
        confidence=confidence,
    )
