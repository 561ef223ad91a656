"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "console", "counted", "human_bytes", "print_json", "seconds", "show", "table"]

# A header, and the cell from a row: a value shown as _cell says, or a styled Text.
Column = tuple[str, Callable[[Mapping[str, Any]], Any]]


def console(*, stderr: bool = False) -> Console:
    # soft_wrap: a long cell wraps inside its column instead of being cut with "…".
    return Console(soft_wrap=True, stderr=stderr, highlight=False)


def _text(value: Any) -> Text:
    # Text, not a str: a bracket in a model name or an error is not Rich markup.
    return value if isinstance(value, Text) else Text(_cell(value))


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


def counted(n: int, noun: str) -> str:
    """1 worker, 2 workers."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def human_bytes(n: Any) -> str | None:
    """1.9 GiB; None for nothing known (0 or not a number)."""
    if not isinstance(n, int | float) or isinstance(n, bool) or n <= 0:
        return None
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def seconds(value: Any) -> str | None:
    """12 s, 4m05s, 2h10m; None for no value."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    s = max(0, round(value))
    if s < 60:
        return f"{value:.1f} s" if value < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], title: str | None = None
) -> Table:
    out = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for header, _ in columns:
        out.add_column(header)
    for row in rows:
        out.add_row(*(_text(get(row)) for _, get in columns))
    return out


def show(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    as_json: bool,
    what: str = "rows",
    raw: Any = None,
) -> None:
    """Print ``rows`` as a table (``(no WHAT)`` when there are none), or ``raw``
    (default: the rows) as JSON."""
    if as_json:
        print_json(rows if raw is None else raw)
        return
    out = console()
    if not rows:
        out.print(f"(no {what})")
        return
    out.print(table(rows, columns))
