"""The terminal tables the commands print (rich): the library hands over data, these render it.

evaluate, compare and report print the run's tables; pull the review statistics; export the selection counts.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.text import Text

from prelabel.evaluation import rules
from prelabel.evaluation.calibration import Calibration
from prelabel.evaluation.compare import Comparison
from prelabel.evaluation.formatting import (
    JURY_AGREEMENT_HEADERS,
    LENGTH_BIAS_HEADERS,
    ci_text,
    jury_agreement_rows,
    length_bias_rows,
    money,
    num,
    one_line,
    share,
    signed,
)
from prelabel.evaluation.runs import RunSummary
from prelabel.export.options import ExportReport
from prelabel.judge import LEVELS
from prelabel.quality.dataset import DatasetQuality
from prelabel.review_stats import NO_VERSION, PullReport, VersionStats, WorstCase, level_name
from prelabel.scripts.table_layout import Table
from prelabel.subsets import SliceReport

# -- evaluate, compare, report ---------------------------------------------------------------------


def versions_table(run: RunSummary) -> Table:
    table = Table(title=f"{run.n_items} items, best first", box=box.SIMPLE_HEAD, pad_edge=False)
    table.caption = rules.RANKING
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


def length_bias_table(run: RunSummary) -> Table | None:
    rows = length_bias_rows(run.versions.values())
    return _rows_table("the judge and label length", rules.LENGTH_BIAS, LENGTH_BIAS_HEADERS, rows, ("n",))


def jury_agreement_table(run: RunSummary) -> Table | None:
    rows = jury_agreement_rows(run.versions.values())
    return _rows_table(
        "the jurors' agreement", rules.JURY_AGREEMENT, JURY_AGREEMENT_HEADERS, rows, ("n", "κ quadratic")
    )


def _rows_table(
    title: str, caption: str, headers: Sequence[str], rows: list[list[object]], right: Sequence[str]
) -> Table | None:
    """A simple table of ready-made rows (None when there are none), the named columns right-aligned."""
    if not rows:
        return None
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.caption = caption
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*map(str, row))
    return table


def baselines_table(run: RunSummary) -> Table | None:
    rows = [v for v in run.versions.values() if v.text_metrics or v.classification]
    if not rows:
        return None
    if run.kind == "classification":
        table = Table(title=f"against the ground truth in {run.reference_field}", box=box.SIMPLE_HEAD)
        table.caption = rules.CLASSIFICATION
        table.add_column("version", overflow="fold")
        for header in ("n", "accuracy", "macro P", "macro R", "macro F1"):
            table.add_column(header, justify="right")
        for v in rows:
            c = v.classification
            if c:
                table.add_row(
                    v.name, str(c.n), share(c.accuracy), num(c.macro_precision), num(c.macro_recall), num(c.macro_f1)
                )
    else:
        table = Table(title=f"against {run.reference_field} (string matching is a baseline)", box=box.SIMPLE_HEAD)
        table.caption = " ".join(rules.text_metrics())
        table.add_column("version", overflow="fold")
        for header in ("n", "ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"):
            table.add_column(header, justify="right")
        for v in rows:
            t = v.text_metrics
            if t:
                table.add_row(v.name, str(t.n), num(t.rouge1), num(t.rouge2), num(t.rougeL), num(t.bleu))
    return table


def classification_tables(run: RunSummary) -> list[Table]:
    """Per version: per-class precision, recall, F1 and support, and the confusion matrix (rows true)."""
    tables = []
    for v in run.versions.values():
        c = v.classification
        if c is None:
            continue
        scores = Table(title=f"{v.name}: per class", box=box.SIMPLE_HEAD)
        scores.add_column("class", overflow="fold")
        for header in ("precision", "recall", "F1", "support"):
            scores.add_column(header, justify="right")
        for label, m in c.per_class.items():
            scores.add_row(label, num(m.precision), num(m.recall), num(m.f1), str(m.support))
        confusion = Table(title=f"{v.name}: confusion matrix (rows true, columns predicted)", box=box.SIMPLE_HEAD)
        confusion.add_column("true \\ predicted", overflow="fold")
        for label in c.labels:
            confusion.add_column(label, justify="right")
        for label, row in zip(c.labels, c.confusion):
            confusion.add_row(label, *map(str, row))
        tables += [scores, confusion]
    return tables


def comparisons_table(comparisons: Sequence[Comparison]) -> Table:
    table = Table(title="paired on the same items (candidate − base)", box=box.SIMPLE_HEAD)
    table.caption = rules.COMPARISON
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
            one_line(m.input_preview, 80),
        )
    return table


def worst_slices_table(report: SliceReport) -> Table:
    table = Table(
        title=f"worst slices: {report.version} (overall mean {num(report.overall_mean)})", box=box.SIMPLE_HEAD
    )
    for header in ("slice", "n", "mean", "95% CI", "≥ good", "weakest example"):
        table.add_column(header, justify="right" if header in ("n", "mean", "95% CI", "≥ good") else "left")
    for s in report.worst:
        example = s.examples[0] if s.examples else None
        interval = f"{num(s.mean_low)}–{num(s.mean_high)}" if s.mean_low is not None else "-"
        table.add_row(
            s.title + (" (may be noise)" if s.may_be_noise else ""),
            str(s.n_rated),
            num(s.mean_level),
            interval,
            share(s.share_good),
            f"{example.source_id}: {one_line(example.input_preview, 60)}" if example else "-",
        )
    table.caption = rules.slices(report.min_n)
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


# -- pull ------------------------------------------------------------------------------------------


def _level_cell(value: int | None) -> str:
    name = level_name(value)
    return "-" if name is None else f"{value} {name}"


def review_versions_table(report: PullReport) -> Table:
    """One row per prompt version, plus a total row when there is more than one version."""
    classification = report.kind == "classification"
    table = Table(title=f"Reviewed {report.n_reviewed} of {report.n_tasks} tasks", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("version", overflow="fold")
    table.add_column("reviewed", justify="right")
    table.add_column("accepted", justify="right")
    table.add_column("edited", justify="right")
    table.add_column("no label", justify="right")  # rating-only and empty reviews
    if classification:
        table.add_column("accuracy", justify="right")
        table.add_column("macro F1", justify="right")
    table.add_column("edit dist", justify="right")
    if not classification:
        table.add_column("ROUGE-L", justify="right")
    table.add_column("rated", justify="right")
    table.add_column("exact", justify="right")
    table.add_column("±1", justify="right")
    table.add_column("κ", justify="right")
    table.add_column("ρ", justify="right")

    def row(stats: VersionStats, name: str, style: str | None = None) -> None:
        cells = [
            name,
            str(stats.n_reviewed),
            f"{stats.accepted_unchanged} ({share(stats.accepted_share)})",
            str(stats.edited),
            str(stats.rating_only + stats.empty),
        ]
        if classification:
            cells += [share(stats.accuracy), num(stats.macro_f1)]
        cells.append(num(stats.mean_edit_distance))
        if not classification:
            cells.append(num(stats.mean_rouge_l_f1))
        rated = str(stats.n_rating_pairs)
        if stats.n_anchored_pairs:
            rated += f" ({stats.n_anchored_pairs} anchored)"
        cells += [
            rated,
            share(stats.exact_agreement),
            share(stats.within_one_agreement),
            num(stats.kappa),
            num(stats.spearman),
        ]
        table.add_row(*cells, style=style)

    for stats in report.versions:
        row(stats, stats.model_version or NO_VERSION)
    if report.overall is not None and len(report.versions) > 1:
        table.add_section()
        row(report.overall, "all", style="bold")
    if report.anchored_warning:
        table.caption = f"warning: {report.anchored_warning}"
        table.caption_style = "bold yellow"
    return table


def worst_cases_table(cases: Sequence[WorstCase], title: str = "Most edited labels") -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("task", justify="right")
    table.add_column("source")
    table.add_column("version", overflow="fold")
    table.add_column("edit dist", justify="right")
    table.add_column("judge")
    table.add_column("reviewer")
    show_links = any(case.link for case in cases)
    if show_links:
        table.add_column("link", overflow="fold")
    for case in cases:
        cells: list[str | Text] = [
            str(case.task_id),
            case.source_id or "-",
            case.model_version or NO_VERSION,
            num(case.edit_distance),
            _level_cell(case.judge_level),
            _level_cell(case.reviewer_level),
        ]
        if show_links:
            cells.append(Text(case.link, style=f"link {case.link}") if case.link else "-")
        table.add_row(*cells)
    return table


# -- export ----------------------------------------------------------------------------------------


def export_table(report: ExportReport) -> Table:
    """The selection counts, split sizes and origins as one table for the terminal."""
    counts = report.counts
    table = Table(title=f"Fine-tuning export: {report.out_dir}", show_lines=False)
    table.add_column("", style="bold")
    table.add_column("tasks", justify="right")
    rows: list[tuple[str, int, str | None]] = [
        ("reviewer's label", counts.human, "green"),
        ("LLM label, rated at or above threshold", counts.llm_accepted, "green"),
        ("dropped: rated below threshold", counts.dropped_low_rating, "yellow"),
        ("dropped: unedited, reviewer rated below threshold", counts.dropped_unedited_low_rating, "yellow"),
        ("dropped: LLM label not rated", counts.dropped_unrated, "yellow"),
        ("dropped: no label", counts.dropped_no_label, "yellow"),
        ("dropped: empty input", counts.dropped_no_input, "yellow"),
        ("dropped: duplicate", counts.dropped_duplicate, "yellow"),
    ]
    for label, value, style in rows:
        table.add_row(label, str(value), style=style if value else "dim")
    table.add_section()
    table.add_row("exported", str(counts.exported))
    for split, value in report.splits.items():
        table.add_row(f"  {split}", str(value))
    table.add_row("total tasks", str(counts.total))
    if report.anchored_ratings:
        table.caption = (
            f"warning: {report.anchored_ratings} exported examples carry a reviewer's rating that is possibly "
            "anchored (pre-filled with the judge's level before blind reviews)"
        )
        table.caption_style = "bold yellow"
    return table


# -- quality ---------------------------------------------------------------------------------------


def quality_rounds_table(by_round: Sequence[tuple[str, DatasetQuality]]) -> Table:
    """The dataset's share at the threshold after each review round, with its interval's width."""
    first = by_round[0][1]
    table = Table(
        title=f"the dataset export would write: share rated {first.threshold_name} or better, round by round",
        box=box.SIMPLE_HEAD,
    )
    for header in ("after", "reviews", "share", "95% CI", "width", "examples"):
        table.add_column(header, justify="left" if header == "after" else "right")
    for name, quality in by_round:
        share = quality.share_at_least
        if share is None:
            table.add_row(
                Text(name),
                f"{quality.n_reviews:,}",
                "-",
                Text(quality.unavailable or "-"),
                "-",
                f"{quality.examples:,}",
            )
            continue
        table.add_row(
            Text(name),  # a round's name comes from task data: shown as typed, never read as markup
            f"{quality.n_reviews:,}",
            f"{share.estimate:.1%}",
            f"{share.low:.1%}–{share.high:.1%}",
            f"{share.high - share.low:.1%}",
            f"{quality.examples:,}",
        )
    table.caption = first.assumption
    return table
