"""The estimators behind `prelabel quality`, on numpy arrays (the rules are in the package docstring).

A population of N labeled items, each with the judge's prediction `yhat` (a 0/1 "judge says at least the
threshold" for the share, the judge's expected level for the mean level); reviews grouped in rounds, each
round a probability sample of the items not reviewed in earlier rounds, every reviewed item with its
reviewer value `y` and its inclusion probability `pi` within its round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

Z95 = 1.959963984540054  # two-sided 95% normal quantile


class Interval(BaseModel):
    estimate: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class Round:
    """One round's reviews: population indices of the reviewed items, the reviewer's values, and the inclusion
    probabilities (None: a uniform random sample of the round's candidates)."""

    name: str
    index: np.ndarray
    y: np.ndarray
    pi: np.ndarray | None = None

    @property
    def weights(self) -> np.ndarray:
        return np.ones(len(self.index)) if self.pi is None else 1.0 / self.pi

    @property
    def uniform(self) -> bool:
        return self.pi is None or bool(np.ptp(self.pi) <= 1e-12 * float(np.max(self.pi)))


@dataclass(frozen=True)
class RoundEstimate:
    """One round's estimate of the whole population's mean, with its variance split for planning."""

    name: str
    n: int
    n_eff: float  # Kish effective sample size of the round's weights
    candidates: int  # items the round was drawn from (not reviewed in an earlier round)
    estimate: float
    variance: float
    variance_reviews: float  # the part that shrinks with more reviews (the rectifier, or the whole for reviewed-only)
    lam: float | None = None  # PPI++ power tuning, the mean over the folds (combined only)


@dataclass(frozen=True)
class Combined:
    estimate: float
    variance: float
    variance_reviews: float
    rounds: list[RoundEstimate]
    n: int
    population: int

    @property
    def half_width(self) -> float:
        return Z95 * math.sqrt(max(self.variance, 0.0))


MIN_ROUND = 3  # reviews a round needs for a variance (the combined one fits each review's lambda on the others)


def kish_n_eff(weights: np.ndarray) -> float:
    return float(weights.sum() ** 2 / (weights**2).sum()) if len(weights) else 0.0


def hajek(y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """The weighted (Hajek ratio) mean and its linearised variance, with the n/(n-1) small-sample factor."""
    n = len(y)
    mean = float((w * y).sum() / w.sum())
    if n < 2:
        return mean, math.nan
    variance = float((w**2 * (y - mean) ** 2).sum() / w.sum() ** 2 * n / (n - 1))
    return mean, variance


def power_tuning(y: np.ndarray, yhat: np.ndarray, yhat_all: np.ndarray, w: np.ndarray) -> float:
    """PPI++'s lambda for a mean, as ppi_py chooses it with lam=None (the same formula, kept here because the
    library does not return it and the planning below needs it); clipped to [0, 1]. A unit test checks that
    ppi_py's estimate with lam=None equals its estimate with this lambda."""
    n, big_n = len(y), len(yhat_all)
    w = w / w.sum() * n
    first = float(yhat_all.mean() + (w * (y - yhat)).mean())  # the lam=1 estimate
    grads, grads_hat = w * (y - first), w * (yhat - first)
    covariance = 2 * float(np.mean((grads - grads.mean()) * (grads_hat - grads_hat.mean())))
    variance = float(np.var(np.concatenate([grads_hat, yhat_all - first]), ddof=1))
    if not variance > 0:
        return 0.0
    return float(np.clip(covariance / (2 * (1 + n / big_n) * variance), 0.0, 1.0))


FOLDS = 10  # cross-fitting: each review's lambda is fitted on the other nine tenths of its round
SPLIT_SEED = 0


def folds(index: np.ndarray, k: int) -> np.ndarray:
    """Each review's fold (0..k-1, sizes within one of each other): a seeded permutation of the reviews ranked by
    population index, so the split depends only on which items a round reviewed, never on what reviewers said
    or on the order of the reviews file."""
    n = len(index)
    rank = np.empty(n, dtype=int)
    rank[np.argsort(index, kind="stable")] = np.arange(n)
    by_rank = np.empty(n, dtype=int)
    by_rank[np.random.default_rng(SPLIT_SEED).permutation(n)] = np.arange(n) % k
    return by_rank[rank]


def ppi_round(
    y: np.ndarray, yhat: np.ndarray, yhat_all: np.ndarray, w: np.ndarray, index: np.ndarray
) -> tuple[float, float, float, float]:
    """Cross-fitted prediction-powered estimate of the candidates' mean from one round: (estimate, variance, the
    reviews' part of the variance (here all of it), the folds' mean lambda).

    Lambda fitted on the reviews it corrects biases the estimate by order 1/n (half a point on a share from 100
    reviews, a quarter of its standard error, and combining rounds does not average it out). So the reviews are
    split into FOLDS folds (`folds`), each fold's PPI++ estimate (ppi_py, with sample weights) uses the lambda
    fitted on the other folds, and the folds' estimates are averaged by their share of the weights. For a fixed
    judge each fold's lambda is independent of the reviews it is applied to: the estimate is unbiased, and it is
    the Hajek mean of z = y - lambda_fold * (yhat - mean of yhat over the candidates). Its variance is the Hajek
    linearised variance of z (lambda fixed, n/(n-1)), with Student's t on n-1 degrees of freedom over z,
    squared, for small rounds. (ppi_py's own interval takes a single lambda, and its standard error is a
    with-replacement Horvitz-Thompson form that also counts the weights' own spread.)
    """
    import ppi_py  # lazy: it pulls numba, statsmodels and pandas (seconds to import)
    from scipy.stats import t as student

    n = len(y)
    fold = folds(index, min(FOLDS, n))
    judge_mean = float(yhat_all.mean())
    estimate, lams, z = 0.0, [], np.empty(n)
    for j in range(int(fold.max()) + 1):
        held, fit = fold == j, fold != j
        lam = power_tuning(y[fit], yhat[fit], yhat_all, w[fit])
        part = ppi_py.ppi_mean_pointestimate(y[held], yhat[held], yhat_all, lam=lam, w=w[held])
        estimate += float(w[held].sum() / w.sum()) * float(np.asarray(part).ravel()[0])
        z[held] = y[held] - lam * (yhat[held] - judge_mean)
        lams.append(lam)
    _, variance = hajek(z, w)
    # The target is the mean over these candidates, whose judge ratings are all known: ppi_py's imputed term
    # (the judge's mean estimated from a sample of a larger population) is no uncertainty here and is left out.
    variance *= (float(student.ppf(0.975, n - 1)) / Z95) ** 2
    return estimate, variance, variance, float(np.mean(lams))


def combine(rounds: Sequence[Round], population: int, yhat: np.ndarray | None = None) -> Combined | None:
    """The population mean from rounds in the order they were drawn: reviewed-only (Hajek) without `yhat`,
    prediction-powered with it. None when no round has MIN_ROUND reviews.

    Round r estimates the mean over its candidates (the items not reviewed in earlier rounds) and adds the
    earlier rounds' reviewed items as known: (N_r * candidates' mean + sum of earlier y) / N. Given the past its
    error has mean zero, so the rounds' errors are uncorrelated and the combination's variance is the weighted
    sum of theirs. The weights are fixed by the design, not by the outcomes: a round's inverse variance under a
    common per-item variance, n_eff_r * (N / N_r)^2 (Kish effective size). Outcome-based inverse variances would
    hand all the weight to a small round whose reviewers happened to agree (estimated variance 0).
    """
    known = np.zeros(population, dtype=bool)
    known_sum = 0.0
    estimates: list[RoundEstimate] = []
    for current in rounds:
        candidates = ~known
        big_n_r = int(candidates.sum())
        w = current.weights
        if len(current.index) >= MIN_ROUND and big_n_r > 0:
            lam = None
            if yhat is None:
                mean, variance = hajek(current.y, w)
                reviews_part = variance
            else:
                mean, variance, reviews_part, lam = ppi_round(
                    current.y, yhat[current.index], yhat[candidates], w, current.index
                )
            scale = big_n_r / population
            estimates.append(
                RoundEstimate(
                    name=current.name,
                    n=len(current.index),
                    n_eff=kish_n_eff(w),
                    candidates=big_n_r,
                    estimate=(big_n_r * mean + known_sum) / population,
                    variance=scale**2 * variance,
                    variance_reviews=scale**2 * reviews_part,
                    lam=lam,
                )
            )
        known[current.index] = True
        known_sum += float(current.y.sum())
    if not estimates:
        return None
    raw = np.array([e.n_eff * (population / e.candidates) ** 2 for e in estimates])
    a = raw / raw.sum()
    return Combined(
        estimate=float(sum(w * e.estimate for w, e in zip(a, estimates))),
        variance=float(sum(w**2 * e.variance for w, e in zip(a, estimates))),
        variance_reviews=float(sum(w**2 * e.variance_reviews for w, e in zip(a, estimates))),
        rounds=estimates,
        n=sum(e.n for e in estimates),
        population=population,
    )


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a share p observed on n (possibly effective, non-integer) draws."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def share_interval(result: Combined) -> Interval:
    """Reviewed-only share: Wilson on the effective sample size p(1-p)/variance (Korn and Graubard's design-
    effect form; a single uniform round gives plain Wilson on its n), which stays inside [0, 1] and keeps its
    coverage near 0 and 1 where the Wald interval does not."""
    p = min(max(result.estimate, 0.0), 1.0)
    only = result.rounds[0]
    if len(result.rounds) == 1 and only.candidates == result.population and abs(only.n_eff - only.n) < 1e-9:
        n_star: float = only.n  # one uniform sample of the whole population: Wilson on the counts
    elif result.variance > 0 and 0 < p < 1:
        n_star = p * (1 - p) / result.variance
    else:
        n_star = sum(r.n_eff for r in result.rounds)
    low, high = wilson(p, n_star)
    return Interval(estimate=p, low=low, high=high)


def normal_interval(result: Combined, low: float, high: float) -> Interval:
    half = result.half_width
    estimate = min(max(result.estimate, low), high)
    return Interval(estimate=estimate, low=max(low, result.estimate - half), high=min(high, result.estimate + half))


def reviews_for_width(result: Combined, target_width: float) -> int | None:
    """Reviews in all (current ones included) for a 95% interval `target_width` wide, when the reviews' part of
    the variance shrinks as 1/n and the judge's part stays; None when the judge's part alone is wider."""
    n = result.n
    fixed = max(result.variance - result.variance_reviews, 0.0)
    room = (target_width / (2 * Z95)) ** 2 - fixed
    if room <= 0:
        return None
    if result.variance_reviews <= 0:
        return n
    return max(n, math.ceil(n * result.variance_reviews / room))


# -- agreement ---------------------------------------------------------------------------------------------------


def quadratic_kappa_many(a: np.ndarray, b: np.ndarray, n_levels: int = 5) -> np.ndarray:
    """Quadratic-weighted kappa of each row of `a` against the same row of `b` (rows: bootstrap resamples)."""
    rows, n = a.shape
    codes = a * n_levels + b + (np.arange(rows)[:, None] * n_levels * n_levels)
    observed = np.bincount(codes.ravel(), minlength=rows * n_levels * n_levels).reshape(rows, n_levels, n_levels)
    observed = observed / n
    expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :]
    levels = np.arange(n_levels)
    weights = (levels[:, None] - levels[None, :]) ** 2 / (n_levels - 1) ** 2
    disagreement = (weights * expected).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(disagreement > 0, 1 - (weights * observed).sum(axis=(1, 2)) / disagreement, np.nan)


def kappa_interval(
    judge: np.ndarray, reviewer: np.ndarray, n_levels: int = 5, resamples: int = 2000, seed: int = 0
) -> Interval | None:
    """Quadratic-weighted kappa with a seeded percentile bootstrap 95% interval (resamples where one side used a
    single level, kappa undefined, are left out). None when kappa itself is undefined."""
    if len(judge) < 2:
        return None
    point = quadratic_kappa_many(judge[None, :], reviewer[None, :], n_levels)[0]
    if not np.isfinite(point):
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(judge), size=(resamples, len(judge)))
    values = quadratic_kappa_many(judge[picks], reviewer[picks], n_levels)
    values = values[np.isfinite(values)]
    low, high = np.quantile(values, [0.025, 0.975]) if len(values) else (np.nan, np.nan)
    return Interval(estimate=float(point), low=float(low), high=float(high))


@dataclass(frozen=True)
class Estimates:
    """Reviewed-only and combined estimates of one target, with their 95% intervals."""

    reviewed: Combined | None
    combined: Combined | None
    reviewed_interval: Interval | None
    combined_interval: Interval | None


def estimate(rounds: Sequence[Round], yhat: np.ndarray, population: int, *, share: bool) -> Estimates:
    """Both estimates of a share (values 0/1: Wilson for reviewed-only) or a mean level (0..4: normal)."""
    high = 1.0 if share else 4.0
    reviewed = combine(rounds, population)
    combined = combine(rounds, population, yhat)
    if reviewed is None:
        reviewed_interval = None
    elif share:
        reviewed_interval = share_interval(reviewed)
    else:
        reviewed_interval = normal_interval(reviewed, 0.0, high)
    combined_interval = None if combined is None else normal_interval(combined, 0.0, high)
    return Estimates(reviewed, combined, reviewed_interval, combined_interval)
