"""The report's charts as inline SVG (no script, nothing fetched): rating distributions, mean level per slice,
and heatmaps of confusion matrices. Every text from data is escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prelabel.evaluation.formatting import esc
from prelabel.evaluation.summary import VersionSummary
from prelabel.judge import LEVELS
from prelabel.subsets import SliceReport

LEVEL_COLOURS = ("#c0392b", "#e67e22", "#f1c40f", "#7cb342", "#2e7d32")
VERSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def svg(width: int, height: int, body: list[str], label: str) -> str:
    """An inline SVG chart `width` x `height` of the given elements, labelled for screen readers."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{esc(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">' + "".join(body) + "</svg>"
    )


def svg_text(
    x: float, y: float, text: object, anchor: str = "start", size: int = 12, weight: str = "normal", fill: str = "#222"
) -> str:
    """An SVG text element at (x, y), its text escaped."""
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
        body.append(svg_text(left - 6, y + 4, f"{value:.0%}", "end", 11, fill="#555"))
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
        body.append(svg_text(left + i * group_w + group_w / 2, top + plot_h + 18, name, "middle"))
    for j, version in enumerate(versions):  # legend
        x = left + j * 150
        body.append(
            f'<rect x="{x}" y="{height - 18}" width="12" height="12" '
            f'fill="{VERSION_COLOURS[j % len(VERSION_COLOURS)]}"/>'
        )
        body.append(svg_text(x + 16, height - 8, version.name[:20], size=11))
    return svg(width, height, body, "rating distribution per prompt version")


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
        body.append(svg_text(x, height - 8, LEVELS[tick], "middle", 10, fill="#555"))
    worst_keys = {(s.feature, s.value) for s in report.worst}
    for i, s in enumerate(slices):
        y = top + i * row_h
        value = s.mean_level or 0.0
        w = plot_w * value / (len(LEVELS) - 1)
        colour = "#c0392b" if (s.feature, s.value) in worst_keys else "#5b8def"
        title = s.title if len(s.title) <= 38 else s.title[:37] + "…"
        body.append(svg_text(label_w - 8, y + 15, title, "end", 11))
        body.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 1.0):.1f}" height="{row_h - 8}" '
            f'fill="{colour}">'
            f"<title>{esc(s.title)}: mean level {value:.2f}, n={s.n_rated}</title></rect>"
        )
        body.append(svg_text(label_w + w + 6, y + 15, f"{value:.2f} (n={s.n_rated})", size=11, fill="#333"))
    if report.overall_mean is not None:
        x = label_w + plot_w * report.overall_mean / (len(LEVELS) - 1)
        body.append(
            f'<line class="overall" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 8}" y2="{height - 24}" '
            'stroke="#222" stroke-dasharray="4 3"/>'
        )
        body.append(svg_text(x, top - 10, f"all {report.overall_mean:.2f}", "middle", 10))
    return svg(width, height, body, f"mean judge level per slice, {report.version}")


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
    body = [svg_text(left + cell * len(col_labels) / 2, 16, col_title, "middle", 12, "bold")]
    body.append(
        f'<text x="14" y="{top + cell * len(row_labels) / 2:.1f}" font-size="12" font-weight="bold" '
        f'text-anchor="middle" transform="rotate(-90 14 {top + cell * len(row_labels) / 2:.1f})">'
        f"{esc(row_title)}</text>"
    )
    for j, name in enumerate(col_labels):
        body.append(svg_text(left + j * cell + cell / 2, top - 8, name, "middle", 11))
    for i, name in enumerate(row_labels):
        body.append(svg_text(left - 6, top + i * cell + cell / 2 + 4, name, "end", 11))
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
                svg_text(x + cell / 2, y + cell / 2 + 4, value, "middle", 13, fill="#fff" if alpha > 0.55 else "#222")
            )
    return svg(width, height, body, label)
