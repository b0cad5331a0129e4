"""Console output shared by the commands: error lines printed literally, tables that keep ids whole.

Rich reads ``[...]`` in a string as markup, so a message such as ``[relay] failed`` would lose its
first word and ``--table 'x[/]y'`` would crash the error printer itself. Everything that comes from
outside (error messages, topics, keys, ids, broker reasons) therefore goes out as
:class:`rich.text.Text`, which is never parsed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Width used when stdout is not a terminal (a pipe, a file): wide enough that no table cell is cut,
#: so ``outboxkit status | grep`` sees full ids and topics.
PIPE_WIDTH = 10_000


def hide_flag_types() -> None:
    """``--help`` shows no type for on/off flags.

    Recent typer releases print ``<bool>`` in the type column of every flag (``--sql <bool>``), which
    reads as if the flag took a value; a flag takes none. Typer has no setting for it, so the one
    method that chooses the column's text answers "nothing" for flags. Idempotent."""
    import typer.core

    option = typer.core.TyperOption
    if getattr(option.display_type_rich, "_outboxkit", False):
        return
    shown = option.display_type_rich

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._outboxkit = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich  # type: ignore[method-assign]


def print_error(console: Console, message: str, *, hint: str | None = None) -> None:
    """``error: <message>`` on one line, the message taken literally; an optional dim hint line."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    if hint:
        console.print(Text(hint, style="dim"), highlight=False, soft_wrap=True)


def literal(value: object) -> Text:
    """A table cell or line that Rich prints as is (no markup, no highlighting)."""
    return Text("" if value is None else str(value))


def output_console() -> Console:
    """stdout for tables: a terminal's own width, or :data:`PIPE_WIDTH` when piped."""
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def print_rows(
    console: Console,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    whole: Collection[str] = (),
    right: Collection[str] = (),
) -> None:
    """A table whose ``whole`` columns (ids, topics) are never cut or wrapped.

    When the console is too narrow to show those columns whole next to the others, each row is
    printed as ``name: value`` lines instead of a table that would cut them."""
    cells = [[literal(v) for v in row] for row in rows]
    widths = {h: max([len(h)] + [c[i].cell_len for c in cells]) for i, h in enumerate(headers)}
    # Borders take 3 characters per column plus 1; other columns need about 6 to stay legible.
    needed = 1 + sum(3 + (widths[h] if h in whole else min(widths[h], 6)) for h in headers)
    if console.width < needed:
        console.print(literal(title), highlight=False)
        for row in cells:
            console.print(literal(""))
            for header, cell in zip(headers, row, strict=True):
                console.print(Text.assemble((f"{header}: ", "bold"), cell), highlight=False, soft_wrap=True)
        return
    table = Table(title=literal(title))
    for h in headers:
        if h in whole:
            table.add_column(h, no_wrap=True, overflow="ignore", min_width=widths[h])
        else:
            table.add_column(h, justify="right" if h in right else "left", overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)


__all__ = ["PIPE_WIDTH", "literal", "output_console", "print_error", "print_rows"]
