r"""The book's look, in one place: colours and labels, figure sizes and fonts, the one Figure class
and the one Table. Every figure and table of :mod:`abstopk_mini.chapters` is built from here.

Colours
    * one colour and label per activation, read from :data:`abstopk_mini.nonlinearities.SPECS`
      (AbsTopK red, TopK blue, ...): :data:`ACTIVATION_COLORS`, :data:`ACTIVATION_LABELS`;
    * the methods of the theory chapters that are not activations (ISTA, FISTA, IHT, one step,
      the Lasso): :data:`METHOD_COLORS` (with the activations), in hues no activation uses;
    * the two sides of a concept axis and the neutral words (male / female / neutral):
      :data:`GENDER_COLORS` (:data:`SIDE_COLORS` as a tuple, :data:`SIDE_LIGHT` for token
      highlights), distinct from every method colour and from the dashboards' sign colours
      (:data:`abstopk_mini.dashboard.html.SIGN_COLORS`).

    Distinct means a CIEDE2000 colour difference of at least 15 (tests/test_plots_style.py), and
    for the gender sides also a hue at least 45° from AbsTopK's and TopK's
    (tests/test_layout_check.py): a navy beside TopK's blue reads as "blue" whatever its ΔE.

Sizes
    The book's text column is about 690 px wide and its body text 16 px. Every figure is
    :data:`WIDTH` = 6 in wide and saved at :data:`DPI` = 200 (1 200 px, at most 1 400 px), so the
    page shows it at 690 / (6 · 72) ≈ 1.6 px per point: :data:`FONT` = 10 pt is 16 px, the body
    text size, and no text in a figure is smaller (:data:`RC`, applied by :func:`styled`).

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

from ..nonlinearities import SPECS
from .layout_check import check_figure

__all__ = [
    "DPI", "WIDTH", "MAX_PX", "FONT", "TITLE", "RC",
    "ACTIVATION_COLORS", "ACTIVATION_LABELS", "METHOD_COLORS", "GENDER_COLORS", "SIDE_COLORS", "SIDE_LIGHT",
    "REFERENCE", "BAND", "SERIES", "color", "label", "line_style", "rgb",
    "Figure", "subplots", "styled", "book_rc", "finish", "legend_below", "plain_log_labels", "Table",
]

# =============================================================================== sizes
#: dots per inch of every saved PNG
DPI = 200
#: width of every figure, inches: the text column at :data:`DPI` (1 200 px), shown at ~690 px
WIDTH = 6.0
#: widest PNG the book accepts (tests/test_book.py)
MAX_PX = 1400
#: font size of all text in a figure, points (16 px at page width, the body text)
FONT = 10
#: titles and suptitles, points
TITLE = 11
#: matplotlib settings every figure is built with (see :func:`styled`)
RC = {
    "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": FONT, "axes.titlesize": TITLE, "axes.labelsize": FONT,
    "xtick.labelsize": FONT, "ytick.labelsize": FONT, "legend.fontsize": FONT, "legend.title_fontsize": FONT,
    "figure.titlesize": TITLE, "figure.labelsize": FONT, "lines.linewidth": 1.6, "lines.markersize": 5,
    "legend.frameon": True, "legend.framealpha": 0.85, "legend.edgecolor": "0.85", "legend.borderaxespad": 0.3,
    "axes.grid": False,
}

# =============================================================================== colours
#: one colour per activation (its spec's), so a method has the same colour in every chapter
ACTIVATION_COLORS = {name: s.color for name, s in SPECS.items()}
#: how figures name an activation ("abstopk" -> "AbsTopK")
ACTIVATION_LABELS = {name: s.label for name, s in SPECS.items()}
_FISTA = "#4d004b"
#: the activations, plus the sparse-coding methods of chapters 1-3 (hues no activation uses)
METHOD_COLORS = {
    **ACTIVATION_COLORS,
    "one step": "#222222", "IHT, η=1": "#bd9e39", "IHT, η=1/L": "#6b6b00",
    "ISTA": "#e7298a", "FISTA": _FISTA, "Lasso (FISTA)": _FISTA,
}
#: side a (male), side b (female) and neutral words; no method or dashboard sign colour is near, and
#: neither side shares a hue with AbsTopK or TopK, whose colours stand beside them in chapters 7-9
#: (green and orchid: at least 45° of CIE LCh hue from AbsTopK red and TopK blue)
GENDER_COLORS = {"male": "#448866", "female": "#e8a0cc", "neutral": "#c7c7c7"}
#: the same as a tuple (side a, side b, neutral), for concept axes other than gender too
SIDE_COLORS = (GENDER_COLORS["male"], GENDER_COLORS["female"], GENDER_COLORS["neutral"])
#: light versions of side a and side b, for backgrounds under text (token highlights)
SIDE_LIGHT = ("#a6dba0", GENDER_COLORS["female"])
#: reference lines and markers that are not a method (zero lines, "no intervention", DiM)
REFERENCE = "#000000"
#: shaded ranges (the bidirectional band)
BAND = "#2ca02c"
#: line styles for series that are not methods (layer statistics, token groups): black and greys,
#: told apart by marker and dash, so they never read as a method's colour
SERIES = (
    {"color": "#000000", "marker": "o", "ls": "-"},
    {"color": "#5a5a5a", "marker": "s", "ls": "--"},
    {"color": "#a0a0a0", "marker": "^", "ls": ":"},
)


_BY_PREFIX = {**METHOD_COLORS, **{s.label: s.color for s in SPECS.values()}}


def color(name: str, default: str = REFERENCE) -> str:
    """The colour of a method named by its activation (``"abstopk"``, ``"abstopk-k32"``), its
    label (``"AbsTopK latent 398"``) or a key of :data:`METHOD_COLORS` (``"ISTA, λ=0.05"``):
    the longest name that starts ``name`` wins (``"IHT, η=1/L"`` before ``"IHT, η=1"``);
    ``default`` when none does."""
    for key in sorted(_BY_PREFIX, key=len, reverse=True):
        if name.startswith(key):
            return _BY_PREFIX[key]
    return default


def label(name: str) -> str:
    """The display name of an activation (``"abstopk"`` -> ``"AbsTopK"``); other names unchanged."""
    return ACTIVATION_LABELS.get(name, name)


def line_style(name: str) -> dict:
    """Line keywords for an activation (or ``"abstopk-k32"``): its colour, dashed when signed."""
    spec = SPECS.get(name.split("-")[0])
    return {"color": color(name), "ls": "--" if spec is not None and spec.signed else "-"}


def rgb(hex_color: str) -> str:
    """``"#393b79"`` -> ``"57,59,121"`` (for CSS ``rgba(...)``)."""
    h = hex_color.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"hex_color must look like '#rrggbb'; got {hex_color!r}")
    return ",".join(str(int(h[i:i + 2], 16)) for i in (0, 2, 4))


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
