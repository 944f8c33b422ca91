"""How the evaluation's numbers and texts are written in reports and tables: shares, levels, money, escaped
text, one-line previews."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prelabel.evaluation.compare import Comparison


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def ci_text(c: Comparison) -> str:
    if c.ci_low is None or c.ci_high is None:
        return "-"
    return f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"


def one_line(text: str, limit: int) -> str:
    """The text's non-blank lines joined with " / ", cut to `limit` characters."""
    flat = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
