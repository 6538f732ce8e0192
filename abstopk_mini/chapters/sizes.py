"""The book's figure sizes and fonts (re-exported by :mod:`abstopk_mini.chapters.style`).

The book's text column is about 690 px wide and its body text 16 px. Every figure is
:data:`WIDTH` = 6 in wide and saved at :data:`DPI` = 200 (1 200 px, at most 1 400 px), so the
page shows it at 690 / (6 · 72) ≈ 1.6 px per point: :data:`FONT` = 10 pt is 16 px, the body
text size, and no text in a figure is smaller (:data:`RC`). The layout check
(:mod:`abstopk_mini.chapters.layout_check`) holds every drawn figure to these numbers.
"""

__all__ = ["DPI", "WIDTH", "MAX_PX", "FONT", "TITLE", "RC"]

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
#: matplotlib settings every figure is built with (see :func:`abstopk_mini.chapters.style.styled`)
RC = {
    "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": FONT, "axes.titlesize": TITLE, "axes.labelsize": FONT,
    "xtick.labelsize": FONT, "ytick.labelsize": FONT, "legend.fontsize": FONT, "legend.title_fontsize": FONT,
    "figure.titlesize": TITLE, "figure.labelsize": FONT, "lines.linewidth": 1.6, "lines.markersize": 5,
    "legend.frameon": True, "legend.framealpha": 0.85, "legend.edgecolor": "0.85", "legend.borderaxespad": 0.3,
    "axes.grid": False,
}
