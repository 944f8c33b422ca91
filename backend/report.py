"""Evaluation reports: a self-contained HTML page (inline SVG charts, no script, nothing fetched), a Markdown
summary, and the rich tables the commands print.

Every text that comes from data, prompts or models is escaped: dialogues and labels may contain markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel
from rich import box
from rich.table import Table

from prelabel.evaluate import Calibration, Comparison, RunSummary, VersionSummary
from prelabel.judge import LEVELS
from prelabel.subsets import SliceReport

LEVEL_COLOURS = ("#c0392b", "#e67e22", "#f1c40f", "#7cb342", "#2e7d32")
VERSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
REPORT_HTML = "report.html"
REPORT_MD = "report.md"


class ReportData(BaseModel):
    run: RunSummary
    comparisons: list[Comparison] = []
    slices: dict[str, SliceReport] = {}
    calibration: Calibration | None = None


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


# -- SVG charts ------------------------------------------------------------------------------------


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{esc(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">' + "".join(body) + "</svg>"
    )


def _text(
    x: float, y: float, text: object, anchor: str = "start", size: int = 12, weight: str = "normal", fill: str = "#222"
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" font-weight="{weight}" '
        f'fill="{fill}">{esc(text)}</text>'
    )


def distribution_chart(versions: Sequence[VersionSummary]) -> str:
    """Grouped bars: for each level, the share of each version's rated items at that level."""
    width, height, left, bottom, top = 760, 300, 50, 50, 20
    plot_w, plot_h = width - left - 20, height - top - bottom
    shares = [[count / v.n_rated if v.n_rated else 0.0 for count in v.distribution] for v in versions]
    peak = max([s for row in shares for s in row] + [0.01])
    ceiling = min(1.0, math.ceil(peak * 10) / 10)
    group_w = plot_w / len(LEVELS)
    bar_w = max(4.0, (group_w - 16) / max(len(versions), 1))
    body = []
    for tick in range(0, 6):
        value = ceiling * tick / 5
        y = top + plot_h - plot_h * value / ceiling
        body.append(f'<line x1="{left}" x2="{width - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        body.append(_text(left - 6, y + 4, f"{value:.0%}", "end", 11, fill="#555"))
    for i, name in enumerate(LEVELS):
        x0 = left + i * group_w + 8
        for j, version in enumerate(versions):
            value = shares[j][i]
            h = plot_h * value / ceiling
            x = x0 + j * bar_w
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{max(h, 0.5):.1f}" fill="{VERSION_COLOURS[j % len(VERSION_COLOURS)]}">'
                f"<title>{esc(version.name)}: {esc(name)} {version.distribution[i]} ({value:.0%})</title></rect>"
            )
        body.append(_text(left + i * group_w + group_w / 2, top + plot_h + 18, name, "middle"))
    for j, version in enumerate(versions):  # legend
        x = left + j * 150
        body.append(
            f'<rect x="{x}" y="{height - 18}" width="12" height="12" '
            f'fill="{VERSION_COLOURS[j % len(VERSION_COLOURS)]}"/>'
        )
        body.append(_text(x + 16, height - 8, version.name[:20], size=11))
    return _svg(width, height, body, "rating distribution per prompt version")


def slice_chart(report: SliceReport, max_rows: int = 14) -> str:
    """Horizontal bars of mean level per slice (the worst first), with the overall mean as a line."""
    slices = [s for s in report.worst]
    seen = {(s.feature, s.value) for s in slices}
    rest = sorted(
        (
            s
            for ss in report.features.values()
            for s in ss
            if s.mean_level is not None and s.n_rated >= report.min_n and (s.feature, s.value) not in seen
        ),
        key=lambda s: (s.mean_level, s.feature, s.order),
    )
    slices = (slices + rest)[:max_rows]
    label_w, width, row_h, top = 260, 760, 24, 24
    plot_w = width - label_w - 70
    height = top + row_h * max(len(slices), 1) + 30
    body = []
    for tick in range(len(LEVELS)):
        x = label_w + plot_w * tick / (len(LEVELS) - 1)
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 24}" stroke="#eee"/>')
        body.append(_text(x, height - 8, LEVELS[tick], "middle", 10, fill="#555"))
    worst_keys = {(s.feature, s.value) for s in report.worst}
    for i, s in enumerate(slices):
        y = top + i * row_h
        value = s.mean_level or 0.0
        w = plot_w * value / (len(LEVELS) - 1)
        colour = "#c0392b" if (s.feature, s.value) in worst_keys else "#5b8def"
        title = s.title if len(s.title) <= 38 else s.title[:37] + "…"
        body.append(_text(label_w - 8, y + 15, title, "end", 11))
        body.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 1.0):.1f}" height="{row_h - 8}" fill="{colour}">'
            f"<title>{esc(s.title)}: mean level {value:.2f}, n={s.n_rated}</title></rect>"
        )
        body.append(_text(label_w + w + 6, y + 15, f"{value:.2f} (n={s.n_rated})", size=11, fill="#333"))
    if report.overall_mean is not None:
        x = label_w + plot_w * report.overall_mean / (len(LEVELS) - 1)
        body.append(
            f'<line class="overall" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 8}" y2="{height - 24}" '
            'stroke="#222" stroke-dasharray="4 3"/>'
        )
        body.append(_text(x, top - 10, f"all {report.overall_mean:.2f}", "middle", 10))
    return _svg(width, height, body, f"mean judge level per slice, {report.version}")


def heatmap(
    matrix: Sequence[Sequence[int]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_title: str,
    col_title: str,
    label: str,
) -> str:
    """Counts as a heatmap (rows x columns), darker for more, with the diagonal outlined."""
    cell, left, top = 64, 120, 60
    width = left + cell * len(col_labels) + 20
    height = top + cell * len(row_labels) + 20
    peak = max([v for row in matrix for v in row] + [1])
    body = [_text(left + cell * len(col_labels) / 2, 16, col_title, "middle", 12, "bold")]
    body.append(
        f'<text x="14" y="{top + cell * len(row_labels) / 2:.1f}" font-size="12" font-weight="bold" '
        f'text-anchor="middle" transform="rotate(-90 14 {top + cell * len(row_labels) / 2:.1f})">'
        f"{esc(row_title)}</text>"
    )
    for j, name in enumerate(col_labels):
        body.append(_text(left + j * cell + cell / 2, top - 8, name, "middle", 11))
    for i, name in enumerate(row_labels):
        body.append(_text(left - 6, top + i * cell + cell / 2 + 4, name, "end", 11))
        for j in range(len(col_labels)):
            value = matrix[i][j]
            alpha = 0.08 + 0.87 * value / peak if value else 0.03
            x, y = left + j * cell, top + i * cell
            stroke = ' stroke="#222" stroke-width="2"' if i == j else ' stroke="#fff"'
            body.append(
                f'<rect class="cell" x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="rgba(31,119,180,{alpha:.3f})"{stroke}><title>{esc(row_labels[i])} / '
                f"{esc(col_labels[j])}: {value}</title></rect>"
            )
            body.append(
                _text(x + cell / 2, y + cell / 2 + 4, value, "middle", 13, fill="#fff" if alpha > 0.55 else "#222")
            )
    return _svg(width, height, body, label)


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;
vertical-align:top}th{background:#f5f5f5;white-space:nowrap}td.text,th.text{text-align:left;max-width:420px;white-space:pre-wrap;
word-break:break-word}
.warning{background:#fff3cd;border:1px solid #e0a800;padding:8px 12px;margin:8px 0;border-radius:4px}
.ok{background:#e8f5e9;border:1px solid #7cb342;padding:8px 12px;margin:8px 0;border-radius:4px}
.muted{color:#666;font-size:.9em}svg.chart{display:block;margin:8px 0}
details{margin:6px 0}summary{cursor:pointer}
"""


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], text_cols: Sequence[int] = (0,), css_class: str = ""
) -> str:
    head = "".join(f'<th class="{"text" if i in text_cols else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"text" if i in text_cols else ""}">{esc(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


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
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        # Nothing may be fetched or run: the report is one file that opens offline.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
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
    parts.append(_table(VERSION_HEADERS, _version_rows(run), text_cols=(0, 7), css_class="versions"))
    parts.append(
        '<p class="muted">Mean level: the judge\'s rating, very bad = 0 … excellent = 4, over rated items. '
        'Tokens include answers served from the cache; cost uses list prices ("-": price unknown).</p>'
    )
    versions = list(run.versions.values())
    if versions:
        parts.append("<h3>Rating distribution</h3>")
        parts.append(distribution_chart(versions))

    text_rows = [
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
    if text_rows:
        parts.append(f"<h3>String-matching baselines against “{esc(run.reference_field)}”</h3>")
        parts.append(
            '<p class="muted">ROUGE F1 and corpus BLEU-4 are baselines, not the verdict: a correct summary '
            "in other words scores low.</p>"
        )
        parts.append(_table(["version", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"], text_rows))

    for v in versions:
        if v.classification is None:
            continue
        c = v.classification
        parts.append(f"<h3>Ground truth ({esc(run.reference_field)}): {esc(v.name)}</h3>")
        parts.append(f"<p>accuracy <b>{share(c.accuracy)}</b> · macro F1 {num(c.macro_f1)} (n={c.n})</p>")
        parts.append(
            _table(
                ["class", "precision", "recall", "F1", "support"],
                [[k, num(s.precision), num(s.recall), num(s.f1), s.support] for k, s in c.per_class.items()],
            )
        )
        parts.append(heatmap(c.confusion, c.labels, c.labels, "true", "predicted", f"confusion matrix {v.name}"))

    if data.comparisons:
        parts.append("<h2>Comparisons on the same items</h2>")
        rows = [
            [
                c.candidate + " vs " + c.base,
                c.n_paired,
                num(c.mean_base),
                num(c.mean_candidate),
                signed(c.mean_difference),
                ci_text(c),
                share(c.share_good_base),
                share(c.share_good_candidate),
                f"{c.improved}/{c.worsened}/{c.unchanged}",
                c.verdict,
            ]
            for c in data.comparisons
        ]
        parts.append(
            _table(
                [
                    "comparison",
                    "paired",
                    "mean base",
                    "mean candidate",
                    "difference",
                    "95% CI (bootstrap)",
                    "≥ good base",
                    "≥ good candidate",
                    "up/down/same",
                    "verdict",
                ],
                rows,
                text_cols=(0, 9),
                css_class="comparisons",
            )
        )
        for c in data.comparisons:
            if not c.movers:
                continue
            parts.append(f"<details><summary>Items that moved most: {esc(c.candidate)} vs {esc(c.base)}</summary>")
            parts.append(
                _table(
                    ["source", "base", "candidate", "change", "input", "base label", "candidate label"],
                    [
                        [
                            m.source_id,
                            LEVELS[m.base_level],
                            LEVELS[m.candidate_level],
                            f"{m.delta:+d}",
                            _one_line(m.input_preview, 200),
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
                    _table(
                        ["slice", "n", "mean level", "≥ good", "weakest examples"],
                        [
                            [
                                s.title,
                                s.n_rated,
                                num(s.mean_level),
                                share(s.share_good),
                                "\n".join(
                                    f"[{e.rating or 'unrated'}] {e.source_id}: {_one_line(e.input_preview, 140)}"
                                    for e in s.examples
                                ),
                            ]
                            for s in report.worst
                        ],
                        text_cols=(0, 4),
                        css_class="worst-slices",
                    )
                )
            else:
                parts.append(f'<p class="muted">No slice with at least {report.min_n} rated items stands out.</p>')

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
            _table(
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
            _table(
                ["level", "reviewer n", "judge n", "precision", "recall", "F1"],
                [[a.name, a.n_reviewer, a.n_judge, num(a.precision), num(a.recall), num(a.f1)] for a in cal.per_level],
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts)


# -- Markdown --------------------------------------------------------------------------------------


def _md_cell(value: object) -> str:
    return str(value if value is not None else "-").replace("|", "\\|").replace("\n", " ")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(data: ReportData, title: str = "prelabel evaluation") -> str:
    run = data.run
    lines = [
        f"# {title}",
        "",
        f"{run.kind}; evaluation set `{run.eval_set}` ({run.n_items} items, sha256 {run.eval_set_sha256[:12]}), "
        "the same items for every version.",
        "",
    ]
    if run.family_warning:
        lines += [f"> **Warning, same-family judge:** {run.family_warning}", ""]
    ranking = run.ranking()
    if ranking and ranking[0].mean_level is not None:
        lines += [f"**Best version: {ranking[0].name}** (mean level {ranking[0].mean_level:.2f}).", ""]
    lines += ["## Prompt versions", ""]
    lines += _md_table(VERSION_HEADERS, _version_rows(run))
    lines += ["Distribution (very bad / bad / moderate / good / excellent):", ""]
    lines += [f"- {v.name}: " + " / ".join(map(str, v.distribution)) for v in run.versions.values()] + [""]
    text_rows = [
        [
            v.name,
            v.text_metrics.n,
            num(v.text_metrics.rouge1),
            num(v.text_metrics.rouge2),
            num(v.text_metrics.rougeL),
            num(v.text_metrics.bleu),
        ]
        for v in run.versions.values()
        if v.text_metrics
    ]
    if text_rows:
        lines += [f"String-matching baselines against `{run.reference_field}` (not the verdict):", ""]
        lines += _md_table(["version", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"], text_rows)
    for v in run.versions.values():
        if v.classification:
            c = v.classification
            lines += [f"Ground truth for {v.name}: accuracy {share(c.accuracy)}, macro F1 {num(c.macro_f1)}", ""]
            lines += _md_table(
                ["class", "precision", "recall", "F1", "support"],
                [[k, num(s.precision), num(s.recall), num(s.f1), s.support] for k, s in c.per_class.items()],
            )
    if data.comparisons:
        lines += ["## Comparisons", ""]
        lines += _md_table(
            ["comparison", "paired", "difference", "95% CI", "≥ good base", "≥ good candidate", "verdict"],
            [
                [
                    f"{c.candidate} vs {c.base}",
                    c.n_paired,
                    signed(c.mean_difference),
                    ci_text(c),
                    share(c.share_good_base),
                    share(c.share_good_candidate),
                    c.verdict,
                ]
                for c in data.comparisons
            ],
        )
    if data.slices:
        lines += ["## Worst slices", ""]
        for name, report in data.slices.items():
            lines += [f"### {name}", ""]
            lines += _md_table(
                ["slice", "n", "mean level", "≥ good", "example"],
                [
                    [
                        s.title,
                        s.n_rated,
                        num(s.mean_level),
                        share(s.share_good),
                        s.examples[0].source_id if s.examples else "-",
                    ]
                    for s in report.worst
                ],
            )
    if data.calibration is not None:
        cal = data.calibration
        lines += ["## Judge calibration", ""]
        if cal.warning:
            lines += [f"> **Warning:** {cal.warning}", ""]
        lines += [
            f"{cal.n_pairs} pairs; weighted kappa {num(cal.kappa)}, exact {share(cal.exact)}, "
            f"within one {share(cal.within_one)}.",
            "",
        ]
    return "\n".join(lines)


def write_reports(out_dir: Path, data: ReportData, title: str = "prelabel evaluation") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / REPORT_HTML, out_dir / REPORT_MD
    html_path.write_text(render_html(data, title), encoding="utf-8")
    md_path.write_text(render_markdown(data, title), encoding="utf-8")
    return html_path, md_path


# -- terminal tables -------------------------------------------------------------------------------


def _one_line(text: str, limit: int) -> str:
    flat = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def versions_table(run: RunSummary) -> Table:
    table = Table(title=f"{run.n_items} items, best first", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("version", "rated", "mean", "≥ good", *LEVELS, "unrated", "tokens", "cost"):
        table.add_column(header, justify="left" if header == "version" else "right", overflow="fold")
    for v in run.ranking():
        table.add_row(
            v.name,
            str(v.n_rated),
            num(v.mean_level),
            share(v.share_good),
            *map(str, v.distribution),
            str(v.n_unrated),
            f"{v.tokens_full:,}",
            money(v.full_cost_usd),
        )
    return table


def baselines_table(run: RunSummary) -> Table | None:
    rows = [v for v in run.versions.values() if v.text_metrics or v.classification]
    if not rows:
        return None
    table = Table(title=f"against {run.reference_field} (string matching is a baseline)", box=box.SIMPLE_HEAD)
    if run.kind == "classification":
        for header in ("version", "n", "accuracy", "macro P", "macro R", "macro F1"):
            table.add_column(header, justify="right")
        for v in rows:
            c = v.classification
            if c:
                table.add_row(
                    v.name, str(c.n), share(c.accuracy), num(c.macro_precision), num(c.macro_recall), num(c.macro_f1)
                )
    else:
        for header in ("version", "n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"):
            table.add_column(header, justify="right")
        for v in rows:
            t = v.text_metrics
            if t:
                table.add_row(v.name, str(t.n), num(t.rouge1), num(t.rouge2), num(t.rougeL), num(t.bleu))
    return table


def comparisons_table(comparisons: Sequence[Comparison]) -> Table:
    table = Table(title="paired on the same items (candidate − base)", box=box.SIMPLE_HEAD)
    for header in ("candidate vs base", "paired", "difference", "95% CI", "≥ good", "up/down/same", "verdict"):
        table.add_column(header, justify="left" if header in ("candidate vs base", "verdict") else "right")
    for c in comparisons:
        table.add_row(
            f"{c.candidate} vs {c.base}",
            str(c.n_paired),
            signed(c.mean_difference),
            ci_text(c),
            f"{share(c.share_good_base)} → {share(c.share_good_candidate)}",
            f"{c.improved}/{c.worsened}/{c.unchanged}",
            c.verdict,
        )
    return table


def movers_table(c: Comparison) -> Table:
    table = Table(title=f"moved most: {c.candidate} vs {c.base}", box=box.SIMPLE_HEAD)
    for header in ("source", "base", "candidate", "change", "input"):
        table.add_column(header, overflow="fold")
    for m in c.movers:
        table.add_row(
            m.source_id,
            LEVELS[m.base_level],
            LEVELS[m.candidate_level],
            f"{m.delta:+d}",
            _one_line(m.input_preview, 80),
        )
    return table


def worst_slices_table(report: SliceReport) -> Table:
    table = Table(
        title=f"worst slices: {report.version} (overall mean {num(report.overall_mean)})", box=box.SIMPLE_HEAD
    )
    for header in ("slice", "n", "mean", "≥ good", "weakest example"):
        table.add_column(header, overflow="fold")
    for s in report.worst:
        example = s.examples[0] if s.examples else None
        table.add_row(
            s.title,
            str(s.n_rated),
            num(s.mean_level),
            share(s.share_good),
            f"{example.source_id}: {_one_line(example.input_preview, 60)}" if example else "-",
        )
    return table


def calibration_table(cal: Calibration) -> Table:
    table = Table(title=f"judge vs reviewer on {cal.n_pairs} items (rows reviewer, columns judge)", box=box.SIMPLE_HEAD)
    table.add_column("reviewer \\ judge")
    for name in LEVELS:
        table.add_column(name, justify="right")
    for i, row in enumerate(cal.confusion):
        table.add_row(LEVELS[i], *map(str, row))
    table.caption = f"weighted κ {num(cal.kappa)}, exact {share(cal.exact)}, within one {share(cal.within_one)}"
    return table
