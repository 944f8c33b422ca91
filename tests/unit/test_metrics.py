"""prelabel.metrics: the libraries it calls (rapidfuzz, rouge-score, sacrebleu, scikit-learn, scipy) checked against
hand-computed values, and the edge cases prelabel defines (None for an undefined statistic, the fixed level scale)."""

import math
import random
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from prelabel.metrics import (
    accuracy,
    bleu_rule,
    confusion_matrix,
    corpus_bleu,
    exact_agreement,
    level_distribution,
    levenshtein,
    mean,
    normalized_edit_distance,
    paired_bootstrap_ci,
    precision_recall_f1,
    quadratic_weighted_kappa,
    quantile,
    rouge_l,
    rouge_n,
    rouge_scores,
    spearman,
    spearman_interval,
    tokenize,
    within_one_agreement,
)

approx = pytest.approx


def _random_levels(seed: int, n: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    a = [rng.randint(0, 4) for _ in range(n)]
    # Correlated with `a` so kappa and rho are not all near zero.
    b = [min(4, max(0, x + rng.choice([-2, -1, 0, 0, 0, 1]))) for x in a]
    return a, b


# -- edit distance ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("kitten", "sitting", 3 / 7),  # k->s, e->i, +g
        ("flaw", "lawn", 2 / 4),  # -f, +n
        ("abc", "abc", 0.0),
        ("", "", 0.0),
        ("abc", "", 1.0),
        ("", "xy", 1.0),
        ("ab", "cd", 1.0),
        ("the cat sat on the mat", "the cat is on the mat", 3 / 22),  # "sat" -> "is" is 3 edits
    ],
)
def test_normalized_edit_distance_by_hand(a, b, expected):
    assert normalized_edit_distance(a, b) == approx(expected)
    assert normalized_edit_distance(b, a) == approx(expected)


def _levenshtein_table(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def test_levenshtein_matches_the_textbook_table():
    rng = random.Random(7)
    for _ in range(500):
        a = "".join(rng.choice("abc ") for _ in range(rng.randint(0, 60)))
        b = "".join(rng.choice("abcd ") for _ in range(rng.randint(0, 60)))
        assert levenshtein(a, b) == _levenshtein_table(a, b)
    assert levenshtein(["the", "cat"], ["a", "cat"]) == 1  # token sequences too


# -- tokens, ROUGE, BLEU ---------------------------------------------------------------------------


def test_tokenize_lowercases_and_splits_on_punctuation():
    words = ["hello", "world", "it", "s", "3", "5", "o", "clock", "now"]
    assert tokenize("Hello, World! It's 3.5 o'clock_now") == words
    assert tokenize("Grüße, Ålesund") == ["grüße", "ålesund"]
    assert tokenize("  ...  ") == []


def test_rouge_n_by_hand():
    candidate, reference = "The cat sat on the mat.", "the cat is on the mat"
    # unigrams: the x2, cat, on, mat shared = 5 of 6 on both sides
    assert rouge_n(candidate, reference, 1) == approx((5 / 6, 5 / 6, 5 / 6))
    # bigrams: "the cat", "on the", "the mat" shared = 3 of 5 on both sides
    assert rouge_n(candidate, reference, 2) == approx((3 / 5, 3 / 5, 3 / 5))
    # counts are clipped: "the" x3 against one "the"; P = 1/3, R = 1/2, F1 = 2PR/(P+R) = 0.4
    assert rouge_n("the the the", "the cat", 1) == approx((1 / 3, 1 / 2, 0.4))
    assert rouge_n("the cat", "the cat sat down", 1) == approx((1.0, 0.5, 2 / 3))


def test_rouge_l_by_hand():
    # LCS "the cat on the mat" = 5 tokens of 6 and 6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == approx((5 / 6, 5 / 6, 5 / 6))
    # LCS "a c" = 2; P = 2/3, R = 2/4, F1 = 2 * (1/3) / (7/6) = 4/7
    assert rouge_l("a b c", "a c d e") == approx((2 / 3, 1 / 2, 4 / 7))
    # order matters for L but not for 1: "b a" vs "a b"
    assert rouge_l("b a", "a b").f1 == approx(0.5)
    assert rouge_n("b a", "a b", 1).f1 == approx(1.0)


def test_rouge_edge_cases():
    assert rouge_l("same words", "Same, words!") == approx((1.0, 1.0, 1.0))
    assert tuple(rouge_l("", "")) == (0.0, 0.0, 0.0)
    assert tuple(rouge_l("", "something")) == (0.0, 0.0, 0.0)
    assert tuple(rouge_n("one", "one", 2)) == (0.0, 0.0, 0.0)  # no bigrams on either side
    with pytest.raises(ValueError):
        rouge_n("a", "a", 0)


def test_rouge_stems_as_stated():
    # Porter stemming on: "cats"/"cat" and "talked"/"talking" match; stop words are kept
    assert rouge_n("the cats talked", "the cat talking", 1) == approx((1.0, 1.0, 1.0))
    assert set(rouge_scores("a b", "a b")) == {"rouge1", "rouge2", "rougeL"}


def test_corpus_bleu_single_sentence_by_hand():
    bleu = corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"])
    # p1 = 5/6, p2 = 3/5, p3 = 1/4 ("on the mat"); p4 = 0 of 3, smoothed "exp" (sacrebleu's default):
    # 1 / (2 * 3). c = r = 6 -> BP = 1
    assert bleu.precisions == approx((5 / 6, 3 / 5, 1 / 4, 1 / 6))
    assert bleu.brevity_penalty == 1.0
    assert bleu.score == approx((5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25)


def test_corpus_bleu_sums_counts_over_the_corpus_and_penalises_brevity():
    bleu = corpus_bleu(["a b c d", "e f"], ["a b c d e", "e f g"])
    # every candidate n-gram matches: p1 = 6/6, p2 = 4/4, p3 = 2/2, p4 = 1/1 (the second sentence has no
    # trigram; corpus sums keep it from zeroing p3). c = 6 < r = 8 -> BP = exp(1 - 8/6).
    assert bleu.precisions == approx((1.0, 1.0, 1.0, 1.0))
    assert (bleu.candidate_length, bleu.reference_length) == (6, 8)
    assert bleu.score == approx(math.exp(-1 / 3))


def test_corpus_bleu_tokenises_as_sacrebleu_13a_and_keeps_case():
    # 13a splits punctuation off; case is kept ("The" is not "the")
    assert corpus_bleu(["the cat, the mat."], ["the cat, the mat."]).score == approx(1.0)
    assert corpus_bleu(["The cat"], ["the cat"]).precisions[0] == approx(1 / 2)
    assert "tok:13a" in bleu_rule() and "smooth:exp" in bleu_rule() and "case:mixed" in bleu_rule()


def test_corpus_bleu_edge_cases():
    assert corpus_bleu(["a b c d e"], ["a b c d e"]).score == approx(1.0)
    assert 0.0 <= corpus_bleu(["a b c d e"], ["a b c d e"]).score <= 1.0
    assert corpus_bleu(["x y z"], ["a b c"]).score == 0.0  # no match at all
    assert corpus_bleu([], []).score == 0.0
    assert corpus_bleu([""], ["a b"]).score == 0.0
    longer = corpus_bleu(["a b c d e f"], ["a b c d"])
    assert longer.brevity_penalty == 1.0  # longer candidates are not penalised here (precision is)
    assert longer.score == approx((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])


# -- agreement -------------------------------------------------------------------------------------


def test_exact_and_within_one_by_hand():
    judge, reviewer = [0, 1, 2, 3, 4], [0, 2, 2, 1, 4]  # gaps 0, 1, 0, 2, 0
    assert exact_agreement(judge, reviewer) == approx(3 / 5)
    assert within_one_agreement(judge, reviewer) == approx(4 / 5)
    assert exact_agreement([], []) is None
    assert within_one_agreement([], []) is None
    with pytest.raises(ValueError):
        exact_agreement([1], [1, 2])


def test_quadratic_kappa_by_hand():
    a, b = [0, 1, 2], [0, 2, 2]
    # observed mean squared gap = (0 + 1 + 0) / 3 = 1/3
    # marginals a = [1, 1, 1, 0, 0], b = [1, 0, 2, 0, 0]; expected = (1*2*4 + 1*1*1 + 1*2*1 + 1*1*4) / 9 = 15/9
    # kappa = 1 - (1/3) / (15/9) = 0.8
    assert quadratic_weighted_kappa(a, b) == approx(0.8)
    assert cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5))) == approx(0.8)


def test_quadratic_kappa_uses_the_fixed_five_level_scale():
    a, b = [0, 1, 4, 1], [0, 4, 4, 1]
    ours = quadratic_weighted_kappa(a, b)
    assert ours == approx(cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5))))
    # scikit-learn without labels re-indexes the levels present (0, 1, 4 -> 0, 1, 2): a 1-vs-4 gap then
    # weighs (2-1)^2 = 1 instead of 9, and the answer changes
    assert ours != approx(cohen_kappa_score(a, b, weights="quadratic"))


@pytest.mark.parametrize("seed", range(20))
def test_kappa_and_spearman_match_sklearn_and_scipy(seed):
    a, b = _random_levels(seed, 5 + seed * 7)
    assert quadratic_weighted_kappa(a, b) == approx(cohen_kappa_score(a, b, weights="quadratic", labels=list(range(5))))
    assert spearman(a, b) == approx(stats.spearmanr(a, b).statistic)
    assert exact_agreement(a, b) == approx(float(np.mean(np.array(a) == np.array(b))))
    assert within_one_agreement(a, b) == approx(float(np.mean(np.abs(np.array(a) - np.array(b)) <= 1)))


def test_kappa_edge_cases():
    assert quadratic_weighted_kappa([1, 3, 4], [1, 3, 4]) == approx(1.0)
    assert quadratic_weighted_kappa([], []) is None
    assert quadratic_weighted_kappa([2, 2, 2], [2, 2, 2]) is None  # no expected disagreement: undefined
    # one constant rater against a varying one is defined (and 0: no association beyond chance)
    assert quadratic_weighted_kappa([2, 2, 2], [1, 2, 3]) == approx(0.0)
    assert quadratic_weighted_kappa([0, 4], [4, 0]) == approx(
        cohen_kappa_score([0, 4], [4, 0], weights="quadratic", labels=list(range(5)))
    )
    assert quadratic_weighted_kappa([0, 1], [1, 2], n_levels=3) == approx(
        cohen_kappa_score([0, 1], [1, 2], weights="quadratic", labels=[0, 1, 2])
    )
    with pytest.raises(ValueError):
        quadratic_weighted_kappa([5], [4])
    with pytest.raises(ValueError):
        quadratic_weighted_kappa([-1], [0])


def test_spearman_by_hand_with_ties():
    a, b = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    # ranks of b: 5->1, 6->2, the two 7s share (3+4)/2 = 3.5, 8->5  => [1, 2, 3.5, 5, 3.5]
    # deviations from 3: a [-2,-1,0,1,2], b [-2,-1,.5,2,.5]; sxy = 8, sxx = 10, syy = 9.5
    assert spearman(a, b) == approx(8 / math.sqrt(95))
    assert spearman(a, b) == approx(stats.spearmanr(a, b).statistic)


def test_spearman_edge_cases():
    assert spearman([1, 2, 3], [1, 2, 3]) == approx(1.0)
    assert spearman([1, 2, 3], [9, 5, 1]) == approx(-1.0)
    assert spearman([], []) is None
    assert spearman([3], [1]) is None
    assert spearman([2, 2, 2], [1, 2, 3]) is None  # a constant side has no ranking
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(stats.spearmanr([2, 2, 2], [1, 2, 3]).statistic)


def test_mean_and_distribution():
    assert mean([1, 2, 4]) == approx(7 / 3)
    assert mean([]) is None
    assert mean([0.1] * 10) == 0.1 * 10 / 10
    assert level_distribution([0, 4, 4, 2]) == [1, 0, 1, 0, 2]
    assert level_distribution([]) == [0, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        level_distribution([5])


# -- classification --------------------------------------------------------------------------------

Y_TRUE = ["pos", "pos", "pos", "neg", "neg", "neu"]
Y_PRED = ["pos", "neg", "pos", "neg", "pos", "pos"]
LABELS = ["neg", "neu", "pos"]


def test_precision_recall_f1_by_hand():
    report = precision_recall_f1(LABELS, Y_TRUE, Y_PRED)
    # pos: tp 2, predicted 4, support 3 -> P 1/2, R 2/3, F1 4/7
    assert report.per_class["pos"] == approx((1 / 2, 2 / 3, 4 / 7, 3))
    # neg: tp 1, predicted 2, support 2 -> 1/2 each
    assert report.per_class["neg"] == approx((1 / 2, 1 / 2, 1 / 2, 2))
    # neu: never predicted, one support -> 0 (zero division counts as 0)
    assert report.per_class["neu"] == (0.0, 0.0, 0.0, 1)
    # macro: P (1/2 + 0 + 1/2)/3 = 1/3, R (1/2 + 0 + 2/3)/3 = 7/18, F1 (1/2 + 0 + 4/7)/3 = 5/14
    assert report.macro == approx((1 / 3, 7 / 18, 5 / 14))
    assert report.accuracy == approx(3 / 6)
    assert accuracy(Y_TRUE, Y_PRED) == approx(0.5)


def test_precision_recall_f1_matches_sklearn():
    report = precision_recall_f1(LABELS, Y_TRUE, Y_PRED)
    p, r, f, s = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=LABELS, zero_division=0)
    for i, label in enumerate(LABELS):
        assert report.per_class[label] == approx((p[i], r[i], f[i], s[i]))
    macro = precision_recall_fscore_support(Y_TRUE, Y_PRED, labels=LABELS, average="macro", zero_division=0)
    assert report.macro == approx(macro[:3])


@pytest.mark.parametrize("seed", range(10))
def test_classification_matches_sklearn_on_random_labels(seed):
    rng = random.Random(seed)
    labels = ["negative", "neutral", "positive"]
    y_true = [rng.choice(labels) for _ in range(40)]
    y_pred = [t if rng.random() < 0.6 else rng.choice(labels + ["unsure"]) for t in y_true]
    report = precision_recall_f1(labels, y_true, y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, label in enumerate(labels):
        assert report.per_class[label] == approx((p[i], r[i], f[i], s[i]))
    assert confusion_matrix(labels, y_true, y_pred) == sk_confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert accuracy(y_true, y_pred) == approx(float(np.mean(np.array(y_true) == np.array(y_pred))))


def test_confusion_matrix_by_hand():
    # rows true (neg, neu, pos), columns predicted
    assert confusion_matrix(LABELS, Y_TRUE, Y_PRED) == [[1, 0, 1], [0, 0, 1], [1, 0, 2]]
    assert confusion_matrix(LABELS, Y_TRUE, Y_PRED) == sk_confusion_matrix(Y_TRUE, Y_PRED, labels=LABELS).tolist()
    # without labels: the labels seen, sorted
    assert confusion_matrix(None, ["b", "a"], ["b", "b"]) == [[0, 1], [0, 1]]


def test_predictions_outside_the_labels():
    # "maybe" is no class: a miss for the true class, a false positive for none, left out of the matrix
    y_true, y_pred = ["pos", "neg", "pos"], ["maybe", "neg", "pos"]
    report = precision_recall_f1(["neg", "pos"], y_true, y_pred)
    assert report.per_class["pos"] == approx((1.0, 0.5, 2 / 3, 2))
    assert report.accuracy == approx(2 / 3)
    assert confusion_matrix(["neg", "pos"], y_true, y_pred) == [[1, 0], [0, 1]]
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=["neg", "pos"], zero_division=0)
    assert [report.per_class[c].f1 for c in ["neg", "pos"]] == approx(list(f))


def test_classification_edge_cases():
    assert accuracy([], []) is None
    empty = precision_recall_f1(["a", "b"], [], [])
    assert empty.per_class["a"] == (0.0, 0.0, 0.0, 0)
    assert empty.macro == (0.0, 0.0, 0.0)
    assert empty.accuracy is None
    perfect = precision_recall_f1(None, ["a", "b", "a"], ["a", "b", "a"])
    assert perfect.labels == ["a", "b"]
    assert perfect.macro == approx((1.0, 1.0, 1.0))
    assert confusion_matrix(["a"], [], []) == [[0]]


# -- bootstrap -------------------------------------------------------------------------------------


def test_quantile_matches_numpy():
    rng = random.Random(3)
    values = [rng.gauss(0, 1) for _ in range(37)]
    for q in (0.0, 0.025, 0.5, 0.975, 1.0):
        assert quantile(values, q) == approx(float(np.quantile(values, q)))
    assert quantile([5.0], 0.3) == 5.0
    with pytest.raises(ValueError):
        quantile([], 0.5)


def test_paired_bootstrap_by_hand():
    # every difference is 0.5: every resample mean is 0.5, so the interval collapses onto it
    ci = paired_bootstrap_ci([0.0, 0.25, 0.5], [0.5, 0.75, 1.0])
    assert ci is not None
    assert (ci.mean_difference, ci.low, ci.high, ci.n, ci.confidence) == approx((0.5, 0.5, 0.5, 3, 0.95))
    # the sign is b - a
    assert paired_bootstrap_ci([1.0, 1.0], [0.0, 0.0]).mean_difference == approx(-1.0)


def test_paired_bootstrap_is_seeded_and_close_to_scipy():
    rng = random.Random(11)
    a = [rng.random() for _ in range(300)]
    b = [x + 0.05 + rng.gauss(0, 0.1) for x in a]
    ci = paired_bootstrap_ci(a, b, n_resamples=4000, seed=1)
    assert ci == paired_bootstrap_ci(a, b, n_resamples=4000, seed=1)
    assert ci != paired_bootstrap_ci(a, b, n_resamples=4000, seed=2)
    assert ci.low < ci.mean_difference < ci.high
    assert ci.mean_difference == approx(float(np.mean(np.array(b) - np.array(a))))
    differences = np.array(b) - np.array(a)
    reference = stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=4000,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(0),
    ).confidence_interval
    standard_error = float(np.std(differences, ddof=1) / math.sqrt(len(differences)))
    # different random streams: the bounds agree to a small fraction of a standard error
    assert ci.low == approx(reference.low, abs=0.15 * standard_error)
    assert ci.high == approx(reference.high, abs=0.15 * standard_error)
    # and the interval is about +-1.96 standard errors wide
    assert ci.high - ci.low == approx(2 * 1.96 * standard_error, rel=0.1)


def test_paired_bootstrap_edge_cases():
    assert paired_bootstrap_ci([], []) is None
    narrower = paired_bootstrap_ci([0, 0, 0, 0], [0, 1, 0, 1], confidence=0.5)
    wider = paired_bootstrap_ci([0, 0, 0, 0], [0, 1, 0, 1], confidence=0.99)
    assert wider.high - wider.low >= narrower.high - narrower.low
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0], confidence=1.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0], n_resamples=0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0], [1.0, 2.0])


@pytest.mark.parametrize(("rho", "n"), [(0.0, 40), (0.4, 60), (0.8, 200)])
def test_spearman_interval_covers_the_population_rho(rho, n):
    """Simulation against a known truth: bivariate normal pairs whose population Spearman correlation is
    (6 / pi) * asin(rho / 2); over 600 samples the 95% interval covers it at least 93% of the time."""
    truth = 6 / math.pi * math.asin(rho / 2)
    rng = np.random.default_rng(7)
    covered = 0
    runs = 600
    for _ in range(runs):
        x = rng.standard_normal(n)
        y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal(n)
        interval = spearman_interval(x.tolist(), y.tolist())
        assert interval is not None and interval.low <= interval.rho <= interval.high
        covered += interval.low <= truth <= interval.high
    assert covered / runs >= 0.93, covered / runs


def test_spearman_interval_edges():
    assert spearman_interval([1, 2, 3, 4], [1, 2, 3, 4]) is None  # too few pairs for an interval
    assert spearman_interval([1, 1, 1, 1, 1], [1, 2, 3, 4, 5]) is None  # a constant side
    perfect = spearman_interval([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12])
    assert perfect is not None and perfect.rho == pytest.approx(1.0) and perfect.high <= 1.0 and perfect.low > 0
    with pytest.raises(ValueError):
        spearman_interval([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], confidence=1.5)
