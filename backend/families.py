"""Which model family a model belongs to, and the rule that the judge is not of the annotator's family.

A judge of the annotator's own family tends to prefer its own phrasing, so prelabel refuses that pair
unless the user explicitly allows it (and then says so everywhere).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[str, ...] = ("openai", "anthropic")

# Ordered: the first pattern found in the lower-cased model name wins. Matching is on the model's
# base name (the part after any "org/" prefix), so "meta-llama/Llama-3.1-8B" is llama.
_FAMILY_PATTERNS: list[tuple[str, str]] = [
    (r"(^|[^a-z])(gpt|o[1-9])([^a-z]|$)|chatgpt|davinci|text-embedding|^openai", "openai-gpt"),
    (r"claude", "anthropic-claude"),
    (r"llama|codellama", "meta-llama"),
    (r"qwen|qwq", "alibaba-qwen"),
    (r"gemma|gemini|palm|bison", "google-gemini"),
    (r"mistral|mixtral|codestral|ministral|pixtral|magistral|devstral", "mistral"),
    (r"deepseek", "deepseek"),
    (r"smollm", "huggingface-smollm"),
    (r"phi-?[0-9]", "microsoft-phi"),
    (r"command|aya|cohere", "cohere-command"),
    (r"grok", "xai-grok"),
    (r"olmo", "allenai-olmo"),
    (r"granite", "ibm-granite"),
    (r"falcon", "tii-falcon"),
    (r"nemotron", "nvidia-nemotron"),
    (r"glm", "zhipu-glm"),
    (r"yi-", "01ai-yi"),
    (r"tinyllama", "meta-llama"),
]

_PROVIDER_DEFAULT_FAMILY = {"openai": "openai-gpt", "anthropic": "anthropic-claude"}


def family_of(model: str, provider: str | None = None, explicit: str | None = None) -> str:
    """The family of `model`: the explicit one if given, else by name, else the provider's."""
    if explicit:
        return explicit.strip().lower()
    base = model.lower().rsplit("/", 1)[-1]
    for pattern, family in _FAMILY_PATTERNS:
        if re.search(pattern, base):
            return family
    if provider in _PROVIDER_DEFAULT_FAMILY:
        return _PROVIDER_DEFAULT_FAMILY[provider]
    return "unknown"


class ModelRef(BaseModel, frozen=True):
    """A model as configured: provider, model name, optional endpoint, and its family."""

    provider: Provider
    model: str
    base_url: str | None = None
    family: str

    @classmethod
    def parse(cls, spec: str, base_url: str | None = None, family: str | None = None) -> ModelRef:
        provider, sep, model = spec.partition(":")
        provider = provider.strip().lower()
        model = model.strip()
        if not sep or not model or provider not in PROVIDERS:
            raise ValueError(
                f"model {spec!r} must be 'provider:model' with provider one of {', '.join(PROVIDERS)} "
                "(use 'openai' for any OpenAI-compatible endpoint, e.g. openai:llama3.1 with a base URL)"
            )
        return cls(
            provider=provider,
            model=model,
            base_url=base_url or None,
            family=family_of(model, provider, family),
        )

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"


# A model entry's own endpoint: "provider:model@http://host/v1". Only an "@" that starts a URL splits, so a model
# name with an "@" of its own stays whole.
_ENTRY_URL = re.compile(r"^(?P<spec>.*?)@(?P<url>[A-Za-z][A-Za-z0-9+.-]*://\S*)$")


def parse_model_list(value: str, setting: str) -> list[tuple[str, str | None]]:
    """The comma-separated entries `provider:model[@base_url]` of a setting, as (spec, base_url) pairs; a
    ValueError naming the setting and the bad entry when one is malformed or repeated."""
    entries = [entry.strip() for entry in value.split(",")]
    parsed: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, start=1):
        if not entry:
            raise ValueError(f"{setting} entry {number} of {value!r} is empty: list models as provider:model,...")
        match = _ENTRY_URL.match(entry)
        spec, url = (match.group("spec"), match.group("url")) if match else (entry, None)
        try:
            ref = ModelRef.parse(spec, base_url=url)
        except ValueError as error:
            raise ValueError(f"{setting} entry {entry!r}: {error}") from None
        if ref.spec in seen:
            raise ValueError(f"{setting} entry {entry!r}: {ref.spec} is listed twice (each juror once)")
        seen.add(ref.spec)
        parsed.append((spec, url))
    return parsed


class SameFamilyError(ValueError):
    """The judge belongs to the annotator's family and the override is off."""


def same_family_warning(annotator: ModelRef, judge: ModelRef) -> str:
    return (
        f"judge {judge.spec} and annotator {annotator.spec} are both of the {annotator.family} family: "
        "the judge may favour its own family's labels"
    )


def check_families(annotator: ModelRef, judge: ModelRef, allow_same_family: bool) -> str | None:
    """Raise SameFamilyError for a same-family pair unless allowed; return the warning when allowed."""
    if annotator.family != judge.family:
        return None
    message = same_family_warning(annotator, judge)
    if not allow_same_family:
        raise SameFamilyError(
            f"refusing to start: {message}. Choose a judge of another family "
            "(PRELABEL_JUDGE), or set PRELABEL_ALLOW_SAME_FAMILY=1 to accept this pair."
        )
    return f"WARNING same-family judge: {message}"


def check_jury(annotator: ModelRef, jurors: list[ModelRef], allow_same_family: bool) -> tuple[str | None, str | None]:
    """Every juror checked against the annotator as a lone judge is (SameFamilyError for the first refused), and
    (the same-family warnings joined, or None; a warning when two jurors share a family, or None). One judge:
    exactly `check_families`."""
    warnings = [w for w in (check_families(annotator, juror, allow_same_family) for juror in jurors) if w]
    family_warning = "; ".join(warnings) or None
    by_family: dict[str, list[str]] = {}
    for juror in jurors:
        by_family.setdefault(juror.family, []).append(juror.spec)
    shared = [f"{', '.join(specs)} ({family})" for family, specs in by_family.items() if len(specs) > 1]
    jury_warning = (
        f"jurors of one family: {'; '.join(shared)}: they tend to agree with each other, so the jury counts "
        "their view more than once"
        if shared
        else None
    )
    return family_warning, jury_warning
