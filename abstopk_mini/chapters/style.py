r"""The book's look, in one place: colours and labels, figure sizes and fonts, the one Figure class
and the one Table. Every figure and table of :mod:`abstopk_mini.chapters` is built from here.

Colours, labels and markers
    :mod:`abstopk_mini.chapters.palette`, keyed by the activation's name (AbsTopK red, TopK blue,
    ...; the methods of the theory chapters; the two sides of a concept axis), re-exported here:
    :data:`ACTIVATION_COLORS`, :data:`ACTIVATION_LABELS`, :data:`ACTIVATION_MARKERS`,
    :data:`METHOD_COLORS`, :data:`GENDER_COLORS`, :func:`color`, :func:`label`, :func:`marker`, ...

Sizes
    :mod:`abstopk_mini.chapters.sizes`, re-exported here: every figure is :data:`WIDTH` = 6 in
    wide and saved at :data:`DPI` = 200; :data:`FONT` = 10 pt is the body text size once the page
    shows the figure, and no text in a figure is smaller (:data:`RC`, applied by :func:`styled`).

Figures
    :class:`Figure` shows itself as a PNG when it is a cell's value (no pyplot needed);
    :func:`subplots` makes one with constrained layout, either on its own (``pyplot=False``:
    shown once, by its value, never again by the inline backend) or registered with pyplot
    (``pyplot=True``: the inline backend shows it at the end of the cell, as chapters 5-9
    expect). Decorate a figure function with :func:`styled` so its text takes the book's sizes.
    Every draw of a :class:`Figure` (save, PNG repr, the inline backend's show) ends with the layout
    check of :mod:`abstopk_mini.chapters.layout_check`; :func:`legend_below` and
    :func:`plain_log_labels` are the usual fixes for a legend over data and crowded log labels.
"""

from __future__ import annotations

import contextlib
import functools
import html
import io
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure as _MplFigure

from .layout_check import check_figure
from .palette import (ACTIVATION_COLORS, ACTIVATION_LABELS, ACTIVATION_MARKERS, BAND, GENDER_COLORS, METHOD_COLORS, REFERENCE,
                      SERIES, SIDE_COLORS, SIDE_LIGHT, color, label, line_style, marker, rgb)
from .sizes import DPI, FONT, MAX_PX, RC, TITLE, WIDTH

__all__ = [
    "DPI", "WIDTH", "MAX_PX", "FONT", "TITLE", "RC",
    "ACTIVATION_COLORS", "ACTIVATION_LABELS", "ACTIVATION_MARKERS", "METHOD_COLORS", "GENDER_COLORS", "SIDE_COLORS",
    "SIDE_LIGHT", "REFERENCE", "BAND", "SERIES", "color", "label", "marker", "line_style", "rgb",
    "Figure", "subplots", "styled", "book_rc", "finish", "legend_below", "plain_log_labels", "Table",
]


# =============================================================================== figures
@contextlib.contextmanager
def book_rc(params: Mapping = RC):
    """Set ``params`` (default :data:`RC`) for the duration of a ``with`` block, then put back the
    old values of **those keys only**.

    ``matplotlib.rc_context`` restores every rcParam instead. When the first pyplot figure of a
    kernel is made inside it, pyplot resolves its backend there and the IPython inline backend
    turns interactive mode on; ``rc_context`` then switches it back off on exit, and no later
    figure of the notebook is shown. Restoring only our keys leaves ``interactive`` and
    ``backend`` to matplotlib."""
    old = {key: mpl.rcParams[key] for key in params}
    mpl.rcParams.update(params)
    try:
        yield
    finally:
        mpl.rcParams.update(old)


class Figure(_MplFigure):
    """A matplotlib Figure that IPython shows as a PNG (at :data:`DPI`) when it is a cell's value.

    Every draw ends with the book's layout check (:mod:`abstopk_mini.chapters.layout_check`):
    ``savefig``, ``_repr_png_`` and the inline backend's ``plt.show()`` all draw, so a figure with
    overlapping texts, a legend over its data, a squashed panel or a font off the book's sizes
    raises a ValueError instead of being saved or shown. ``savefig`` to a path writes a temporary
    file and renames it, so a failed check leaves no file behind."""

    def draw(self, renderer):
        super().draw(renderer)
        check_figure(self, renderer)

    def savefig(self, fname, **kwargs):
        if not isinstance(fname, (str, os.PathLike)):
            return super().savefig(fname, **kwargs)
        path = Path(fname)
        kwargs.setdefault("format", path.suffix[1:] or mpl.rcParams["savefig.format"])
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            super().savefig(tmp, **kwargs)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
        return buf.getvalue()


def subplots(nrows: int = 1, ncols: int = 1, height: float = 3.0, width: float = WIDTH, pyplot: bool = False,
             **kwargs):
    """``(fig, axes)`` like ``plt.subplots``: a :class:`Figure` of ``width`` × ``height`` inches with
    constrained layout; ``kwargs`` go to ``subplots`` (``squeeze``, ``sharex``, ``sharey``, ...).

    ``pyplot=True`` registers the figure with pyplot (the inline backend shows it when the cell
    ends; close it with ``plt.close``); otherwise it stands alone and shows itself as a cell's value.
    """
    if width > MAX_PX / DPI:
        raise ValueError(f"width={width} in is {width * DPI:.0f} px at {DPI} dpi; the book takes at most "
                         f"{MAX_PX} px ({MAX_PX / DPI:g} in)")
    with book_rc():
        if pyplot:
            import matplotlib.pyplot as plt

            fig = plt.figure(figsize=(width, height), dpi=DPI, layout="constrained", FigureClass=Figure)
        else:
            fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        return fig, fig.subplots(nrows, ncols, **kwargs)


def styled(fn):
    """Build the figure of ``fn`` with the book's fonts (:data:`RC`); tick labels made later (at
    draw time) take :data:`FONT` too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with book_rc():
            fig = fn(*args, **kwargs)
        for ax in getattr(fig, "axes", ()):
            ax.tick_params(labelsize=FONT)
        return fig

    return wrapper


def finish(ax, xlabel: str, ylabel: str, title: str | None = None, legend: bool = True, grid: bool = True):
    """Label ``ax`` (x, y and, if given, the title), add its legend (when it has labelled
    artists) and a light grid; returns the axes' figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()
    if grid:
        ax.grid(alpha=0.3)
    return ax.figure


def plain_log_labels(axis) -> None:
    """Label a log ``axis`` (``ax.xaxis`` / ``ax.yaxis``) with plain numbers at 1, 2 and 5 times the
    powers of ten only (0.05, 0.1, 0.2): the default minor labels (3×10⁻¹ beside 4×10⁻¹) run into
    each other on a short axis."""
    from matplotlib import ticker

    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))


def legend_below(fig, ncol: int = 2):
    """Replace the legends of ``fig``'s panels (and the figure's own) by one legend below the
    panels (constrained layout makes room for it): every labelled artist once, in the order the
    panels show them, in ``ncol`` columns (fewer if the legend would be wider than the figure). No
    legend then covers data. Returns the figure."""
    seen = {}
    for ax in fig.axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(name, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for leg in list(fig.legends):
        for handle, text in zip(leg.legend_handles, leg.get_texts()):
            seen.setdefault(text.get_text(), handle)
        leg.remove()
    ncol = min(ncol, len(seen))
    while seen:
        leg = fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol)
        if ncol == 1 or leg.get_window_extent().width <= fig.bbox.width - 0.1 * fig.dpi:  # room for a save's padding
            break
        leg.remove()  # wider than the figure: one column fewer
        ncol -= 1
    return fig


# =============================================================================== tables
#: human column labels of the result fields the chapters' tables show (a Table's ``labels`` adds or
#: overrides; any other field shows with its underscores as spaces)
LABELS = {
    "d_sae": "width", "dead_frac": "dead", "fvu": "FVU", "l0": "L0", "mcc": "MCC", "seconds": "time (s)",
    "signed_recovery": "signed axes recovered", "split_axes": "axes split in two", "latents_on_g": "latents on g",
    "pair_cos": "cos of the pair", "train_preact_sign": "pre-act. sign acc. (train)",
    "test_preact_sign": "pre-act. sign acc. (test)", "test_code_sign": "code sign acc. (test)",
    "coverage_a": "cover a", "coverage_b": "cover b", "mean_u_a": "mean u, a", "mean_u_b": "mean u, b",
    "per_word": "acc. per word", "per_pair": "acc. per pair",
}


def column_label(field: str, labels: Mapping[str, str] | None = None) -> str:
    """The header shown for ``field``: ``labels[field]``, else :data:`LABELS`, else the field with spaces."""
    return (labels or {}).get(field) or LABELS.get(field) or field.replace("_", " ")


class Table:
    """Rows of results (dicts) shown as an HTML table in a notebook and as fixed-width text elsewhere.

    columns: the keys to show, in order (default: every key of the first row whose value is a
    str, int, float, bool or None, so a model object in a row is left out). Floats print with
    ``digits`` decimals unless ``formats`` gives a column its own format spec (``{"seconds":
    ".0f"}``); None and NaN print as ``-``. The book's CSS (``_static/tables.css``) spaces the
    HTML columns.

    key: the columns the page shows (those the prose quotes, so they fit the text column); the
    HTML view then adds the full table in a collapsed ``<details>`` below it. The text view always
    prints every column.

    labels: {field: header} for the headers (default :func:`column_label`: :data:`LABELS`, else the
    field with its underscores as spaces); ``columns``, ``formats`` and ``key`` still name fields.
    """

    def __init__(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 3,
                 formats: Mapping[str, str] | None = None, key: Sequence[str] | None = None,
                 labels: Mapping[str, str] | None = None):
        if not rows:
            raise ValueError("rows is empty; pass at least one dict of results")
        self.rows = [dict(r) for r in rows]
        self.columns = list(columns) if columns is not None else [
            key for key, value in self.rows[0].items() if value is None or isinstance(value, (str, int, float))
        ]
        missing = sorted({c for c in self.columns for r in self.rows if c not in r})
        if missing:
            raise ValueError(f"columns {missing} are missing from some rows (keys of the first row: "
                             f"{sorted(self.rows[0])}); pass columns that every row has")
        self.digits, self.formats = digits, dict(formats or {})
        self.labels = {c: column_label(c, labels) for c in self.columns}
        self.key = list(key) if key is not None else None
        if self.key is not None and (not self.key or set(self.key) - set(self.columns)):
            raise ValueError(f"key={self.key!r} must be a non-empty subset of the columns {self.columns}")

    def _cell(self, column: str, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if column in self.formats:
            return format(value, self.formats[column])
        return f"{value:.{self.digits}f}" if isinstance(value, float) else str(value)

    def cells(self) -> list[list[str]]:
        return [[self._cell(c, r[c]) for c in self.columns] for r in self.rows]

    def __repr__(self) -> str:
        cells = self.cells()
        heads = [self.labels[c] for c in self.columns]
        width = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(heads)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(heads, width))]
        return "\n".join(lines + ["  ".join(v.rjust(w) for v, w in zip(r, width)) for r in cells])

    def _html(self, columns: Sequence[str]) -> str:
        head = "".join(f"<th>{html.escape(self.labels[c])}</th>" for c in columns)
        idx = [self.columns.index(c) for c in columns]
        body = "".join("<tr>" + "".join(f"<td>{html.escape(r[i])}</td>" for i in idx) + "</tr>" for r in self.cells())
        return f'<table class="abstopk-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    def _repr_html_(self) -> str:
        if self.key is None or self.key == self.columns:
            return self._html(self.columns)
        return (self._html(self.key) + f'<details class="abstopk-details"><summary>all {len(self.columns)} columns'
                f"</summary>{self._html(self.columns)}</details>")
