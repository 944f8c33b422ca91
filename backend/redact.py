"""Scrubbing secrets from text a provider sends back.

A provider's error body or answer can hold a key: a gateway that echoes the request's headers, a 401 that
quotes the key, a model that repeats what it was told. `redact` is applied where such text enters prelabel
(every ProviderError and BatchError message, batch result errors, every Completion's text), so nothing
key-shaped reaches the output files, the store, the log or a /predict answer.

Two kinds of secret are replaced with REDACTED: the exact values of the configured keys (even when they do
not look like keys), and strings shaped like keys: `sk-...` / `sk-ant-...`, `Bearer <token>`, and a long
token right after a name ending in key, token, secret or password (`"api_key": "..."`, `x-api-key: ...`).
Ordinary prose, ids and hashes without such a name are left alone.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

REDACTED = "[redacted]"

# The configured keys: their values are scrubbed wherever they appear, key-shaped or not.
SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LABEL_STUDIO_API_KEY")
# Shorter values are not scrubbed: a key of a few characters (a local server's "none") is also ordinary text.
MIN_SECRET_CHARS = 8

_TOKEN = r"[A-Za-z0-9._~+/=-]"
_WITH_DIGIT = r"(?=[A-Za-z0-9._~+/=-]*[0-9])"  # a real key mixes digits in; a long word is not a key
_KEY_SHAPED = re.compile(
    "|".join(
        (
            # OpenAI (sk-..., sk-proj-...) and Anthropic (sk-ant-...) keys.
            rf"(?<![\w-])(?P<sk>sk-{_WITH_DIGIT}[A-Za-z0-9_-]{{8,}})",
            # An Authorization header's credentials: Bearer (OpenAI), Token (Label Studio), Basic.
            rf"(?P<bearer_label>\bbearer\s+)(?P<bearer>{_TOKEN}{{8,}})",
            rf"(?P<auth_label>\b(?:token|basic)\s+){_WITH_DIGIT}(?P<auth>{_TOKEN}{{16,}})",
            # A long token after a name ending in key/token/secret/password: api_key=..., "x-api-key": "...".
            rf"(?P<name>\b(?:[\w-]*[_-]|api)?(?:key|token|secret|password)[\"']?\s*[:=]\s*[\"']?){_WITH_DIGIT}"
            rf"(?P<value>{_TOKEN}{{16,}})",
        )
    ),
    re.IGNORECASE,
)


def _scrub(match: re.Match[str]) -> str:
    label = match.group("bearer_label") or match.group("auth_label") or match.group("name") or ""
    return label + REDACTED


_remembered: set[str] = set()
_lock = threading.Lock()


def remember_secrets(values: Iterable[str | None]) -> None:
    """Scrub these exact values too (the configured keys, however they were read: environment or .env)."""
    with _lock:
        _remembered.update(v for v in values if v and len(v) >= MIN_SECRET_CHARS)


def _secrets() -> list[str]:
    from_env = (os.environ.get(name) or "" for name in SECRET_ENV)
    with _lock:
        values = _remembered | {v for v in from_env if len(v) >= MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)  # a longer secret first, should one hold another


def redact(text: str) -> str:
    """`text` with every configured key and every key-shaped string replaced by REDACTED."""
    if not text:
        return text
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPED.sub(_scrub, text)
