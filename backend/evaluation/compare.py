"""Two prompt versions on the same items: the paired difference in judge level with a bootstrap interval,
and the items that moved most."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from prelabel import metrics
from prelabel.evaluation import EvaluationError
from prelabel.evaluation.results import ItemResult
from prelabel.evaluation.runs import load_items, load_run
from prelabel.evaluation.summary import GOOD


class Mover(BaseModel):
    source_id: str
    base_level: int
    candidate_level: int
    delta: int
    input_preview: str
    base_label: str | None
    candidate_label: str | None
    base_reason: str | None
    candidate_reason: str | None


class Comparison(BaseModel):
    """Two versions on the items both rated: the paired difference in level (candidate - base)."""

    base: str
    candidate: str
    n_paired: int
    n_unpaired: int  # items rated by only one of the two (or neither)
    mean_base: float | None
    mean_candidate: float | None
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    share_good_base: float | None
    share_good_candidate: float | None
    improved: int
    worsened: int
    unchanged: int
    verdict: str
    movers: list[Mover]


def compare_items(
    base: str,
    base_items: Sequence[ItemResult],
    candidate: str,
    candidate_items: Sequence[ItemResult],
    *,
    n_movers: int = 10,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    by_id = {item.source_id: item for item in candidate_items}
    if set(by_id) != {item.source_id for item in base_items}:
        raise EvaluationError(f"versions {base!r} and {candidate!r} were not evaluated on the same items")
    # (base item, candidate item, base level, candidate level) for the items both versions rated
    pairs = [
        (b, x, b.level, x.level)
        for b, x in ((b, by_id[b.source_id]) for b in base_items)
        if b.level is not None and x.level is not None
    ]
    a = [float(base_level) for _, _, base_level, _ in pairs]
    c = [float(candidate_level) for _, _, _, candidate_level in pairs]
    ci = metrics.paired_bootstrap_ci(a, c, n_resamples=n_resamples, seed=seed, confidence=confidence)
    if ci is None:
        verdict = "no items rated by both"
    elif ci.low > 0:
        verdict = f"{candidate} is better"
    elif ci.high < 0:
        verdict = f"{candidate} is worse"
    else:
        verdict = "no clear difference"
    movers = [
        Mover(
            source_id=b.source_id,
            base_level=base_level,
            candidate_level=candidate_level,
            delta=candidate_level - base_level,
            input_preview=b.input_preview,
            base_label=b.label,
            candidate_label=x.label,
            base_reason=b.reason,
            candidate_reason=x.reason,
        )
        for b, x, base_level, candidate_level in pairs
        if candidate_level != base_level
    ]
    movers.sort(key=lambda m: (-abs(m.delta), m.delta, m.source_id))
    return Comparison(
        base=base,
        candidate=candidate,
        n_paired=len(pairs),
        n_unpaired=len(base_items) - len(pairs),
        mean_base=metrics.mean(a),
        mean_candidate=metrics.mean(c),
        mean_difference=ci.mean_difference if ci else None,
        ci_low=ci.low if ci else None,
        ci_high=ci.high if ci else None,
        confidence=confidence,
        share_good_base=(sum(v >= GOOD for v in a) / len(a)) if a else None,
        share_good_candidate=(sum(v >= GOOD for v in c) / len(c)) if c else None,
        improved=sum(y > x for x, y in zip(a, c)),
        worsened=sum(y < x for x, y in zip(a, c)),
        unchanged=sum(y == x for x, y in zip(a, c)),
        verdict=verdict,
        movers=movers[:n_movers],
    )


def compare_run(
    run_dir: Path, base: str | None = None, candidate: str | None = None, n_movers: int = 10
) -> list[Comparison]:
    """base vs candidate, or, with neither given, every version against the first evaluated."""
    run = load_run(run_dir)
    names = list(run.versions)
    for name in (base, candidate):
        if name is not None and name not in run.versions:
            raise EvaluationError(f"no version {name!r} in {run_dir}; it holds {', '.join(names) or 'none'}")
    if candidate is not None:
        pairs = [(base or names[0], candidate)]
    elif base is not None:
        pairs = [(base, name) for name in names if name != base]
    else:
        pairs = [(names[0], name) for name in names[1:]]
    return [
        compare_items(b, load_items(run_dir, b), c, load_items(run_dir, c), n_movers=n_movers)
        for b, c in pairs
        if b != c
    ]
