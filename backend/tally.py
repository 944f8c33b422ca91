"""How a batch of labels came out, as every command that stores predictions reports it: rated, unrated with the
most common reasons, failed with the most common errors. One owner, so `label`, `push`, `evaluate --push-project`
and the demo count and word it the same."""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel

# Parts of a reason that differ on every call (request ids, long hex, numbers) and would split one cause into many.
_VOLATILE = re.compile(r"\b(req_[A-Za-z0-9]+|[0-9a-f]{12,}|\d+(\.\d+)?)\b")
REASON_CHARS = 160


def reason_key(text: str) -> str:
    """A reason with its volatile parts masked and cut to one line, so the same cause is counted once."""
    flat = " ".join(text.split())
    masked = _VOLATILE.sub("#", flat)
    return masked if len(masked) <= REASON_CHARS else masked[: REASON_CHARS - 1] + "…"


class Tally(BaseModel):
    """Counts of one batch of outcomes; `unrated_reasons` and `failure_reasons` count by `reason_key`."""

    rated: int = 0
    unrated: int = 0
    unjudged: int = 0  # labeled where no judge is asked (a classification config without a rating control)
    failed: int = 0
    unrated_reasons: Counter[str] = Counter()
    failure_reasons: Counter[str] = Counter()

    def add(self, *, error: str | None, unrated_reason: str | None, rated: bool) -> None:
        if error is not None:
            self.failed += 1
            self.failure_reasons[reason_key(error)] += 1
        elif rated:
            self.rated += 1
        elif unrated_reason is not None:
            self.unrated += 1
            self.unrated_reasons[reason_key(unrated_reason)] += 1
        else:
            self.unjudged += 1

    def merge(self, other: Tally) -> None:
        self.rated += other.rated
        self.unrated += other.unrated
        self.unjudged += other.unjudged
        self.failed += other.failed
        self.unrated_reasons.update(other.unrated_reasons)
        self.failure_reasons.update(other.failure_reasons)

    @property
    def total(self) -> int:
        return self.rated + self.unrated + self.unjudged + self.failed

    def headline(self) -> str:
        """ "12 rated, 3 unrated, 1 failed" (the counts always, so a zero is said, not left out)."""
        unjudged = f", {self.unjudged:,} labeled with no judge" if self.unjudged else ""
        return f"{self.rated:,} rated, {self.unrated:,} unrated{unjudged}, {self.failed:,} failed"

    def top_unrated(self, n: int = 3) -> list[tuple[str, int]]:
        return self.unrated_reasons.most_common(n)

    def top_failures(self, n: int = 3) -> list[tuple[str, int]]:
        return self.failure_reasons.most_common(n)
