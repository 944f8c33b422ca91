"""Terminal tables never split a number, at any width: whole cells, or one row per block when too narrow."""

from __future__ import annotations

import pytest
from rich.console import Console

from prelabel.review_stats import pull_report
from prelabel.scripts.table_layout import Table
from prelabel.scripts.tables import review_versions_table
from tests.unit.test_review_stats import records

NUMBERS = ["$0.1234 / 508", "12,345,678", "0.4286", "(33%)", "−0.0625 [−0.21, +0.08]"]


def _render(table: Table, width: int) -> list[str]:
    console = Console(record=True, width=width, color_system=None, force_terminal=False)
    console.print(table)
    return console.export_text().splitlines()


def _money_table() -> Table:
    table = Table(title="a run with long names and numbers")
    table.add_column("version (a long prompt version name)", overflow="fold")
    for header in ("cost / items", "tokens", "mean", "share", "difference [95% CI]"):
        table.add_column(header, justify="right")
    table.add_row("summarize-v2-with-few-shot-examples and notes", *NUMBERS)
    table.add_row("v1", *NUMBERS)
    return table


# From the widest figure (24 columns with its indent) up: a figure wider than the screen has to wrap.
@pytest.mark.parametrize("width", range(24, 181, 4))
def test_no_number_is_split_at_any_width(width: int) -> None:
    lines = _render(_money_table(), width)
    for number in NUMBERS:
        assert sum(number in line for line in lines) == 2, (width, number, "\n".join(lines))


def test_wide_terminal_keeps_the_grid_and_narrow_one_stacks() -> None:
    wide = _render(_money_table(), 180)
    assert any("v1" in line and "12,345,678" in line and "(33%)" in line for line in wide)  # a row per line
    narrow = _render(_money_table(), 60)
    assert "tokens: 12,345,678" in narrow and "— 2 —" in narrow


@pytest.mark.parametrize("width", [40, 60, 80, 100, 140])
def test_pull_table_keeps_each_figure_whole(width: int) -> None:
    text = "\n".join(_render(review_versions_table(pull_report(records())), width))
    for figure in ("(33%)", "0.25", "0.43", "1.00", "50%"):
        assert figure in text, (width, text)
