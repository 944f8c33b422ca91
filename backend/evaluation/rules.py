"""The rules every report states, one line each: what "better" means, how verdicts and slices are decided,
which metrics. One owner, so the HTML page, the Markdown summary and the terminal say the same."""

from __future__ import annotations

from prelabel import metrics

RANKING = (
    "Better means a higher mean judge level over the rated items (very bad = 0 … excellent = 4), ties broken by "
    "the share at good or better; unrated items are counted apart, never as very bad."
)
COMPARISON = (
    "A candidate is better (worse) when the 95% paired bootstrap interval of its mean level minus the base's, "
    "over the items both versions rated, lies above (below) 0; otherwise there is no clear difference."
)
CLASSIFICATION = (
    "Accuracy, per-class precision, recall and F1 (scikit-learn; macro = the unweighted mean over classes) "
    "compare the label with the ground truth exactly; an item without a label counts as wrong; the confusion "
    "matrix has the true classes in rows."
)
CALIBRATION = (
    "Agreement between the judge and reviewers on the same items: Cohen's kappa with quadratic weights on the "
    "five levels (scikit-learn), exact and within-one shares, Spearman's rho (scipy)."
)

LENGTH_BIAS = (
    "Length bias: Spearman's rho (scipy) between the judge's level and the label's length in characters, and "
    "its length divided by the input's, with 95% Fisher-z intervals (variance 1.06/(n-3)); “favours length” when "
    "the interval of the relative measure lies above 0. Longer can also mean more complete: reviewers decide."
)

JURY_AGREEMENT = (
    "Jury agreement: Cohen's kappa with quadratic weights on the five levels (scikit-learn) for each pair of jurors, "
    "over the n items both rated; the jury's level is the median of its jurors' (the lower one for an even count), "
    "its score the mean of their expected levels / 4. Low agreement: the rating depends on who judges; review more."
)


def slices(min_n: int) -> str:
    return (
        "Slices: input size cut at its quartiles, each named task field by value, and what reviewers did; a worst "
        f"slice has at least {min_n} rated items and a mean below the overall one, ranked by the top of its 95% "
        "interval; “may be noise” unless Welch's t-test against the other items, Benjamini-Hochberg adjusted "
        "over the slices, is below 5%."
    )


def text_metrics() -> list[str]:
    """ROUGE's and BLEU's rules: string-matching baselines against references, never the verdict."""
    return [
        "ROUGE and BLEU match strings against the reference labels: a baseline, not the verdict (a correct "
        "summary in other words scores low).",
        metrics.ROUGE_RULE + ".",
        metrics.bleu_rule() + ".",
    ]
