"""Judge calibration against reviewers: how far the judge's levels agree with the levels reviewers set, so
whether its ratings can stand in for reviewers' on the items nobody reviewed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from prelabel import metrics
from prelabel.judge import LEVELS, MAX_LEVEL
from prelabel.records import ReviewedTask
from prelabel.review_stats import anchored_warning

DEFAULT_KAPPA_THRESHOLD = 0.4


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
    # Pairs whose reviewer's rating started from the judge's level (pre-filled before blind reviews).
    n_anchored: int = 0
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

    def rated(group: Iterable[ReviewedTask]) -> list[tuple[int, int, bool]]:
        """(judge level, reviewer level, possibly anchored) of the tasks holding both levels on the scale."""
        return [
            (t.llm_level, t.human_level, t.rating_anchored)
            for t in group
            if t.llm_level is not None
            and t.human_level is not None
            and 0 <= t.llm_level <= MAX_LEVEL
            and 0 <= t.human_level <= MAX_LEVEL
        ]

    triples = rated(reviewed)
    pairs = [(j, h) for j, h, _ in triples]
    n_anchored = sum(1 for *_, anchored in triples if anchored)
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
        version_triples = rated(group)
        version_pairs = [(j, h) for j, h, _ in version_triples]
        per_version[version] = {
            "n": len(version_pairs),
            "anchored": sum(1 for *_, anchored in version_triples if anchored),
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
    anchored = anchored_warning(n_anchored, len(pairs))
    if anchored:
        warning = f"{warning}; {anchored}" if warning else anchored
    return Calibration(
        n_reviewed=len(reviewed),
        n_pairs=len(pairs),
        n_anchored=n_anchored,
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
