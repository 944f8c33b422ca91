"""How many calls one process keeps in flight: the ceiling, and the clamp the rate limits impose.

Calls in flight are coroutines on one event loop (prelabel.event_loop), so a high concurrency costs memory
(about 10 KB a call) and no threads. What bounds a useful concurrency is the provider: by Little's law, calls in
flight = calls per second x seconds per call. A role limited to R requests a minute can start R / 60 calls a
second; more than R calls in flight would each wait for the limit before sending, however long a call takes,
so a concurrency above the smallest request limit of the roles an item calls is clamped to it, with a note.
This module imports nothing heavy: the CLI's option declares the ceiling.
"""

from __future__ import annotations

# The most calls in flight one process may be asked for (PRELABEL_CONCURRENCY, `label --concurrency`).
MAX_CONCURRENCY = 10_000


def clamp_to_rate_limits(requested: int, requests_per_minute: dict[str, float | None]) -> tuple[int, str | None]:
    """The concurrency to use for `requested`, and a note when the roles' request limits lowered it.

    `requests_per_minute` maps each role an item calls to its limit (None or 0: none). An item waits for one
    call at a time, so no more than the smallest limit's worth of items can usefully be in flight.
    """
    limits = {role: rpm for role, rpm in requests_per_minute.items() if rpm}
    if not limits:
        return requested, None
    role, rpm = min(limits.items(), key=lambda pair: pair[1])
    allowed = max(1, int(rpm))
    if requested <= allowed:
        return requested, None
    note = (
        f"concurrency {requested:,} lowered to {allowed:,}: the {role} may start {rpm:,.0f} requests a minute "
        f"(PRELABEL_{role.upper()}_RPM), so more calls in flight would only wait for the limit"
    )
    return allowed, note
