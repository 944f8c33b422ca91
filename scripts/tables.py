"""The terminal tables the commands print (rich): the library hands over data, these render it.

evaluate, compare and report print the run's tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table

from prelabel.evaluation.calibration import Calibration
from prelabel.evaluation.compare import Comparison
from prelabel.evaluation.formatting import ci_text, money, num, one_line, share, signed
from prelabel.evaluation.runs import RunSummary
from prelabel.judge import LEVELS
from prelabel.subsets import SliceReport

# -- evaluate, compare, report ---------------------------------------------------------------------


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
            one_line(m.input_preview, 80),
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
            f"{example.source_id}: {one_line(example.input_preview, 60)}" if example else "-",
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
