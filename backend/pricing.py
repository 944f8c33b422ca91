"""The one price table: list prices of common models, overridden or extended by the user's price file.

Prices are USD per million input / output tokens, matched by the longest model-name prefix. The file named
by PRELABEL_PRICES (`Settings.prelabel_prices`), JSON or TOML, holds entries
({"model-prefix": {"input": 0.15, "output": 0.6}}) over the built-in table. Callers pass the path; nothing
here reads the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

PRICES_ENV = "PRELABEL_PRICES"  # the setting's name, as the messages show it


class Price(BaseModel):
    input: float = Field(ge=0, description="USD per 1M input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


# List prices (standard tier, USD per 1M tokens). Longest prefix wins, so "gpt-4o-mini" is not "gpt-4o".
BUILTIN_PRICES: dict[str, Price] = {
    name: Price(input=i, output=o)
    for name, (i, o) in {
        "gpt-5": (1.25, 10.0),
        "gpt-5-mini": (0.25, 2.0),
        "gpt-5-nano": (0.05, 0.40),
        "gpt-4.1": (2.0, 8.0),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4o": (2.50, 10.0),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4-turbo": (10.0, 30.0),
        "gpt-4": (30.0, 60.0),
        "gpt-3.5-turbo": (0.50, 1.50),
        "o1": (15.0, 60.0),
        "o1-mini": (1.10, 4.40),
        "o3": (2.0, 8.0),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
        "claude-opus-4-5": (5.0, 25.0),
        "claude-opus-4": (15.0, 75.0),
        "claude-sonnet-4": (3.0, 15.0),
        "claude-3-7-sonnet": (3.0, 15.0),
        "claude-3-5-sonnet": (3.0, 15.0),
        "claude-haiku-4-5": (1.0, 5.0),
        "claude-3-5-haiku": (0.80, 4.0),
        "claude-3-haiku": (0.25, 1.25),
        "claude-3-opus": (15.0, 75.0),
    }.items()
}


# OpenAI Batch and Anthropic Message Batches bill half the list price (`prelabel label --batch-api`).
BATCH_PRICE_FACTOR = 0.5


def batch_prices(prices: dict[str, Price]) -> dict[str, Price]:
    """The price table as the providers' batch APIs bill it."""
    return {
        name: Price(input=price.input * BATCH_PRICE_FACTOR, output=price.output * BATCH_PRICE_FACTOR)
        for name, price in prices.items()
    }


class PriceFileError(ValueError):
    """PRELABEL_PRICES names a file that cannot be read as a price table."""


def load_prices(path: Path | str | None = None) -> dict[str, Price]:
    """The built-in table, overridden by the price file at `path` (pass `settings.prelabel_prices`)."""
    prices = dict(BUILTIN_PRICES)
    if path is None:
        return prices
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            import tomllib

            raw: Any = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (OSError, ValueError) as error:
        raise PriceFileError(f"{PRICES_ENV} {path}: {error}") from None
    if not isinstance(raw, dict):
        raise PriceFileError(f"{PRICES_ENV} {path}: expected a table of model -> {{input, output}}")
    for name, value in raw.items():
        try:
            prices[str(name).lower()] = Price.model_validate(value)
        except ValidationError as error:
            raise PriceFileError(f"{PRICES_ENV} {path}: {name}: {error.errors()[0]['msg']}") from None
    return prices


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The price of the longest table entry that the model name starts with (case-insensitive)."""
    name = model.lower()
    best = max((key for key in prices if name.startswith(key.lower())), key=len, default=None)
    return prices[best] if best is not None else None
