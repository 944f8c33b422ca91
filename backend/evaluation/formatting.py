"""How the evaluation's numbers and texts are written in reports and tables: shares, levels, money, escaped
text, one-line previews."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prelabel.evaluation.compare import Comparison
    from prelabel.evaluation.summary import VersionSummary


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# Markdown's inline markup characters (emphasis, code, links, images, strikethrough, headings, table cells,
# escapes): each is backslash-escaped, so text from data or models shows as typed and cannot start markup.
_MD_MARKUP = re.compile(r"([\\`*_\[\]()#|!~])")
_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")


def md(value: object) -> str:
    """Text from data or models as one line of inert Markdown: markup characters backslash-escaped, HTML's
    < > & as entities (no tag survives), line breaks as spaces (a table row stays one row)."""
    text = "-" if value is None else str(value)
    return html.escape(_MD_MARKUP.sub(r"\\\1", _LINE_BREAKS.sub(" ", text)), quote=False)


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


def rho_text(rho: float | None, low: float | None, high: float | None) -> str:
    """A correlation with its interval: "+0.31 [+0.12, +0.48]", or "-" when undefined."""
    if rho is None or low is None or high is None:
        return "-"
    return f"{rho:+.2f} [{low:+.2f}, {high:+.2f}]"


def length_bias_rows(versions: Iterable[VersionSummary]) -> list[list[object]]:
    """One row per version with a length-bias figure: version, n, plain rho, relative rho, verdict."""
    rows: list[list[object]] = []
    for v in versions:
        bias = v.length_bias
        if bias is None or bias.rho is None:
            continue
        rows.append(
            [
                v.name,
                bias.n,
                rho_text(bias.rho, bias.low, bias.high),
                rho_text(bias.relative_rho, bias.relative_low, bias.relative_high),
                "favours length" if bias.favours_length else "no clear preference",
            ]
        )
    return rows


LENGTH_BIAS_HEADERS = ["version", "n", "ρ level vs length", "ρ level vs length ÷ input", "judge"]


def jury_agreement_rows(versions: Iterable[VersionSummary]) -> list[list[object]]:
    """One row per pair of jurors per version with a jury: version, the two jurors, n, quadratic kappa."""
    return [[v.name, pair.a, pair.b, pair.n, num(pair.kappa)] for v in versions for pair in v.jury_agreement or []]


JURY_AGREEMENT_HEADERS = ["version", "juror", "juror", "n", "κ quadratic"]


def one_line(text: str, limit: int) -> str:
    """The text's non-blank lines joined with " / ", cut to `limit` characters."""
    flat = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
