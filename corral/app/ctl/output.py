"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Column", "show"]

Column = tuple[str, Callable[[Mapping[str, Any]], Any]]  # header, cell from a row


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def show(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    title: str | None = None,
    raw: Any = None,
) -> None:
    """Print ``rows`` as a table, or ``raw`` (default: the rows) as JSON."""
    if as_json:
        print(json.dumps(rows if raw is None else raw, indent=2, default=str))
        return
    console = Console(soft_wrap=True)
    if not rows:
        console.print(f"(no {title or 'rows'})", highlight=False)
        return
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for header, _ in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*(_cell(get(row)) for _, get in columns))
    console.print(table)
