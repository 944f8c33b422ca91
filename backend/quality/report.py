"""The quality report: labeled items and reviews in, every figure of `prelabel quality` out (rules in the
package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from prelabel import metrics
from prelabel.judge import LEVELS
from prelabel.quality import stats
from prelabel.quality.inputs import INCLUSION_FIELD, Labels, QualityInputError, Review, Reviews, round_order
from prelabel.quality.stats import Interval

DEFAULT_THRESHOLD = 3  # good
DEFAULT_TARGET_WIDTH = 0.05
COMBINED_METHOD = "prediction-powered inference (PPI++, power-tuned, ppi-python)"
REVIEWED_METHOD = "the reviews alone, weighted by 1/inclusion probability"
WEIGHTED_METHOD = COMBINED_METHOD + " with 1/inclusion-probability weights (active inference)"


class CombinedInterval(Interval):
    method: str


class TargetFigures(BaseModel):
    """One target (share at least the threshold, or mean level): the three figures."""

    judge_only: float | None  # biased: no interval
    reviewed_only: Interval | None
    combined: CombinedInterval | None


class Agreement(BaseModel):
    kappa_quadratic: Interval | None
    n_pairs: int
    exact: float | None


class CalibrationRow(BaseModel):
    judge_level: int
    judge_rating: str
    n_items: int  # labeled items the judge put at this level
    n_reviewed: int
    reviewer_mean_level: float | None
    reviewer_share_at_least: float | None


class ReviewsNeeded(BaseModel):
    target_width: float
    current_width: float | None  # of the combined share interval
    reviews_now: int
    reviews_total: int | None  # None: the judge's part alone is wider than the target
    additional: int | None
    reviewed_only_additional: int | None  # the same target without the judge, for comparison
    assumption: str


class RoundSummary(BaseModel):
    name: str | None
    n: int
    uniform: bool
    n_eff: float
    strategies: list[str]
    used: bool


class Matching(BaseModel):
    reviews_read: int
    used: int
    other_version: int  # reviewed another version of the label
    unknown_source: int  # source id not among the labels
    no_reviewer_rating: int
    duplicates: int  # a second review of an item already reviewed
    rating_anchored: int  # used, but the reviewer's rating may have started from the judge's


class QualityReport(BaseModel):
    n_items: int
    n_rated: int
    n_unrated: int
    n_failed: int  # label lines without a label (errors): not part of the dataset
    unrated_imputation: str
    n_reviewed: int
    threshold: int
    threshold_name: str
    share_at_least: TargetFigures
    mean_level: TargetFigures
    agreement: Agreement
    calibration: list[CalibrationRow]
    reviews_needed: ReviewsNeeded | None
    rounds: list[RoundSummary]
    matching: Matching
    assume_random: bool
    warnings: list[str]
    problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _missing_inclusion(reviews: Sequence[Review]) -> QualityInputError:
    first = reviews[0]
    return QualityInputError(
        f"{first.where}: field `{INCLUSION_FIELD}` is missing ({len(reviews)} review(s) lack it). It is the "
        "probability with which the item was drawn for review, which the estimates weight by; reviews pushed "
        "before it was recorded have none. If these reviews are a uniform random sample of the labeled items, "
        "pass --assume-random"
    )


def build_report(
    labels: Labels,
    reviews: Reviews,
    threshold: int = DEFAULT_THRESHOLD,
    *,
    assume_random: bool = False,
    target_width: float = DEFAULT_TARGET_WIDTH,
    bootstrap_seed: int = 0,
) -> QualityReport:
    items = labels.items
    big_n = len(items)
    position = {item.source_id: i for i, item in enumerate(items)}
    warnings: list[str] = []

    # -- match reviews to labeled items ------------------------------------------------------------------
    counts = dict(other_version=0, unknown_source=0, no_reviewer_rating=0, duplicates=0)
    matched: list[tuple[int, Review]] = []
    taken: set[int] = set()
    ordered = sorted(reviews.reviews, key=lambda r: round_order(r.round))  # stable: file order within a round
    for review in ordered:
        index = position.get(review.source_id)
        if index is None:
            counts["unknown_source"] += 1
        elif review.reviewer_level is None:
            counts["no_reviewer_rating"] += 1
        elif (review.llm_label or "").strip() != items[index].label.strip():
            counts["other_version"] += 1
        elif index in taken:
            counts["duplicates"] += 1
        else:
            taken.add(index)
            matched.append((index, review))
    if not matched:
        raise QualityInputError(_nothing_matched(reviews, counts))
    lacking = [r for _, r in matched if r.inclusion_probability is None]
    if lacking and not assume_random:
        raise _missing_inclusion(lacking)
    anchored = sum(r.rating_anchored for _, r in matched)

    # -- population arrays ---------------------------------------------------------------------------------
    levels = np.array([-1 if item.level is None else item.level for item in items])
    rated = levels >= 0
    n_rated = int(rated.sum())
    share_hat = (levels >= threshold).astype(float)
    mean_hat = np.array([item.expected_level if item.expected_level is not None else np.nan for item in items])
    judge_share = float(share_hat[rated].mean()) if n_rated else None
    judge_mean = float(mean_hat[rated].mean()) if n_rated else None
    if n_rated < big_n:
        # The imputation is fixed by the judge's ratings alone, never by the reviews: PPI stays valid.
        share_hat[~rated] = judge_share if judge_share is not None else 0.5
        mean_hat[~rated] = judge_mean if judge_mean is not None else LEVELS.index("moderate")
    imputation = "the judge's mean over the rated items" if n_rated < big_n else "none needed (every label is rated)"

    # -- rounds ----------------------------------------------------------------------------------------------
    groups: dict[tuple[str | None, bool], list[tuple[int, Review]]] = {}
    for item_index, review in matched:
        groups.setdefault((review.round, review.inclusion_probability is None), []).append((item_index, review))
    keys = sorted(groups, key=lambda key: (round_order(key[0]), key[1]))
    share_rounds: list[stats.Round] = []
    mean_rounds: list[stats.Round] = []
    summaries: list[RoundSummary] = []
    for name, unrecorded in keys:
        group = groups[(name, unrecorded)]
        members = np.array([i for i, _ in group])
        reviewer = np.array([float(r.reviewer_level or 0) for _, r in group])
        pi = None if unrecorded else np.array([float(r.inclusion_probability or 1.0) for _, r in group])
        # Reviews without pi beside recorded ones of the same round are a separate uniform sample.
        label = f"{name or '-'} (no pi)" if unrecorded and (name, False) in groups else name
        share_rounds.append(stats.Round(label or "-", members, (reviewer >= threshold).astype(float), pi))
        mean_rounds.append(stats.Round(label or "-", members, reviewer, pi))
        summaries.append(
            RoundSummary(
                name=label,
                n=len(group),
                uniform=share_rounds[-1].uniform,
                n_eff=round(stats.kish_n_eff(share_rounds[-1].weights), 1),
                strategies=sorted({r.strategy for _, r in group if r.strategy}),
                used=len(group) >= stats.MIN_ROUND,
            )
        )
    dropped = [s for s in summaries if not s.used]
    if dropped:
        warnings.append(
            f"{len(dropped)} round(s) with fewer than {stats.MIN_ROUND} matched reviews left out of the estimates "
            f"({', '.join(str(s.name or '-') for s in dropped[:3])}); their items still count as reviewed"
        )

    share_estimates = stats.estimate(share_rounds, share_hat, big_n, share=True)
    mean_estimates = stats.estimate(mean_rounds, mean_hat, big_n, share=False)
    weighted = any(not s.uniform for s in summaries)
    method = WEIGHTED_METHOD if weighted else COMBINED_METHOD
    used_rounds = len([s for s in summaries if s.used])
    if used_rounds > 1:
        method += f"; {used_rounds} rounds combined with design-based inverse-variance weights"

    def figures(judge_only: float | None, estimates: stats.Estimates) -> TargetFigures:
        combined, reviewed = estimates.combined_interval, estimates.reviewed_interval
        how = method
        if combined is not None and reviewed is not None and combined.width <= 0 < reviewed.width:
            # Reviews without any spread (every one at the threshold or above, the judge alike): a normal
            # interval of width 0 claims certainty; the reviewed-only one (Wilson for a share) does not.
            combined, how = reviewed, f"{REVIEWED_METHOD} (the reviews show no spread to correct the judge with)"
        return TargetFigures(
            judge_only=judge_only,
            reviewed_only=reviewed,
            combined=None if combined is None else CombinedInterval(**combined.model_dump(), method=how),
        )

    share = figures(judge_share, share_estimates)
    mean = figures(judge_mean, mean_estimates)
    share_reviewed, share_combined = share_estimates.reviewed, share_estimates.combined

    # -- agreement and calibration -------------------------------------------------------------------------
    pairs = [(int(levels[i]), int(r.reviewer_level or 0)) for i, r in matched if levels[i] >= 0]
    judge_levels = np.array([j for j, _ in pairs], dtype=int)
    reviewer_levels = np.array([h for _, h in pairs], dtype=int)
    kappa = stats.kappa_interval(judge_levels, reviewer_levels, len(LEVELS), seed=bootstrap_seed) if pairs else None
    if kappa is not None:  # the point estimate as everywhere else in prelabel (scikit-learn)
        point = metrics.quadratic_weighted_kappa(judge_levels.tolist(), reviewer_levels.tolist(), len(LEVELS))
        kappa = Interval(estimate=point if point is not None else kappa.estimate, low=kappa.low, high=kappa.high)
    calibration = []
    for level, name in enumerate(LEVELS):
        at = reviewer_levels[judge_levels == level]
        calibration.append(
            CalibrationRow(
                judge_level=level,
                judge_rating=name,
                n_items=int((levels == level).sum()),
                n_reviewed=len(at),
                reviewer_mean_level=float(at.mean()) if len(at) else None,
                reviewer_share_at_least=float((at >= threshold).mean()) if len(at) else None,
            )
        )

    # -- reviews needed --------------------------------------------------------------------------------------
    needed = None
    if share_combined is not None and share_reviewed is not None and share.combined is not None:
        total = stats.reviews_for_width(share_combined, target_width)
        alone = stats.reviews_for_width(share_reviewed, target_width)
        needed = ReviewsNeeded(
            target_width=target_width,
            current_width=share.combined.width,
            reviews_now=share_combined.n,
            reviews_total=total,
            additional=None if total is None else max(0, total - share_combined.n),
            reviewed_only_additional=None if alone is None else max(0, alone - share_reviewed.n),
            assumption=(
                "new reviews drawn the way the current ones were and the judge unchanged, so the variance shrinks "
                "as 1/reviews (ignoring the gain from reviewing a sizeable part of the items: on the safe side)"
            ),
        )

    # -- warnings --------------------------------------------------------------------------------------------
    if anchored:
        warnings.append(
            f"{anchored} of {len(matched)} reviewer ratings may be anchored on the judge's (the rating control "
            "was pre-filled from the judge's prediction, as in old label configs): agreement is inflated and "
            "the estimates lean toward the judge. Review with the blind config for a clean figure"
        )
    if counts["other_version"]:
        warnings.append(
            f"{counts['other_version']} review(s) rated another version of the label than the labels file holds "
            "(the item was labeled again): left out"
        )
    if counts["unknown_source"]:
        warnings.append(f"{counts['unknown_source']} review(s) of source ids not in the labels file: left out")
    if lacking:
        warnings.append(
            f"{len(lacking)} review(s) without `{INCLUSION_FIELD}` taken as a uniform random sample (--assume-random)"
        )
    if n_rated < big_n:
        warnings.append(f"{big_n - n_rated} labeled item(s) have no judge rating: their prediction is imputed")
    if len(matched) < 30:
        warnings.append(f"only {len(matched)} usable reviews: every interval is wide and rests on few reviews")
    return QualityReport(
        n_items=big_n,
        n_rated=n_rated,
        n_unrated=big_n - n_rated,
        n_failed=labels.failed,
        unrated_imputation=imputation,
        n_reviewed=len(matched),
        threshold=threshold,
        threshold_name=LEVELS[threshold],
        share_at_least=share,
        mean_level=mean,
        agreement=Agreement(
            kappa_quadratic=kappa,
            n_pairs=len(pairs),
            exact=metrics.exact_agreement(judge_levels.tolist(), reviewer_levels.tolist()),
        ),
        calibration=calibration,
        reviews_needed=needed,
        rounds=summaries,
        matching=Matching(reviews_read=len(reviews.reviews), used=len(matched), rating_anchored=anchored, **counts),
        assume_random=assume_random,
        warnings=warnings,
        problems=labels.problems + reviews.problems,
    )


def _nothing_matched(reviews: Reviews, counts: dict[str, int]) -> str:
    parts = [
        f"{counts['unknown_source']} with a source id not in the labels",
        f"{counts['other_version']} of another version of the label",
        f"{counts['no_reviewer_rating']} without a reviewer rating",
    ]
    first = reviews.reviews[0].where if reviews.reviews else "the reviews"
    return (
        f"no review matches a labeled item ({len(reviews.reviews)} read, starting at {first}: {', '.join(parts)}). "
        "A review counts when its source_id is in the labels file and its llm_label is that item's label"
    )
