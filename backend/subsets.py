"""Subset analysis: which kinds of input get poor labels.

Evaluated items are sliced by their input features (dialogue length, number of turns), by any task data
field the user names (topic, source, ...) and by what reviewers did where that is known. Each slice gets its
mean judge level and share at good or better; the worst slices, with their weakest items as examples, are
what tells the user how to revise the prompt.

Numeric features are bucketed at their quantiles, so every bucket holds about the same number of items and a
few very long dialogues cannot hide in a wide bucket.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from prelabel import metrics
from prelabel.judge import LEVELS

GOOD = LEVELS.index("good")

# Input features every evaluated item carries (see backend.evaluate.input_features); numeric ones are bucketed.
NUMERIC_FEATURES: tuple[str, ...] = ("chars", "turns", "words", "edit distance")


class SliceRow(BaseModel):
    """One evaluated item as subset analysis sees it: its level and the values it can be sliced by."""

    source_id: str
    level: int | None  # None: no rating (unrated or no label)
    label: str | None = None
    reason: str | None = None
    input_preview: str = ""
    values: dict[str, Any] = {}


class SliceExample(BaseModel):
    source_id: str
    level: int | None
    rating: str | None
    label: str | None
    reason: str | None
    input_preview: str


class Slice(BaseModel):
    feature: str
    value: str  # the category, or the bucket as "low–high"
    kind: Literal["numeric", "category"]
    order: int  # position within the feature (bucket order, or by size for categories)
    n: int  # items in the slice
    n_rated: int
    mean_level: float | None
    share_good: float | None
    # The 95% Student-t interval of the mean level and the levels' standard deviation (None with fewer than
    # two rated items).
    mean_low: float | None = None
    mean_high: float | None = None
    sd_level: float | None = None
    # Set by analyse(): Welch's test of "differs from the other items", its p-value adjusted for the number of
    # slices tested (Benjamini-Hochberg), and whether the slice may be no worse than the rest.
    p_value: float | None = None
    may_be_noise: bool = False
    examples: list[SliceExample] = []

    @property
    def title(self) -> str:
        return f"{self.feature} = {self.value}"


class SliceReport(BaseModel):
    version: str
    n_items: int
    n_rated: int
    overall_mean: float | None
    overall_share_good: float | None
    min_n: int
    features: dict[str, list[Slice]]
    worst: list[Slice]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _category(value: Any) -> str:
    if value is None or value == "":
        return "(none)"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "(none)"
    return str(value)


def _fmt(value: float, integral: bool) -> str:
    return str(int(round(value))) if integral else f"{value:.3g}"


def bucket_edges(values: Sequence[float], n_buckets: int) -> list[float]:
    """Quantile edges (lowest first, highest last), duplicates dropped: fewer buckets for skewed data."""
    if not values:
        return []
    edges = [metrics.quantile(values, i / n_buckets) for i in range(n_buckets + 1)]
    unique: list[float] = []
    for edge in edges:
        if not unique or edge > unique[-1]:
            unique.append(edge)
    return unique


def bucket_index(value: float, edges: Sequence[float]) -> int:
    """Buckets are [edge_i, edge_i+1), the last one closed; a single edge means one bucket."""
    for i in range(len(edges) - 2):
        if value < edges[i + 1]:
            return i
    return max(len(edges) - 2, 0)


def _examples(rows: Sequence[SliceRow], limit: int) -> list[SliceExample]:
    # The weakest rated items first: what to read before revising the prompt.
    ordered = sorted(rows, key=lambda r: (r.level is None, r.level if r.level is not None else 0, r.source_id))
    return [
        SliceExample(
            source_id=r.source_id,
            level=r.level,
            rating=LEVELS[r.level] if r.level is not None else None,
            label=r.label,
            reason=r.reason,
            input_preview=r.input_preview,
        )
        for r in ordered[:limit]
    ]


def _slice(
    feature: str,
    value: str,
    kind: Literal["numeric", "category"],
    order: int,
    rows: Sequence[SliceRow],
    n_examples: int,
) -> Slice:
    levels = [r.level for r in rows if r.level is not None]
    interval = metrics.mean_interval(levels)
    return Slice(
        feature=feature,
        value=value,
        kind=kind,
        order=order,
        n=len(rows),
        n_rated=len(levels),
        mean_level=metrics.mean(levels),
        mean_low=interval.low if interval else None,
        mean_high=interval.high if interval else None,
        sd_level=statistics.stdev(levels) if len(levels) >= 2 else None,
        share_good=(sum(level >= GOOD for level in levels) / len(levels)) if levels else None,
        examples=_examples(rows, n_examples),
    )


def slice_numeric(rows: Sequence[SliceRow], feature: str, n_buckets: int = 4, n_examples: int = 3) -> list[Slice]:
    present = [(r, x) for r in rows if (x := _number(r.values.get(feature))) is not None]
    if not present:
        return []
    values = [x for _, x in present]
    integral = all(x == int(x) for x in values)
    distinct = sorted(set(values))
    if len(distinct) <= n_buckets:  # few values (e.g. 2 or 3 turns): one slice per value
        groups = {v: [r for r, x in present if x == v] for v in distinct}
        return [_slice(feature, _fmt(v, integral), "numeric", i, groups[v], n_examples) for i, v in enumerate(distinct)]
    edges = bucket_edges(values, n_buckets)
    buckets: list[list[SliceRow]] = [[] for _ in range(max(len(edges) - 1, 1))]
    for row, x in present:
        buckets[bucket_index(x, edges)].append(row)
    slices = []
    for i, members in enumerate(buckets):
        low, high = edges[i], edges[min(i + 1, len(edges) - 1)]
        closing = "]" if i == len(buckets) - 1 else ")"
        label = f"[{_fmt(low, integral)}, {_fmt(high, integral)}{closing}"
        slices.append(_slice(feature, label, "numeric", i, members, n_examples))
    return slices


def slice_category(rows: Sequence[SliceRow], feature: str, n_examples: int = 3) -> list[Slice]:
    groups: dict[str, list[SliceRow]] = {}
    for row in rows:
        if feature in row.values:
            groups.setdefault(_category(row.values[feature]), []).append(row)
    ordered = sorted(groups, key=lambda value: (-len(groups[value]), value))
    return [_slice(feature, value, "category", i, groups[value], n_examples) for i, value in enumerate(ordered)]


def analyse(
    version: str,
    rows: Sequence[SliceRow],
    slice_fields: Sequence[str] = (),
    *,
    numeric_features: Sequence[str] = NUMERIC_FEATURES,
    n_buckets: int = 4,
    min_n: int = 5,
    n_worst: int = 5,
    n_examples: int = 3,
) -> SliceReport:
    """Slices per feature and the worst slices overall.

    A slice counts as worst only with at least `min_n` rated items, when it is not the whole set, and when its
    mean is below the overall mean. The worst are ranked by the upper end of their mean's 95% interval, so a
    small slice that is bad by chance does not outrank a large one that is surely bad. Each is tested against
    the other items (Welch's t-test, two-sided, p-values adjusted by Benjamini-Hochberg over the slices tested)
    and flagged `may_be_noise` unless that adjusted p is below 0.05. Fields named in `slice_fields` are sliced
    as numbers when all their values are numbers, else as categories.
    """
    levels = [r.level for r in rows if r.level is not None]
    features: dict[str, list[Slice]] = {}
    names = list(dict.fromkeys([*numeric_features, *slice_fields]))
    for name in names:
        present = [r.values.get(name) for r in rows if name in r.values]
        if not present:
            continue
        numeric = all(_number(v) is not None for v in present)
        slices = slice_numeric(rows, name, n_buckets, n_examples) if numeric else slice_category(rows, name, n_examples)
        if slices:
            features[name] = slices
    overall = metrics.mean(levels)
    candidates = [
        s
        for slices in features.values()
        for s in slices
        if s.n_rated >= min_n
        and s.mean_level is not None
        and s.n_rated < len(levels)
        and overall is not None
        and s.mean_level < overall
    ]
    eligible = [s for slices in features.values() for s in slices if s.n_rated >= min_n and s.n_rated < len(levels)]
    _test_against_the_rest(eligible, levels)
    candidates.sort(
        key=lambda s: (
            s.mean_high if s.mean_high is not None else math.inf,
            s.mean_level,
            -s.n_rated,
            s.feature,
            s.order,
        )
    )
    return SliceReport(
        version=version,
        n_items=len(rows),
        n_rated=len(levels),
        overall_mean=overall,
        overall_share_good=(sum(level >= GOOD for level in levels) / len(levels)) if levels else None,
        min_n=min_n,
        features=features,
        worst=candidates[:n_worst],
    )


NOISE_ALPHA = 0.05


def _test_against_the_rest(slices: Sequence[Slice], levels: Sequence[int]) -> None:
    """Welch's test of each slice's mean against the other items' (from the totals, so no item is walked
    twice), with Benjamini-Hochberg adjusted p-values; sets `p_value` and `may_be_noise`.

    Two-sided and over every slice big enough to list, not only the worse-looking ones: which slices look worse
    is chosen after seeing the data, and a one-sided test of the chosen ones would raise twice as many alarms.
    """
    from scipy.stats import false_discovery_control, ttest_ind_from_stats

    total, total_squares, n_all = math.fsum(levels), math.fsum(v * v for v in levels), len(levels)
    tested: list[tuple[Slice, float]] = []
    for s in slices:
        s.may_be_noise = True
        if s.mean_level is None or s.sd_level is None:
            continue
        n_rest = n_all - s.n_rated
        slice_squares = (s.n_rated - 1) * s.sd_level**2 + s.n_rated * s.mean_level**2
        rest_mean = (total - s.mean_level * s.n_rated) / n_rest if n_rest else 0.0
        rest_var = (total_squares - slice_squares - n_rest * rest_mean**2) / (n_rest - 1) if n_rest >= 2 else 0.0
        if n_rest < 2 or (rest_var <= 0 and s.sd_level == 0):
            continue
        result = ttest_ind_from_stats(
            s.mean_level,
            s.sd_level,
            s.n_rated,
            rest_mean,
            math.sqrt(max(rest_var, 0.0)),
            n_rest,
            equal_var=False,
        )
        if math.isfinite(result.pvalue):
            tested.append((s, float(result.pvalue)))
    if not tested:
        return
    adjusted = false_discovery_control([p for _, p in tested], method="bh")
    for (s, _), p in zip(tested, adjusted):
        s.p_value = float(p)
        s.may_be_noise = bool(p >= NOISE_ALPHA)
