r"""The book's figure check: a figure whose texts overlap, whose legend hides data, whose panels are
slivers or whose fonts are not the book's sizes is not saved.

:class:`abstopk_mini.chapters.style.Figure` runs :func:`check_figure` at the end of every draw: on
``savefig``, on ``_repr_png_`` and when the IPython inline backend shows a pyplot figure
(``plt.show()`` or the end of a cell, both of which go through ``canvas.print_figure`` and
``Figure.draw``). A failure raises one :class:`ValueError` naming the figure and every problem; in a
notebook IPython prints it as an error output in place of the figure, which nbmake and
tests/test_book.py fail on.

What is measured (in display pixels, with the renderer of the draw, at the dpi of the save):

* **texts**: titles (left/centre/right), suptitle and other figure texts, axis labels, offset texts,
  the tick labels that are drawn (major and minor, inside the view), legend entries and titles,
  annotations and ``ax.text``; each as its ``get_window_extent(renderer)`` (a rotated text, such as a
  tick label at 45°, as its rotated rectangle). Two of them overlap when their boxes share more than
  :data:`OVERLAP_PX` pixels both across and down (along both sides of a rotated box); a legend's frame
  counts as a box for every text that is not in that legend. Tick labels of one axis that run into
  each other ("3×10³" over "4×10³") are two texts like any others.
* **legends over data**: every legend (of an axes or of the figure) against the data of every
  panel: the segments of lines (and their markers' centres), scatter points, filled areas, error
  bars, bars and histogram patches drawn in data coordinates. Reference lines in axes
  coordinates (``axhline``, ``axvline``) are not data. The legend's frame is shrunk by
  :data:`LEGEND_PX` on each side first, so data that only touches its border passes, and cut to
  the panel for artists that the panel clips.
* **panels**: every visible axes that shows its axis (colorbars aside) is at least
  :data:`MIN_PANEL_IN` inches wide and tall: :data:`MIN_PANEL_IN` × dpi pixels at the saved dpi
  (150 px at the book's 200 dpi), so no panel is squashed to a sliver.
* **fonts**: every text is :data:`~abstopk_mini.chapters.sizes.FONT` or
  :data:`~abstopk_mini.chapters.sizes.TITLE` points (± :data:`FONT_PT`); the figure is
  drawn :data:`~abstopk_mini.chapters.sizes.WIDTH` inches wide (± :data:`WIDTH_IN`; a save with
  ``bbox_inches="tight"`` draws it at its cropped size, so a legend sticking out of the figure
  fails too), so every saved PNG has the same width and the page, which scales each figure to its
  text column, shows every figure's text at the same size.

Tolerances are a pixel or two: text boxes are the font's full line height, so two tick labels one
line apart touch without overlapping; one pixel is below what a reader sees.
"""

from __future__ import annotations

import numpy as np
from matplotlib.collections import Collection
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from . import sizes

__all__ = ["OVERLAP_PX", "LEGEND_PX", "MIN_PANEL_IN", "FONT_PT", "WIDTH_IN",
           "figure_texts", "layout_problems", "check_figure"]

#: two text boxes may share this many pixels (across and down) without counting as an overlap
OVERLAP_PX = 1.0
#: a legend's frame is shrunk by this many pixels on each side before data is looked for inside it
LEGEND_PX = 2.0
#: smallest width and height of a panel, inches (150 px at the book's 200 dpi)
MIN_PANEL_IN = 0.75
#: a font size may differ from the book's sizes by this many points (rounding only)
FONT_PT = 0.05
#: the drawn figure's width (the saved one: ``bbox_inches="tight"`` crops it to what is drawn) may
#: differ from the book's width by this many inches (2.5 %: fonts show within a quarter point)
WIDTH_IN = 0.15


def _shown(t: Text) -> bool:
    return t.get_visible() and bool(t.get_text().strip()) and (t.get_alpha() is None or t.get_alpha() > 0)


def _panel_name(ax, i: int) -> str:
    title = next((t.get_text() for t in (ax.title, *[c for c in ax.get_children() if isinstance(c, Text)])
                  if _shown(t)), "")
    return f"panel {i + 1}" + (f" {title!r}" if title else "")


def _drawn_ticks(axis):
    """The tick labels of ``axis`` that the last draw showed: major and minor, inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    tr = axis.get_transform()
    lo_t, hi_t = sorted(tr.transform(np.array([lo, hi])))
    eps = 1e-9 * max(abs(hi_t - lo_t), 1e-300)
    out = []
    for locs, ticks in ((axis.get_majorticklocs(), axis.get_major_ticks), (axis.get_minorticklocs(), axis.get_minor_ticks)):
        if len(locs) == 0:
            continue
        for tick in ticks(len(locs)):
            loc = tr.transform(np.array([tick.get_loc()]))[0]
            if lo_t - eps <= loc <= hi_t + eps:
                out += [lab for lab in (tick.label1, tick.label2) if _shown(lab)]
    return out


def figure_texts(fig) -> list[tuple[str, Text, object]]:
    """``(name, text, legend or None)`` for every text the figure shows (see the module docstring)."""
    out = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        name = _panel_name(ax, i)
        for t in ax.get_children():
            if isinstance(t, Text) and _shown(t):
                out.append((f"{name}: text {t.get_text()!r}", t, None))
        if ax.axison:
            for axis, xy in ((ax.xaxis, "x"), (ax.yaxis, "y")):
                for t, what in ((axis.label, "label"), (axis.get_offset_text(), "offset text")):
                    if _shown(t):
                        out.append((f"{name}: {xy} {what} {t.get_text()!r}", t, None))
                out += [(f"{name}: {xy} tick label {t.get_text()!r}", t, None) for t in _drawn_ticks(axis)]
        leg = ax.get_legend()
        if leg is not None and leg.get_visible():
            out += _legend_texts(leg, f"{name}: legend")
    out += [(f"figure text {t.get_text()!r}", t, None) for t in fig.texts if _shown(t)]
    for leg in fig.legends:
        if leg.get_visible():
            out += _legend_texts(leg, "figure legend")
    return out


def _legend_texts(leg: Legend, name: str):
    texts = [*leg.get_texts(), leg.get_title()]
    return [(f"{name} entry {t.get_text()!r}", t, leg) for t in texts if _shown(t)]


def _legends(fig):
    legs = [(_panel_name(ax, i) + ": legend", ax.get_legend()) for i, ax in enumerate(fig.axes) if ax.get_visible()]
    legs += [("figure legend", leg) for leg in fig.legends]
    return [(n, leg) for n, leg in legs if leg is not None and leg.get_visible()]


def _overlap(a: Bbox, b: Bbox) -> float:
    """The smaller of the shared width and the shared height of two boxes (≤ 0: apart)."""
    return min(min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0))


def _corners(t: Text, box: Bbox, renderer) -> np.ndarray | None:
    """The 4 corners (display px) of a text rotated by an angle that is not a multiple of 90°, else None:
    a rotated rectangle is centred where its axis-aligned box is, with its unrotated size."""
    angle = t.get_rotation() % 90
    if angle < 1e-6 or angle > 90 - 1e-6:
        return None
    rotation = t.get_rotation()
    t.set_rotation(0)
    flat = t.get_window_extent(renderer)
    t.set_rotation(rotation)
    a = np.deg2rad(rotation)
    u, v = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    c = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    return np.array([c + sx * flat.width / 2 * u + sy * flat.height / 2 * v for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def _rect(box: Bbox) -> np.ndarray:
    return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])


def _sat_overlap(p: np.ndarray, q: np.ndarray) -> float:
    """How far two convex quadrilaterals overlap: the smallest overlap of their projections on the
    normals of their sides (≤ 0: apart). For two axis-aligned boxes this is :func:`_overlap`."""
    best = np.inf
    for poly in (p, q):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            n = np.array([-edge[1], edge[0]]) / np.hypot(*edge)
            a, b = p @ n, q @ n
            best = min(best, min(a.max(), b.max()) - max(a.min(), b.min()))
    return best


def _data_hits(ax, box: Bbox) -> list[str]:
    """What of ``ax``'s data (in data coordinates) lies inside ``box`` (display pixels)."""
    hits = []
    inner = Bbox.intersection(box, ax.bbox) if box is not None else None
    for artist in (*ax.lines, *ax.collections, *ax.patches):
        if not artist.get_visible() or not artist.get_transform().contains_branch(ax.transData):
            if not (isinstance(artist, Collection) and artist.get_offset_transform().contains_branch(ax.transData)):
                continue
        clip = inner if artist.get_clip_on() else box
        if clip is None or clip.width <= 0 or clip.height <= 0:
            continue
        label = artist.get_label()
        what = f"{type(artist).__name__}" + (f" {label!r}" if label and not label.startswith("_") else "")
        if isinstance(artist, Line2D):
            tr = artist.get_transform()
            if artist.get_linestyle() not in ("None", "none", "", " ") and len(artist.get_xydata()) > 1:
                if tr.transform_path(artist.get_path()).intersects_bbox(clip, filled=False):
                    hits.append(what)
                    continue
            if artist.get_marker() not in (None, "None", "none", "", " "):
                pts = tr.transform(artist.get_xydata())
                if _inside(pts, clip):
                    hits.append(what)
        elif isinstance(artist, Collection):
            offsets = np.asarray(artist.get_offsets())
            if len(offsets) and artist.get_offset_transform().contains_branch(ax.transData):
                if _inside(artist.get_offset_transform().transform(offsets), clip):
                    hits.append(what)
            else:
                tr = artist.get_transform()
                filled = len(artist.get_facecolors()) > 0 and np.any(np.asarray(artist.get_facecolors())[:, 3] > 0)
                if any(tr.transform_path(p).intersects_bbox(clip, filled=bool(filled)) for p in artist.get_paths()):
                    hits.append(what)
        elif isinstance(artist, Patch):
            path = artist.get_transform().transform_path(artist.get_path())
            if path.intersects_bbox(clip, filled=artist.get_fill()):
                hits.append(what)
    return hits


def _inside(pts: np.ndarray, box: Bbox) -> bool:
    pts = pts[np.isfinite(pts).all(axis=1)]
    return bool(np.any((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)))


def layout_problems(fig, renderer) -> list[str]:
    """Every problem of the drawn figure ``fig`` (see the module docstring), as sentences; [] when
    it passes. ``renderer`` is the one that drew it (its dpi is the saved dpi)."""
    problems = []
    dpi = fig.dpi
    texts = figure_texts(fig)
    boxes = [t.get_window_extent(renderer) for _, t, _ in texts]
    corners = [_corners(t, box, renderer) for (_, t, _), box in zip(texts, boxes)]
    legends = _legends(fig)
    frames = [leg.get_frame().get_window_extent(renderer) for _, leg in legends]

    # texts against texts, and against the frames of the legends they are not in
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if texts[i][2] is not None and texts[i][2] is texts[j][2]:
                continue  # two entries of one legend: matplotlib lays them out
            shared = _overlap(boxes[i], boxes[j])
            if shared > OVERLAP_PX and (corners[i] is not None or corners[j] is not None):
                shared = _sat_overlap(*(_rect(boxes[k]) if corners[k] is None else corners[k] for k in (i, j)))
            if shared > OVERLAP_PX:
                problems.append(f"{texts[i][0]} overlaps {texts[j][0]}")
        for (lname, leg), frame in zip(legends, frames):
            if texts[i][2] is not leg and _overlap(boxes[i], frame) > OVERLAP_PX:
                problems.append(f"{texts[i][0]} is under the {lname}")

    # legends over data
    for (lname, leg), frame in zip(legends, frames):
        inner = Bbox.from_extents(frame.x0 + LEGEND_PX, frame.y0 + LEGEND_PX, frame.x1 - LEGEND_PX, frame.y1 - LEGEND_PX)
        for i, ax in enumerate(fig.axes):
            if ax.get_visible():
                hits = _data_hits(ax, inner)
                if hits:
                    problems.append(f"the {lname} covers data of {_panel_name(ax, i)}: {', '.join(sorted(set(hits)))}")

    # panels
    min_px = MIN_PANEL_IN * dpi
    for i, ax in enumerate(fig.axes):
        if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>":
            w, h = ax.bbox.width, ax.bbox.height
            if w < min_px or h < min_px:
                problems.append(f"{_panel_name(ax, i)} is {w:.0f} × {h:.0f} px at {dpi:g} dpi; panels need at least "
                                f"{min_px:.0f} px ({MIN_PANEL_IN:g} in) each way")

    # fonts and width
    fonts = (sizes.FONT, sizes.TITLE)
    for name, t, _ in texts:
        size = t.get_fontsize()
        if min(abs(size - s) for s in fonts) > FONT_PT:
            problems.append(f"{name} is {size:g} pt; the book's figures use {sizes.FONT} pt (text) and {sizes.TITLE} pt (titles)")
    if abs(fig.get_figwidth() - sizes.WIDTH) > WIDTH_IN:
        problems.append(f"the figure is drawn {fig.get_figwidth():.2f} in wide; every book figure is style.WIDTH = "
                        f"{sizes.WIDTH:g} in, so that the page shows its fonts at the same size as the others'")
    return list(dict.fromkeys(problems))


def check_figure(fig, renderer) -> None:
    """Raise a :class:`ValueError` naming ``fig`` and every layout problem :func:`layout_problems` finds."""
    problems = layout_problems(fig, renderer)
    if problems:
        title = fig.get_suptitle() or next((ax.get_title() for ax in fig.axes if ax.get_title()), "") or "untitled"
        raise ValueError(f"figure {title!r} fails the book's layout check ({len(problems)} problem"
                         f"{'s' if len(problems) > 1 else ''}): " + "; ".join(problems) +
                         ". Move the legend out of the data (loc='outside lower center' or a free corner), give "
                         "panels room (fewer per row, a taller figure), or use fewer tick labels.")
