"""Which items reviewers see next: fixed-size draws whose first-order inclusion probabilities are exact and
recorded, so estimates from the reviews can weight each one by 1 / probability and stay valid however the
draw favoured some items.

Three designs over a round's candidates (the items never pushed before):

- `random`: a simple random sample; every candidate has probability size / candidates.
- `stratified`: strata by the judge's level (0..4, and "unrated"); one item in each, the rest allocated in
  proportion to the square root of each stratum's size, so the rarer (usually low) levels are over-sampled;
  a simple random sample in each; probability n_h / N_h.
- `uncertain`: probability proportional to half a uniform floor and half the judge's uncertainty about whether
  the label is at least the threshold level, sqrt(p (1 - p)) (with a jury, p is its smoothed share of jurors at
  or above the threshold) (the optimal rule for a binary target when
  sampling for active inference). The floor bounds every weight 1 / probability at twice the uniform one.

`uncertain` is drawn by randomized systematic sampling with probabilities proportional to size (the order
shuffled, one uniform start, every unit whose cumulative interval holds a point start + k is taken): exactly
`size` items, each with exactly its probability. Pairwise inclusion probabilities are not those of a simple
design (some pairs never occur together); the 1 / probability weighting needs only the first-order ones.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel

from prelabel.judge import MAX_LEVEL

Strategy = Literal["random", "uncertain", "stratified"]
STRATEGIES: tuple[str, ...] = ("random", "uncertain", "stratified")
NEEDS_RATINGS = frozenset({"uncertain", "stratified"})
UNRATED = "unrated"
DEFAULT_THRESHOLD = 3  # "good"
FLOOR_SHARE = 0.5
# How far from the truth a judge's (expected) level is taken to be, without reviews to calibrate it: the
# probability that a label is at least the threshold is logistic in its distance from the half-level boundary.
JUDGE_SPREAD = 0.25
# A jury's share at or above the threshold is smoothed by half a juror each way (never quite 0 or 1).
JURY_SMOOTHING = 0.5
PRIOR_REVIEWS = 2.0  # the judge-only probability counts as this many reviews in a calibrated level's share
_ONE = 1.0 - 1e-9  # a probability this close to 1 is taken as certain (float sums of capped shares)


class JudgeRating(BaseModel):
    """What the judge said of one candidate's label: its level and, when log-probs exist, the expected level;
    with a jury, the aggregate and every juror's level that was given."""

    level: int
    expected_level: float | None = None
    jury_levels: list[int] | None = None


class Calibration(BaseModel):
    """Earlier reviews per judge level: how many there were and how many reviewers rated at least the threshold."""

    threshold: int
    reviewed: dict[int, int] = {}
    at_least: dict[int, int] = {}

    @property
    def n_reviews(self) -> int:
        return sum(self.reviewed.values())


class Draw(BaseModel):
    """A round's draw: the chosen candidates (positions in the candidate list, in draw order), every candidate's
    inclusion probability, and where the uncertain design's probabilities came from."""

    strategy: str
    chosen: list[int]
    probabilities: list[float]
    basis: str = ""


class RatingsMissing(ValueError):
    """A design that needs the judge's ratings was asked for without them."""


# -- the designs ------------------------------------------------------------------------------------------------


def capped_probabilities(weights: Sequence[float], size: int) -> list[float]:
    """Inclusion probabilities proportional to positive `weights` summing to `size`, any above 1 set to 1 and the
    rest scaled up again until none exceeds 1."""
    count = len(weights)
    if any(not (w > 0 and math.isfinite(w)) for w in weights):
        raise ValueError("weights must be positive and finite")
    if size >= count:
        return [1.0] * count
    probabilities = [0.0] * count
    open_ = list(range(count))
    remaining = size
    while True:
        total = sum(weights[i] for i in open_)
        scaled = {i: remaining * weights[i] / total for i in open_}
        certain = [i for i in open_ if scaled[i] >= _ONE]
        if not certain:
            for i in open_:
                probabilities[i] = scaled[i]
            return probabilities
        for i in certain:
            probabilities[i] = 1.0
        remaining -= len(certain)
        open_ = [i for i in open_ if scaled[i] < _ONE]
        if remaining == 0:
            return probabilities


def systematic_sample(probabilities: Sequence[float], rng: random.Random) -> list[int]:
    """Randomized systematic sampling: a draw of exactly sum(probabilities) units (an integer), unit i with
    probability probabilities[i]. Certain units (probability 1) are taken outright."""
    chosen = [i for i, p in enumerate(probabilities) if p >= _ONE]
    rest = [i for i, p in enumerate(probabilities) if p < _ONE]
    wanted = round(sum(probabilities[i] for i in rest))
    if wanted == 0:
        return chosen
    rng.shuffle(rest)
    cumulative: list[float] = []
    running = 0.0
    for i in rest:
        running += probabilities[i]
        cumulative.append(running)
    start = rng.random()
    # Each unit's interval is shorter than 1, so it holds at most one point start + k.
    positions = [min(bisect_left(cumulative, start + k), len(rest) - 1) for k in range(wanted)]
    return chosen + [rest[position] for position in positions]


def random_draw(count: int, size: int, rng: random.Random) -> Draw:
    if size >= count:
        return Draw(strategy="random", chosen=list(range(count)), probabilities=[1.0] * count)
    return Draw(strategy="random", chosen=rng.sample(range(count), size), probabilities=[size / count] * count)


def allocate(stratum_sizes: dict[str, int], size: int) -> dict[str, int]:
    """Sample sizes per stratum summing to `size` (or to every candidate, if fewer): one in each stratum, the rest
    in proportion to the square root of each stratum's size, none above its stratum's size, rounded by largest
    remainder. Every stratum gets at least one, so no candidate has probability 0."""
    sizes = {name: n for name, n in stratum_sizes.items() if n > 0}
    total = sum(sizes.values())
    if size >= total:
        return dict(sizes)
    if size < len(sizes):
        raise ValueError(
            f"a stratified sample of {size} cannot reach the {len(sizes)} judge levels present "
            f"({', '.join(sorted(sizes, key=_stratum_order))}): draw at least {len(sizes)}"
        )
    allocation = dict.fromkeys(sizes, 1)
    room = {name: n - 1 for name, n in sizes.items()}
    open_ = {name for name in sizes if room[name] > 0}
    remaining = size - len(sizes)
    shares: dict[str, float] = {}
    while open_ and remaining > 0:
        weight = sum(math.sqrt(sizes[name]) for name in open_)
        shares = {name: remaining * math.sqrt(sizes[name]) / weight for name in open_}
        full = {name for name in open_ if shares[name] >= room[name]}
        if not full:
            break
        for name in full:
            allocation[name] += room[name]
        remaining -= sum(room[name] for name in full)
        open_ -= full
    if remaining > 0:
        for name in open_:
            allocation[name] += math.floor(shares[name])
        left = size - sum(allocation.values())
        # Largest remainders first; ties in a fixed order, so a seed reproduces the draw.
        ranked = sorted(open_, key=lambda name: (-(shares[name] - math.floor(shares[name])), _stratum_order(name)))
        for name in ranked[:left]:
            allocation[name] += 1
    return allocation


def stratum_of(rating: JudgeRating | None) -> str:
    return UNRATED if rating is None else str(rating.level)


def stratified_draw(ratings: Sequence[JudgeRating | None], size: int, rng: random.Random) -> Draw:
    members: dict[str, list[int]] = {}
    for index, rating in enumerate(ratings):
        members.setdefault(stratum_of(rating), []).append(index)
    allocation = allocate({name: len(items) for name, items in members.items()}, size)
    probabilities = [0.0] * len(ratings)
    chosen: list[int] = []
    for name in sorted(members, key=_stratum_order):
        items, taken = members[name], allocation.get(name, 0)
        for index in items:
            probabilities[index] = taken / len(items)
        chosen += rng.sample(items, taken)
    return Draw(strategy="stratified", chosen=chosen, probabilities=probabilities, basis="judge level strata")


def _stratum_order(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (MAX_LEVEL + 1, name)


def uncertain_draw(
    p_at_least: Sequence[float | None], size: int, rng: random.Random, floor_share: float = FLOOR_SHARE
) -> Draw:
    """Probabilities proportional to floor_share / candidates + (1 - floor_share) * u_i / sum(u), where
    u_i = sqrt(p_i (1 - p_i)) and p_i the probability that candidate i's label is at least the threshold (None:
    no rating, u = 0, the floor alone)."""
    count = len(p_at_least)
    uncertainty = [0.0 if p is None else math.sqrt(max(0.0, p * (1.0 - p))) for p in p_at_least]
    spread = sum(uncertainty)
    if spread > 0:
        weights = [floor_share / count + (1.0 - floor_share) * u / spread for u in uncertainty]
    else:
        weights = [1.0 / count] * count  # nothing to favour: a uniform draw
    probabilities = capped_probabilities(weights, size) if count else []
    return Draw(strategy="uncertain", chosen=systematic_sample(probabilities, rng), probabilities=probabilities)


# -- the judge's probability that a label is at least the threshold ----------------------------------------------


def judge_probability(rating: JudgeRating, threshold: int = DEFAULT_THRESHOLD) -> float:
    """From the judge alone: logistic in how far its (expected) level is above the boundary threshold - 1/2. From
    a jury of m (two or more that rated): the share of jurors at or above the threshold, smoothed as
    (k + 1/2) / (m + 1), so a split jury is near 1/2 and its item is reviewed more often."""
    jury = rating.jury_levels
    if jury is not None and len(jury) > 1:
        return (sum(level >= threshold for level in jury) + JURY_SMOOTHING) / (len(jury) + 2 * JURY_SMOOTHING)
    level = rating.expected_level if rating.expected_level is not None else float(rating.level)
    return 1.0 / (1.0 + math.exp(-(level - (threshold - 0.5)) / JUDGE_SPREAD))


def calibration_from_reviews(pairs: Iterable[tuple[int, int]], threshold: int = DEFAULT_THRESHOLD) -> Calibration:
    """(judge level, reviewer level) pairs of earlier reviews, counted per judge level."""
    calibration = Calibration(threshold=threshold)
    for judge, reviewer in pairs:
        calibration.reviewed[judge] = calibration.reviewed.get(judge, 0) + 1
        calibration.at_least[judge] = calibration.at_least.get(judge, 0) + (reviewer >= threshold)
    return calibration


def probability_at_least(
    rating: JudgeRating | None, threshold: int = DEFAULT_THRESHOLD, calibration: Calibration | None = None
) -> float | None:
    """The probability that a reviewer rates the label at least `threshold`: the reviewers' share at this judge
    level when earlier reviews exist (shrunk towards the judge-only figure by PRIOR_REVIEWS), else the judge's."""
    if rating is None:
        return None
    prior = judge_probability(rating, threshold)
    if calibration is None or calibration.threshold != threshold:
        return prior
    seen = calibration.reviewed.get(rating.level, 0)
    return (calibration.at_least.get(rating.level, 0) + PRIOR_REVIEWS * prior) / (seen + PRIOR_REVIEWS)


# -- one round ----------------------------------------------------------------------------------------------------


def check_strategy(strategy: str, have_ratings: bool, ratings_option: str = "--labels") -> None:
    """Refuse an unknown strategy, or one that needs the judge's ratings without them."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if strategy in NEEDS_RATINGS and not have_ratings:
        raise RatingsMissing(
            f"--strategy {strategy} needs the judge's rating of every candidate before the draw: give the "
            f"`prelabel label` output of the pool with {ratings_option} LABELED.jsonl"
        )


def draw_round(
    strategy: str,
    ratings: Sequence[JudgeRating | None] | None,
    count: int,
    size: int | None,
    seed: int | None,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    calibration: Calibration | None = None,
    ratings_option: str = "--labels",
) -> Draw:
    """Draw `size` of `count` candidates (all of them when size is None) by `strategy`. The designs that need the
    judge's rating of every candidate are refused without them (`ratings_option` names where they come from)."""
    check_strategy(strategy, ratings is not None, ratings_option)
    if size is not None and size < 0:
        raise ValueError("the sample size must not be negative")
    wanted = count if size is None else min(size, count)
    rng = random.Random(seed)
    if strategy == "random" or wanted in (0, count):
        draw = random_draw(count, wanted, rng)
        return draw.model_copy(update={"strategy": strategy})
    assert ratings is not None and len(ratings) == count
    if strategy == "stratified":
        return stratified_draw(ratings, wanted, rng)
    draw = uncertain_draw([probability_at_least(r, threshold, calibration) for r in ratings], wanted, rng)
    if calibration is not None and calibration.n_reviews:
        draw.basis = f"calibrated by {calibration.n_reviews} earlier reviews"
    elif any(rating is not None and rating.jury_levels for rating in ratings):
        draw.basis = "the jurors' shares at the threshold"
    else:
        draw.basis = "the judge's levels"
    return draw
