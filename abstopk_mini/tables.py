"""Rows of results (dicts) as a plain-text or a markdown table: the one table formatter.

:func:`format_table` lays out the cells; what a cell says is the caller's choice (``formats`` per
column, ``cell`` for the rest). Plain text right-aligns each column (``align`` may left-align
some) and separates columns by two spaces; markdown writes ``| a | b |`` rows under a ``|---|``
line, unpadded::

    print(format_table(rows, ["name", ("fvu", "FVU")], formats={"fvu": ".4f"}))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

__all__ = ["default_cell", "format_table"]


def default_cell(value, digits: int = 3) -> str:
    """None as ``-``, a float with ``digits`` decimals, anything else by ``str``."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence | None = None, *, style: str = "text",
                 digits: int = 3, formats: Mapping[str, str | Callable] | None = None,
                 cell: Callable | None = None, get: Callable | None = None, align: Mapping[str, str] | None = None,
                 empty: str | None = None) -> str:
    """A table of ``rows`` with one column per entry of ``columns``.

    columns: keys, or ``(key, header)`` pairs to rename (default: the first row's keys).
    formats: key -> a format spec (``".4f"``) or a function of the value; other cells by
    ``cell(value)`` (default :func:`default_cell` with ``digits``). get: ``get(row, key)`` reads a
    value (default ``row.get(key)``, so a missing key is None). style: ``"text"`` or ``"markdown"``.
    align: key -> ``"<"`` or ``">"`` (text only; default right). empty: the text returned when
    there are no rows (default: the header alone).
    """
    if style not in ("text", "markdown"):
        raise ValueError(f"style must be 'text' or 'markdown'; got {style!r}")
    rows = list(rows)
    if not rows and (empty is not None or columns is None):
        return empty if empty is not None else ""
    cols = [(c, c) if isinstance(c, str) else tuple(c) for c in (columns if columns is not None else rows[0])]
    formats, align = dict(formats or {}), dict(align or {})
    get = get or (lambda row, key: row.get(key))
    cell = cell or (lambda value: default_cell(value, digits))

    def show(key, value) -> str:
        f = formats.get(key)
        if f is None:
            return cell(value)
        return f(value) if callable(f) else ("-" if value is None else format(value, f))

    headers = [str(h) for _, h in cols]
    cells = [[show(key, get(row, key)) for key, _ in cols] for row in rows]
    if style == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(cols)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    width = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    just = [(str.ljust if align.get(key) == "<" else str.rjust) for key, _ in cols]
    lines = [headers] + cells
    return "\n".join("  ".join(j(v, w) for j, v, w in zip(just, line, width)).rstrip() for line in lines)
