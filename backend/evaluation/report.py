"""Evaluation reports: a self-contained HTML page (inline SVG charts, no script, nothing fetched) and a
Markdown summary. The terminal tables are the CLI's (prelabel.scripts.tables).

Every text that comes from data, prompts or models is escaped: dialogues and labels may contain markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from prelabel.evaluation import rules
from prelabel.evaluation.calibration import Calibration
from prelabel.evaluation.charts import distribution_chart, heatmap, slice_chart
from prelabel.evaluation.compare import Comparison
from prelabel.evaluation.formatting import (
    JURY_AGREEMENT_HEADERS,
    LENGTH_BIAS_HEADERS,
    ci_text,
    esc,
    jury_agreement_rows,
    length_bias_rows,
    md,
    money,
    num,
    one_line,
    share,
    signed,
)
from prelabel.evaluation.runs import RunSummary
from prelabel.evaluation.summary import VersionSummary
from prelabel.judge import LEVELS
from prelabel.subsets import Slice, SliceReport

REPORT_HTML = "report.html"
REPORT_MD = "report.md"


class ReportData(BaseModel):
    run: RunSummary
    comparisons: list[Comparison] = []
    slices: dict[str, SliceReport] = {}
    calibration: Calibration | None = None


# -- HTML ------------------------------------------------------------------------------------------

# The stylesheet of every HTML report (evaluation and quality).
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;
vertical-align:top}
/* Headers wrap between words only; numbers never wrap; text breaks a word only when it alone is too wide. */
th{background:#f5f5f5;white-space:normal;word-break:normal;overflow-wrap:normal;min-width:3.5em}
td{white-space:nowrap}
td.text,th.text{text-align:left;max-width:420px;white-space:pre-wrap;word-break:normal;overflow-wrap:break-word}
.scroll{overflow-x:auto;max-width:100%}
p.rule{color:#555;font-size:.85em;margin:2px 0 12px}
.warning{background:#fff3cd;border:1px solid #e0a800;padding:8px 12px;margin:8px 0;border-radius:4px}
.ok{background:#e8f5e9;border:1px solid #7cb342;padding:8px 12px;margin:8px 0;border-radius:4px}
.muted{color:#666;font-size:.9em}svg.chart{display:block;margin:8px 0}
details{margin:6px 0}summary{cursor:pointer}
"""


def page_start(title: str) -> str:
    """The opening of a self-contained report page, up to its <h1>: nothing may be fetched or run (the report is
    one file that opens offline), the stylesheet inline."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"
    )


def html_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], text_cols: Sequence[int] = (0,), css_class: str = ""
) -> str:
    """A table of escaped cells, the columns in `text_cols` left-aligned and wrapping, the others numbers."""
    head = "".join(f'<th class="{"text" if i in text_cols else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"text" if i in text_cols else ""}">{esc(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    # In a scrolling box: a table wider than the page scrolls on its own instead of running off the page.
    table = f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def rule(text: str) -> str:
    """A short note under a figure saying how it was computed."""
    return f'<p class="rule">{esc(text)}</p>'


def _version_rows(run: RunSummary) -> list[list[object]]:
    rows = []
    for rank, v in enumerate(run.ranking(), start=1):
        reasons = "; ".join(f"{k} ({n})" for k, n in v.unrated_reasons.items()) or "-"
        rows.append(
            [
                v.name,
                rank,
                v.n_items,
                v.n_rated,
                num(v.mean_level),
                share(v.share_good),
                v.n_unrated,
                reasons,
                f"{v.tokens_full:,}",
                f"{v.tokens_spent:,}",
                money(v.full_cost_usd),
            ]
        )
    return rows


VERSION_HEADERS = [
    "version",
    "rank",
    "items",
    "rated",
    "mean level",
    "≥ good",
    "unrated",
    "unrated reasons",
    "tokens",
    "tokens spent now",
    "cost (fresh run)",
]


def render_html(data: ReportData, title: str = "prelabel evaluation") -> str:
    run = data.run
    ranking = run.ranking()
    parts = [
        page_start(title),
        f'<p class="muted">{esc(run.kind)} · evaluation set {esc(run.eval_set)} ({run.n_items} items, sha256 '
        f"{esc(run.eval_set_sha256[:12])}) · every version measured on these same items</p>",
    ]
    if run.family_warning:
        parts.append(f'<p class="warning" id="family-warning"><b>Same-family judge:</b> {esc(run.family_warning)}</p>')
    if ranking and ranking[0].mean_level is not None:
        parts.append(
            f'<p class="ok" id="best">Best version: <b>{esc(ranking[0].name)}</b> (mean level '
            f"{ranking[0].mean_level:.2f}, {share(ranking[0].share_good)} at good or better)</p>"
        )

    parts.append("<h2>Prompt versions</h2>")
    parts.append(html_table(VERSION_HEADERS, _version_rows(run), text_cols=(0, 7), css_class="versions"))
    parts.append(rule(rules.RANKING))
    parts.append(
        '<p class="muted">Tokens include answers served from the cache; cost uses list prices ("-": price unknown).</p>'
    )
    versions = list(run.versions.values())
    if versions:
        parts.append("<h3>Rating distribution</h3>")
        parts.append(distribution_chart(versions))

    bias_rows = length_bias_rows(versions)
    if bias_rows:
        parts.append("<h3>The judge and label length</h3>")
        parts.append(html_table(LENGTH_BIAS_HEADERS, bias_rows, css_class="length-bias"))
        parts.append(rule(rules.LENGTH_BIAS))

    jury_rows = jury_agreement_rows(versions)
    if jury_rows:
        parts.append("<h3>The jurors' agreement</h3>")
        parts.append(html_table(JURY_AGREEMENT_HEADERS, jury_rows, css_class="jury-agreement"))
        parts.append(rule(rules.JURY_AGREEMENT))

    text_rows = _text_metric_rows(versions)
    if text_rows:
        parts.append(f"<h3>String-matching baselines against “{esc(run.reference_field)}”</h3>")
        parts.append(html_table(["version", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"], text_rows))
        parts.extend(rule(line) for line in rules.text_metrics())

    for v in versions:
        if v.classification is None:
            continue
        truth = v.classification
        parts.append(f"<h3>Ground truth ({esc(run.reference_field)}): {esc(v.name)}</h3>")
        parts.append(f"<p>accuracy <b>{share(truth.accuracy)}</b> · macro F1 {num(truth.macro_f1)} (n={truth.n})</p>")
        parts.append(
            html_table(
                ["class", "precision", "recall", "F1", "support"],
                [[k, num(s.precision), num(s.recall), num(s.f1), s.support] for k, s in truth.per_class.items()],
            )
        )
        parts.append(
            heatmap(truth.confusion, truth.labels, truth.labels, "true", "predicted", f"confusion matrix {v.name}")
        )
        parts.append(html_table(["true \\ predicted", *truth.labels], _confusion_rows(truth.labels, truth.confusion)))
    if any(v.classification for v in versions):
        parts.append(rule(rules.CLASSIFICATION))

    if data.comparisons:
        parts.append("<h2>Comparisons on the same items</h2>")
        parts.append(
            html_table(
                COMPARISON_HEADERS,
                [_comparison_row(c) for c in data.comparisons],
                text_cols=(0, len(COMPARISON_HEADERS) - 1),
                css_class="comparisons",
            )
        )
        parts.append(rule(rules.COMPARISON))
        for c in data.comparisons:
            if not c.movers:
                continue
            parts.append(f"<details><summary>Items that moved most: {esc(c.candidate)} vs {esc(c.base)}</summary>")
            parts.append(
                html_table(
                    ["source", "base", "candidate", "change", "input", "base label", "candidate label"],
                    [
                        [
                            m.source_id,
                            LEVELS[m.base_level],
                            LEVELS[m.candidate_level],
                            f"{m.delta:+d}",
                            one_line(m.input_preview, 200),
                            m.base_label,
                            m.candidate_label,
                        ]
                        for m in c.movers
                    ],
                    text_cols=(0, 1, 2, 4, 5, 6),
                )
            )
            parts.append("</details>")

    if data.slices:
        parts.append("<h2>Where labels are weak: subset analysis</h2>")
        for name, report in data.slices.items():
            parts.append(f"<h3>{esc(name)}</h3>")
            parts.append(slice_chart(report))
            if report.worst:
                parts.append(
                    html_table(
                        ["slice", "n", "mean level", "95% interval", "≥ good", "weakest examples"],
                        [
                            [
                                _slice_title(s),
                                s.n_rated,
                                num(s.mean_level),
                                _interval(s),
                                share(s.share_good),
                                "\n".join(
                                    f"[{e.rating or 'unrated'}] {e.source_id}: {one_line(e.input_preview, 140)}"
                                    for e in s.examples
                                ),
                            ]
                            for s in report.worst
                        ],
                        text_cols=(0, 5),
                        css_class="worst-slices",
                    )
                )
            else:
                parts.append(f'<p class="muted">No slice with at least {report.min_n} rated items stands out.</p>')
        parts.append(rule(rules.slices(next(iter(data.slices.values())).min_n)))

    cal = data.calibration
    if cal is not None:
        parts.append("<h2>Judge calibration against reviewers</h2>")
        if cal.warning:
            parts.append(f'<p class="warning" id="calibration-warning">{esc(cal.warning)}</p>')
        else:
            parts.append(
                f'<p class="ok">The judge agrees with reviewers (weighted kappa {num(cal.kappa)} ≥ '
                f"{cal.threshold:.2f}) on {cal.n_pairs} reviewed items.</p>"
            )
        parts.append(
            html_table(
                ["pairs", "weighted κ", "exact", "within one", "Spearman ρ", "mean judge", "mean reviewer"],
                [
                    [
                        cal.n_pairs,
                        num(cal.kappa),
                        share(cal.exact),
                        share(cal.within_one),
                        num(cal.spearman),
                        num(cal.mean_judge),
                        num(cal.mean_reviewer),
                    ]
                ],
                text_cols=(),
            )
        )
        parts.append(
            heatmap(cal.confusion, list(LEVELS), list(LEVELS), "reviewer", "judge", "judge vs reviewer levels")
        )
        parts.append(
            html_table(
                ["level", "reviewer n", "judge n", "precision", "recall", "F1"],
                [[a.name, a.n_reviewer, a.n_judge, num(a.precision), num(a.recall), num(a.f1)] for a in cal.per_level],
            )
        )
        parts.append(rule(rules.CALIBRATION))
    parts.append("</body></html>")
    return "\n".join(parts)


# -- Markdown --------------------------------------------------------------------------------------


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table; every cell goes through `md`, so a label, reason or slice value stays one inert cell."""
    lines = ["| " + " | ".join(md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(data: ReportData, title: str = "prelabel evaluation") -> str:
    run = data.run
    lines = [
        f"# {md(title)}",
        "",
        f"{md(run.kind)}; evaluation set {md(run.eval_set)} ({run.n_items} items, sha256 {run.eval_set_sha256[:12]}), "
        "the same items for every version.",
        "",
    ]
    if run.family_warning:
        lines += [f"> **Warning, same-family judge:** {md(run.family_warning)}", ""]
    ranking = run.ranking()
    if ranking and ranking[0].mean_level is not None:
        lines += [f"**Best version: {md(ranking[0].name)}** (mean level {ranking[0].mean_level:.2f}).", ""]
    lines += ["## Prompt versions", ""]
    lines += _md_table(VERSION_HEADERS, _version_rows(run))
    lines += [md(rules.RANKING), ""]
    lines += ["Distribution (very bad / bad / moderate / good / excellent):", ""]
    lines += [f"- {md(v.name)}: " + " / ".join(map(str, v.distribution)) for v in run.versions.values()] + [""]
    bias_rows = length_bias_rows(run.versions.values())
    if bias_rows:
        lines += ["The judge and label length:", ""]
        lines += _md_table(LENGTH_BIAS_HEADERS, bias_rows)
        lines += [md(rules.LENGTH_BIAS), ""]
    jury_rows = jury_agreement_rows(run.versions.values())
    if jury_rows:
        lines += ["The jurors' agreement:", ""]
        lines += _md_table(JURY_AGREEMENT_HEADERS, jury_rows)
        lines += [md(rules.JURY_AGREEMENT), ""]
    text_rows = _text_metric_rows(run.versions.values())
    if text_rows:
        lines += [f"String-matching baselines against {md(run.reference_field)} (not the verdict):", ""]
        lines += _md_table(["version", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"], text_rows)
        lines += [line for rule in rules.text_metrics() for line in (md(rule), "")]
    for v in run.versions.values():
        if v.classification:
            c = v.classification
            lines += [f"Ground truth for {md(v.name)}: accuracy {share(c.accuracy)}, macro F1 {num(c.macro_f1)}", ""]
            lines += _md_table(
                ["class", "precision", "recall", "F1", "support"],
                [[k, num(s.precision), num(s.recall), num(s.f1), s.support] for k, s in c.per_class.items()],
            )
            lines += [f"Confusion matrix for {md(v.name)} (rows true, columns predicted):", ""]
            lines += _md_table(["true \\ predicted", *c.labels], _confusion_rows(c.labels, c.confusion))
    if any(v.classification for v in run.versions.values()):
        lines += [md(rules.CLASSIFICATION), ""]
    if data.comparisons:
        lines += ["## Comparisons", ""]
        lines += _md_table(COMPARISON_HEADERS, [_comparison_row(c) for c in data.comparisons])
        lines += [md(rules.COMPARISON), ""]
    if data.slices:
        lines += ["## Worst slices", ""]
        for name, report in data.slices.items():
            lines += [f"### {md(name)}", ""]
            lines += _md_table(
                ["slice", "n", "mean level", "95% interval", "≥ good", "example"],
                [
                    [
                        _slice_title(s),
                        s.n_rated,
                        num(s.mean_level),
                        _interval(s),
                        share(s.share_good),
                        s.examples[0].source_id if s.examples else "-",
                    ]
                    for s in report.worst
                ],
            )
        lines += [md(rules.slices(next(iter(data.slices.values())).min_n)), ""]
    if data.calibration is not None:
        cal = data.calibration
        lines += ["## Judge calibration", ""]
        if cal.warning:
            lines += [f"> **Warning:** {md(cal.warning)}", ""]
        lines += [
            f"{cal.n_pairs} pairs; weighted kappa {num(cal.kappa)}, exact {share(cal.exact)}, "
            f"within one {share(cal.within_one)}.",
            "",
        ]
        lines += _md_table(["reviewer \\ judge", *LEVELS], _confusion_rows(list(LEVELS), cal.confusion))
        lines += [md(rules.CALIBRATION), ""]
    return "\n".join(lines)


def write_reports(out_dir: Path, data: ReportData, title: str = "prelabel evaluation") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / REPORT_HTML, out_dir / REPORT_MD
    html_path.write_text(render_html(data, title), encoding="utf-8")
    md_path.write_text(render_markdown(data, title), encoding="utf-8")
    return html_path, md_path


def _text_metric_rows(versions: Iterable[VersionSummary]) -> list[list[Any]]:
    """One row per version with reference metrics: name, n, ROUGE-1/2/L, BLEU (both reports show the same)."""
    return [
        [
            v.name,
            v.text_metrics.n,
            num(v.text_metrics.rouge1),
            num(v.text_metrics.rouge2),
            num(v.text_metrics.rougeL),
            num(v.text_metrics.bleu),
        ]
        for v in versions
        if v.text_metrics
    ]


COMPARISON_HEADERS = [
    "comparison",
    "paired items",
    "mean level base → candidate",
    "difference [95% interval]",
    "≥ good base → candidate",
    "up / down / same",
    "verdict",
]


def _comparison_row(c: Comparison) -> list[object]:
    """One comparison as both reports show it: short cells, the interval beside the difference it bounds."""
    return [
        f"{c.candidate} vs {c.base}",
        c.n_paired,
        f"{num(c.mean_base)} → {num(c.mean_candidate)}",
        f"{signed(c.mean_difference)} {ci_text(c)}",
        f"{share(c.share_good_base)} → {share(c.share_good_candidate)}",
        f"{c.improved} / {c.worsened} / {c.unchanged}",
        c.verdict,
    ]


def _confusion_rows(labels: Sequence[str], confusion: Sequence[Sequence[int]]) -> list[list[object]]:
    return [[label, *row] for label, row in zip(labels, confusion)]


def _slice_title(s: Slice) -> str:
    return s.title + (" (may be noise)" if s.may_be_noise else "")


def _interval(s: Slice) -> str:
    return "-" if s.mean_low is None or s.mean_high is None else f"{num(s.mean_low)} – {num(s.mean_high)}"
