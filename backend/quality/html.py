"""The quality report as one self-contained HTML page (inline SVG, no script, nothing fetched), drawn with the
evaluation report's pieces (prelabel.evaluation.report: page opening and stylesheet, tables, rule notes;
prelabel.evaluation.charts: SVG helpers). Every text from data is escaped."""

from __future__ import annotations

from prelabel.evaluation.charts import svg, svg_text
from prelabel.evaluation.formatting import esc
from prelabel.evaluation.report import html_table, page_start, rule
from prelabel.judge import LEVELS, MAX_LEVEL
from prelabel.quality.report import QualityReport, TargetFigures
from prelabel.quality.stats import Interval


def reliability_chart(report: QualityReport) -> str:
    """The reviewers' mean level per judge level (dots sized by how many reviews) against the diagonal a
    perfectly calibrated judge would sit on."""
    size, left, top, bottom = 380, 70, 20, 50
    plot = size - left - 40  # room for the last level's name
    height = top + plot + bottom

    def x(level: float) -> float:
        return left + plot * level / MAX_LEVEL

    def y(level: float) -> float:
        return top + plot - plot * level / MAX_LEVEL

    body = []
    for level, name in enumerate(LEVELS):
        body.append(f'<line x1="{x(level):.1f}" x2="{x(level):.1f}" y1="{top}" y2="{top + plot}" stroke="#eee"/>')
        body.append(f'<line x1="{left}" x2="{left + plot}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="#eee"/>')
        body.append(svg_text(x(level), top + plot + 16, name, "middle", 10, fill="#555"))
        body.append(svg_text(left - 6, y(level) + 4, level, "end", 10, fill="#555"))
    body.append(
        f'<line class="diagonal" x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(MAX_LEVEL):.1f}" y2="{y(MAX_LEVEL):.1f}" '
        'stroke="#888" stroke-dasharray="5 4"/>'
    )
    body.append(svg_text(left + plot / 2, height - 8, "judge level", "middle", 12, "bold"))
    middle = top + plot / 2
    body.append(
        f'<text x="14" y="{middle:.1f}" font-size="12" font-weight="bold" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle:.1f})">reviewer mean level</text>'
    )
    peak = max([row.n_reviewed for row in report.calibration] + [1])
    points = [row for row in report.calibration if row.reviewer_mean_level is not None]
    path = " ".join(f"{x(r.judge_level):.1f},{y(r.reviewer_mean_level or 0):.1f}" for r in points)
    if len(points) > 1:
        body.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for row in points:
        radius = 4 + 8 * (row.n_reviewed / peak) ** 0.5
        body.append(
            f'<circle class="point" cx="{x(row.judge_level):.1f}" cy="{y(row.reviewer_mean_level or 0):.1f}" '
            f'r="{radius:.1f}" fill="#1f77b4" fill-opacity="0.75"><title>judge {esc(row.judge_rating)}: reviewers '
            f"{row.reviewer_mean_level:.2f} on average, {row.n_reviewed} reviewed</title></circle>"
        )
    return svg(size, height, body, "reliability: reviewer mean level per judge level")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _interval(interval: Interval | None, percent: bool) -> str:
    if interval is None:
        return "-"
    if percent:
        return f"{interval.low:.1%} – {interval.high:.1%}"
    return f"{interval.low:.2f} – {interval.high:.2f}"


def _figures(target: TargetFigures, percent: bool) -> list[list[object]]:
    def point(value: float | None) -> str:
        return _share(value) if percent else ("-" if value is None else f"{value:.2f}")

    combined = target.combined
    return [
        ["judge only (biased: no interval)", point(target.judge_only), "-"],
        [
            "reviewed only",
            point(target.reviewed_only.estimate if target.reviewed_only else None),
            _interval(target.reviewed_only, percent),
        ],
        [
            "combined: the figure to quote",
            point(combined.estimate if combined else None),
            _interval(combined, percent),
        ],
    ]


def render_html(report: QualityReport, title: str = "prelabel quality") -> str:
    name = report.threshold_name
    combined = report.share_at_least.combined
    parts = [
        page_start(title),
        f'<p class="muted">{report.n_items:,} labeled items ({report.n_rated:,} rated by the judge), '
        f"{report.n_reviewed:,} reviewed</p>",
    ]
    if combined is not None:
        parts.append(
            f'<p class="ok" id="headline"><b>{combined.estimate:.1%}</b> of the labels would be rated {esc(name)} '
            f"or better by a reviewer (95% interval {combined.low:.1%} – {combined.high:.1%}).</p>"
        )
    for warning in report.warnings:
        parts.append(f'<p class="warning">{esc(warning)}</p>')
    parts.append(f"<h2>Share rated {esc(name)} or better</h2>")
    parts.append(
        html_table(["figure", "estimate", "95% interval"], _figures(report.share_at_least, True), css_class="share")
    )
    parts.append("<h2>Mean level (0 very bad .. 4 excellent)</h2>")
    parts.append(
        html_table(["figure", "estimate", "95% interval"], _figures(report.mean_level, False), css_class="mean")
    )
    if combined is not None:
        parts.append(rule(f"method: {combined.method}"))
    parts.append(
        '<p class="muted">The judge-only figure leans wherever the judge leans (lenient judges rate too high). The '
        "combined figure uses the judge's rating of every item and corrects its bias with the reviews: 95 in 100 "
        "such intervals hold the true figure. Quote it.</p>"
    )

    parts.append("<h2>Judge vs reviewers</h2>")
    kappa = report.agreement.kappa_quadratic
    parts.append(
        f"<p>Quadratic-weighted kappa {'-' if kappa is None else f'{kappa.estimate:.2f}'} "
        f"(95% interval {_interval(kappa, False)}) on {report.agreement.n_pairs} reviewed items "
        "(1 = perfect agreement, 0 = chance).</p>"
    )
    parts.append(reliability_chart(report))
    parts.append(
        '<p class="muted">Each dot: the reviewers\' mean level on the items the judge put at that level (bigger: '
        "more reviews). A calibrated judge sits on the dashed diagonal; dots below it mean a lenient judge.</p>"
    )
    rows = [
        [
            f"{row.judge_level} {row.judge_rating}",
            f"{row.n_items:,}",
            row.n_reviewed,
            "-" if row.reviewer_mean_level is None else f"{row.reviewer_mean_level:.2f}",
            _share(row.reviewer_share_at_least),
        ]
        for row in report.calibration
    ]
    headers = ["judge level", "labeled", "reviewed", "reviewer mean level", f"reviewer ≥ {name}"]
    parts.append(html_table(headers, rows, css_class="calibration"))

    needed = report.reviews_needed
    if needed is not None:
        parts.append("<h2>More reviews</h2>")
        if needed.reviews_total is None:
            text = f"A {needed.target_width:.1%}-wide interval is out of reach with this judge."
        else:
            text = (
                f"For a {needed.target_width:.1%}-wide interval (now {_share(needed.current_width)}): about "
                f"{needed.additional or 0:,} more reviews"
                + (
                    ""
                    if needed.reviewed_only_additional is None
                    else f" ({needed.reviewed_only_additional:,} without the judge)"
                )
                + "."
            )
        parts.append(f'<p id="reviews-needed">{esc(text)}</p>' + rule(f"assuming {needed.assumption}"))
    rounds = [
        [r.name or "-", r.n, "yes" if r.uniform else "no", f"{r.n_eff:.1f}", ", ".join(r.strategies) or "-"]
        for r in report.rounds
    ]
    parts.append("<h2>Reviews</h2>")
    parts.append(html_table(["round", "reviews", "uniform", "effective n", "strategy"], rounds, css_class="rounds"))
    m = report.matching
    parts.append(
        f'<p class="muted">{m.reviews_read} reviews read, {m.used} used; left out: {m.other_version} of another '
        f"version of the label, {m.unknown_source} of items not in the labels, {m.no_reviewer_rating} without a "
        f"reviewer rating, {m.duplicates} repeated. {m.rating_anchored} used ratings may be anchored on the judge.</p>"
    )
    if report.problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in report.problems[:50])
        parts.append(f"<details><summary>{len(report.problems)} bad lines left out</summary><ul>{items}</ul></details>")
    parts.append("</body></html>")
    return "".join(parts)
