"""The table every command prints: rich's, made to keep numbers whole at any terminal width."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Column
from rich.table import Table as RichTable
from rich.text import Text


class Table(RichTable):
    """A rich table that never splits a number: right-aligned (number) columns never wrap, and when the
    terminal is too narrow for them whole beside the text columns wrapped at word boundaries, the rows are
    printed stacked instead, one "header: value" line per cell."""

    def add_column(self, header: RenderableType = "", *args: object, **kwargs: object) -> None:
        super().add_column(header, *args, **kwargs)  # type: ignore[arg-type]
        column = self.columns[-1]
        if column.justify == "right":
            column.no_wrap = True

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.columns or self._narrowest(console) <= options.max_width:
            yield from super().__rich_console__(console, options)
            return
        yield from self._stacked(console, options.max_width)

    def _narrowest(self, console: Console) -> int:
        """The width this table needs with number columns whole and text columns folded at words."""
        left, right = self.padding[3], self.padding[1]
        total = self._extra_width
        for column in self.columns:
            texts = [_plain(console, column.header), *(_plain(console, cell) for cell in column.cells)]
            if column.no_wrap:
                needed = max(cell_len(line) for text in texts for line in text.splitlines() or [""])
            else:
                needed = max((cell_len(word) for text in texts for word in text.split()), default=1)
            total += needed + left + right
        return total

    def _stacked(self, console: Console, width: int) -> RenderResult:
        if self.title:
            yield Text(_plain(console, self.title), style="bold")
        headers = [_plain(console, column.header) for column in self.columns]
        rows = zip(*(list(column.cells) for column in self.columns), strict=True)
        for number, row in enumerate(rows, 1):
            yield Text(f"— {number} —", style="dim")
            for header, cell in zip(headers, row):
                value = _plain(console, cell)
                label = header or "·"
                if cell_len(label) + 2 + cell_len(value) <= width:
                    yield Text(f"{label}: {value}")
                else:  # the value on a line of its own, so a number is split only if it is wider than the screen
                    yield Text(f"{label}:")
                    yield Text(f"  {value}")
        if self.caption:
            yield Text(_plain(console, self.caption), style="dim")


def _plain(console: Console, cell: RenderableType | Column | None) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return console.render_str(cell).plain
    return "" if cell is None else str(cell)
