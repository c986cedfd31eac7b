"""The terminal tables' one style: a rule under the header, two spaces between columns,
no frame, so the commands' tables fit an 80-column terminal or log file. A table's title
is printed by the caller as a line above it (a long name or path wraps there, at the
terminal's width, not at the table's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["narrow_table"]


def narrow_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: int = 1,
    caption: str | None = None,
) -> Any:
    """A rich Table of ``rows`` under ``header``: the first ``left`` columns (names)
    left-aligned and folded onto a second line when too long, the others right-aligned
    numbers that never wrap."""
    from rich import box
    from rich.table import Table

    table = Table(
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, name in enumerate(header):
        is_name = i < left
        table.add_column(
            name,
            justify="left" if is_name else "right",
            no_wrap=not is_name,
            overflow="fold" if is_name else "ellipsis",
        )
    for row in rows:
        table.add_row(*row)
    return table
