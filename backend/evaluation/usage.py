"""Tokens and cost of the LLM calls a version's run logged: the calls between two positions of the store's
call log, per role and model, priced from the one price table (with the user's PRELABEL_PRICES file)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import BaseModel

from prelabel.pricing import Price, price_for

if TYPE_CHECKING:
    from prelabel.store import Store


class TokenUsage(BaseModel):
    """LLM calls of one role during one version's run. `*_tokens` were spent now; answers from the cache
    cost nothing now but are counted in `full_*` (what a fresh run would spend)."""

    role: str
    provider: str
    model: str
    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    full_input_tokens: int = 0
    full_output_tokens: int = 0
    cost_usd: float | None = None
    full_cost_usd: float | None = None


def _cost(model: str, input_tokens: int, output_tokens: int, prices: dict[str, Price]) -> float | None:
    price = price_for(model, prices)
    return None if price is None else price.cost(input_tokens, output_tokens)


def usage_between(
    store: Store, after_id: int, upto_id: int | None = None, *, prices: dict[str, Price]
) -> list[TokenUsage]:
    """Token usage of the calls logged in (after_id, upto_id] (ids from `store.last_call_id()`), per role and
    model, priced from `prices` (None where a model has no price).

    A cached call logs zero tokens; its original usage is read from the cache entry it was answered from.
    """
    groups: dict[tuple[str, str, str], TokenUsage] = {}
    for row in store.usage_between(after_id, upto_id):
        key = (row["role"], row["provider"], row["model"])
        usage = groups.setdefault(key, TokenUsage(role=key[0], provider=key[1], model=key[2]))
        usage.calls += 1
        usage.errors += row["error"] is not None
        usage.input_tokens += row["input_tokens"]
        usage.output_tokens += row["output_tokens"]
        if row["cached"]:
            usage.cache_hits += 1
            original = json.loads(row["cached_completion"] or "{}").get("usage") or {}
            usage.full_input_tokens += int(original.get("input_tokens") or 0)
            usage.full_output_tokens += int(original.get("output_tokens") or 0)
        else:
            usage.full_input_tokens += row["input_tokens"]
            usage.full_output_tokens += row["output_tokens"]
    for usage in groups.values():
        usage.cost_usd = _cost(usage.model, usage.input_tokens, usage.output_tokens, prices)
        usage.full_cost_usd = _cost(usage.model, usage.full_input_tokens, usage.full_output_tokens, prices)
    return sorted(groups.values(), key=lambda u: (u.role != "annotator", u.role, u.model))
