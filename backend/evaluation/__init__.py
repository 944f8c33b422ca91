"""Quantitative evaluation of prompt versions on one fixed evaluation set, their comparison, and judge
calibration against reviewers.

The evaluation set is a seeded sample of the pool written to a file the first time and read back verbatim
afterwards, so every prompt version, today's and next week's, is measured on exactly the same items. A run
directory holds one JSONL of per-item results per version and `summary.json` with every version's
summary; evaluating another version into the same directory adds it, so versions can be compared later.

Judge levels are the verdict; ROUGE and BLEU against reference labels are reported as string-matching
baselines only. Classification against ground truth gets accuracy, per-class scores and the confusion matrix.

The modules, in the order a run uses them:
    evalset       the evaluation set: drawn once, read back verbatim; an item's input features and reference
    results       one evaluated item of one version (items/<version>.jsonl)
    usage         tokens and cost of the LLM calls logged during a version's run
    summary       a version's summary and metrics, and running one version over the set
    runs          the run directory: summary.json and the per-version item files
    compare       two versions on the same items: paired difference, bootstrap interval, biggest movers
    reviews       reviewers' records read from a corrections file or a Label Studio export
    slices        subset analysis over a run, with what reviewers did as extra slices
    calibration   how far the judge's levels agree with reviewers'
    report        report.html and report.md (formatting and charts beside it)
"""

from __future__ import annotations


class EvaluationError(ValueError):
    """The evaluation cannot run as asked; the message says why."""
