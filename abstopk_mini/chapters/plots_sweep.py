"""Figures and tables of sweep results (chapter 09). Records are the dicts of
:func:`abstopk_mini.runs.sweep.read_results`; a metric is named by a dotted path into a record,
e.g. ``"heldout.fvu"`` or ``"concepts.family.sign_latent.coverage_b"``.

    recs = am.runs.sweep.read_results("results/gemma_sweep.jsonl")
    fig = am.chapters.plots_sweep.metric_vs(recs, "d_sae", "heldout.fvu", where={"k": 32, "seed": 0})

A figure made here is a :class:`abstopk_mini.chapters.style.Figure` registered with pyplot; given
``ax``, a function draws into the caller's axes instead. An activation is drawn in its colour
(:mod:`abstopk_mini.chapters.style`) with its own marker, sides a and b of a concept in the side
colours; sizes and fonts come from the same module.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path

from ..nonlinearities import spec
from ..tables import format_table
from . import style

__all__ = ["find_results", "shared_legend", "get", "select", "series", "metric_vs", "fvu_gap", "gender_panels", "survival",
           "neutral_positions", "label_rows", "doubling_curves", "DOUBLING_LABELS", "table", "html_table", "best_bidirectional", "AXIS_LABELS",
           "METRIC_LABELS"]

AXIS_LABELS = {"d_sae": "SAE width (latents)", "k": "k (non-zeros per token)", "layer": "layer",
               "train_tokens": "training tokens"}
METRIC_LABELS = {
    "heldout.fvu": "FVU (held-out)", "heldout.dead_frac": "dead latents (held-out, share)",
    "heldout.bidirectional_frac": "bidirectional share of live latents", "heldout.negative_share": "negative share of activations",
    "splice.loss_recovered_zero": "loss recovered (zero ablation)",
    "concepts.family.sign_accuracy": "gender: sign accuracy (best latent)",
    "concepts.family.threshold_accuracy": "gender: threshold accuracy (best latent)",
    "concepts.family.sign_latent.sign_accuracy": "gender: sign accuracy (sign latent)",
    "concepts.family.sign_latent.bidirectional_share": "gender: bidirectional share (sign latent)",
    "concepts.family.dim_test_accuracy": "gender: DiM accuracy",
}
_LINE = {3: ":", 6: "-", 9: "--", 12: "-."}
_WIDTH_LINE = {512: ":", 1024: "--", 2048: "-.", 4096: "-", 8192: (0, (5, 1))}
_K_LINE = {8: "--", 16: ":", 32: "-", 64: "-."}
POINT_FIELDS = ("layer", "d_sae", "k", "activation", "seed", "variant", "train_tokens")


def find_results(name: str = "results/gemma_sweep.jsonl", start=None) -> Path:
    """The results file ``name`` (relative to the repository root) in the checkout this session can read:
    ``$ABSTOPK_REPO``, the current folder or a parent, or the checkout the package was installed from
    (:func:`abstopk_mini.repo.find`, whose error says how to get one)."""
    from ..repo import find

    return find(name, start)


def get(rec: dict, path: str, default=math.nan):
    """``rec["a"]["b"]...`` for ``path = "a.b..."``; ``default`` when a key is missing."""
    v = rec
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return default
        v = v[part]
    return v


def select(records, where: dict | None = None) -> list[dict]:
    """Records whose fields equal ``where`` (a value may be a tuple/list/set of allowed values)."""
    out = []
    for r in records:
        ok = True
        for key, want in (where or {}).items():
            v = get(r, key, None)
            ok &= v in want if isinstance(want, (tuple, list, set)) else v == want
        if ok:
            out.append(r)
    return out


def series(records, x: str, y: str, group=("activation", "layer")) -> dict:
    """``{group values: (xs, mean ys, min ys, max ys)}``, averaging over records that share x (seeds)."""
    acc = defaultdict(lambda: defaultdict(list))
    for r in records:
        v = get(r, y)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        acc[tuple(get(r, g) for g in group)][get(r, x)].append(float(v))
    out = {}
    for key in sorted(acc, key=str):
        xs = sorted(acc[key])
        ys = [acc[key][v] for v in xs]
        out[key] = (xs, [sum(v) / len(v) for v in ys], [min(v) for v in ys], [max(v) for v in ys])
    return out


def _label(key, group) -> str:
    names = {"layer": "L{}", "k": "k={}", "d_sae": "d_sae={}", "seed": "seed {}"}
    return ", ".join(style.label(v) if g == "activation" else names.get(g, "{}").format(v) for g, v in zip(group, key))


def _style(key, group):
    """Colour and marker by activation; line style by layer, else by width or k (so lines that share
    an activation stay apart when the grouping is activation × width or activation × k)."""
    d = dict(zip(group, key))
    act = d.get("activation")
    color, marker = (style.color(act), style.marker(act)) if act else (style.REFERENCE, "o")
    for field, styles in (("layer", _LINE), ("d_sae", _WIDTH_LINE), ("k", _K_LINE)):
        if field in d:
            return dict(color=color, marker=marker, linestyle=styles.get(d[field], "-"))
    return dict(color=color, marker=marker, linestyle="-")


def _xaxis(ax, x: str, xs) -> None:
    if x in ("d_sae", "k", "train_tokens"):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(xs)))
        ax.set_xticklabels([f"{v // 1000}k" if x == "train_tokens" else str(v) for v in sorted(set(xs))])
        ax.minorticks_off()
    ax.set_xlabel(AXIS_LABELS.get(x, x))


def _axes(ax, height: float = 3.4):
    """``(fig, ax)``: a new full-width figure when ``ax`` is None, else ``(None, ax)`` to draw into
    the caller's axes."""
    if ax is not None:
        return None, ax
    return style.subplots(height=height, pyplot=True)


def _finish(fig, ax, title: str | None, legend: bool):
    """Title, legend, grid; the figure to return (ours, or the one of the caller's axes)."""
    if title:
        ax.set_title(title, fontsize=style.TITLE)  # the book's size also in a caller's axes made outside style.styled
    if legend:
        ax.legend()
    ax.grid(alpha=0.3)
    return fig if fig is not None else ax.figure


@style.styled
def shared_legend(fig, ncol: int = 4):
    """Replace the legends of ``fig``'s axes by one legend below the figure: every labelled artist
    once, in the order the axes show them (a panel's legend inside the plot hides its lines once
    there are more than a few series). Returns the figure."""
    labels = [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]
    long = bool(labels) and max(map(len, labels)) > 14
    return style.legend_below(fig, ncol=min(ncol, 2) if long else ncol)  # long labels: 2 columns fit the page


@style.styled
def metric_vs(records, x: str, y: str, where: dict | None = None, ax=None, group=("activation", "layer"),
              title: str | None = None, hline: float | None = None):
    """One line per group (default: activation × layer) of metric ``y`` against axis ``x``;
    error bars span the seeds when there are several."""
    fig, ax = _axes(ax)
    data = series(select(records, where), x, y, group)
    all_x = []
    for key, (xs, ys, lo, hi) in data.items():
        st = _style(key, group)
        err = [[m - a for m, a in zip(ys, lo)], [b - m for m, b in zip(ys, hi)]]
        ax.errorbar(xs, ys, yerr=err if any(h > l for l, h in zip(lo, hi)) else None, label=_label(key, group),
                    capsize=2, ms=4, **st)
        all_x += xs
    if hline is not None:
        ax.axhline(hline, color="gray", lw=0.8, ls=":")
    if all_x:
        _xaxis(ax, x, all_x)
    ax.set_ylabel(METRIC_LABELS.get(y, y))
    return _finish(fig, ax, title, legend=bool(data))


@style.styled
def fvu_gap(records, x: str, where: dict | None = None, ax=None, metric: str = "heldout.fvu", relative: bool = True,
            base: str = "topk", other: str = "abstopk", title: str | None = None, group=("layer",)):
    """(other − base) / base of ``metric`` (default: the relative FVU gap AbsTopK − TopK) against
    ``x``, one line per ``group`` value (default: per layer), pairing runs that agree on every
    other setting."""
    fig, ax = _axes(ax)
    recs = select(records, where)
    setting = lambda r: tuple(get(r, f) for f in POINT_FIELDS if f != "activation")  # noqa: E731
    b = {setting(r): r for r in recs if r["activation"] == base}
    rows = []
    for r in recs:
        if r["activation"] == other and setting(r) in b:
            v0, v1 = get(b[setting(r)], metric), get(r, metric)
            rows.append({**{f: r[f] for f in POINT_FIELDS}, "gap": (v1 - v0) / v0 if relative else v1 - v0})
    data = series([{**row, "g": {"gap": row["gap"]}} for row in rows], x, "g.gap", group=tuple(group))
    all_x = []
    for i, (key, (xs, ys, lo, hi)) in enumerate(data.items()):
        st = _style(key, group)
        st["color"] = style.SERIES[0 if tuple(group) == ("layer",) else i % len(style.SERIES)]["color"]
        ax.errorbar(xs, [100 * v for v in ys] if relative else ys, ms=4, capsize=2, label=_label(key, group), **st)
        all_x += xs
    ax.axhline(0, color="gray", lw=0.8)
    if all_x:
        _xaxis(ax, x, all_x)
    name = METRIC_LABELS.get(metric, metric).split(" (")[0]
    ax.set_ylabel(f"{other} − {base}: {name}" + (" (% of TopK)" if relative else ""))
    return _finish(fig, ax, title, legend=bool(data))


GENDER_PANELS = (
    ("concepts.family.threshold_accuracy", "threshold accuracy, best latent", 0.5),
    ("concepts.family.sign_latent.sign_accuracy", "sign accuracy, sign latent", 0.5),
    ("concepts.family.sign_latent.coverage_a", "coverage of male words, sign latent", None),
    ("concepts.family.sign_latent.coverage_b", "coverage of female words, sign latent", None),
    ("concepts.family.sign_latent.preact_sign_accuracy", "pre-activation sign accuracy, sign latent", 0.5),
    ("concepts.family.sign_latent.bidirectional_share", "bidirectional share (≥ 0.8 = bidirectional)", 0.8),
)


@style.styled
def gender_panels(records, x: str, where: dict | None = None, concept: str = "family", panels=GENDER_PANELS,
                  suptitle: str | None = None, group=("activation", "layer")):
    """A grid of the concept metrics (default: the gender axis) against ``x``."""
    n = len(panels)
    cols = min(n, 2)  # two panels side by side: room for a title of a few words at the book's font size
    rows = math.ceil(n / cols)
    fig, axes = style.subplots(rows, cols, height=2.3 * rows + 0.9, pyplot=True, squeeze=False)
    for ax, (metric, title, h) in zip(axes.flat, panels):
        metric = metric.replace("concepts.family.", f"concepts.{concept}.")
        metric_vs(records, x, metric, where, ax=ax, title=textwrap.fill(title, 30), hline=h, group=group)
        ax.set_ylabel("")
        leg = ax.get_legend()
        if leg:
            leg.remove()
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4 if max(map(len, labels)) <= 14 else 2))  # long labels: 2 columns fit the page
    return fig


@style.styled
def survival(records, x: str, where: dict | None = None, concept: str = "family", who: str = "sign", ax=None,
             title: str | None = None):
    """Why one side is zero: the median |pre-activation| of the chosen latent on each side against the
    median smallest surviving |z| (the top-k bar), for AbsTopK runs."""
    fig, ax = _axes(ax)
    recs = select(records, where)
    p = f"concepts.{concept}.{who}_survival"
    for path, lab, color in ((f"{p}.median_u_a", "|u| on side a (male)", style.SIDE_COLORS[0]),
                             (f"{p}.median_u_b", "|u| on side b (female)", style.SIDE_COLORS[1]),
                             (f"{p}.median_bar", "top-k bar (smallest kept |z|)", style.REFERENCE)):
        data = series([{**r, "_v": {"v": abs(get(r, path))}} for r in recs], x, "_v.v", group=("layer",))
        for (layer,), (xs, ys, _, _) in data.items():
            ax.plot(xs, ys, marker="o", ms=4, color=color, linestyle=_LINE.get(layer, "-"), label=f"{lab}, L{layer}")
            _xaxis(ax, x, xs)
    ax.set_ylabel("median magnitude\n(scaled units)")  # two lines: fits a panel of a stacked figure
    ax.set_yscale("log")
    return _finish(fig, ax, title, legend=bool(ax.get_legend_handles_labels()[0]))


def label_rows(starts, ends, gap: float = 0.0) -> list[int]:
    """Rows for labels that span ``[starts[i], ends[i]]`` on one axis, so that no two labels of a row
    overlap (with ``gap`` between them): each label, from left to right, takes the lowest row whose
    last label ends before it starts. Returns the row of each label, in the input order."""
    rows: list[int] = [0] * len(starts)
    last_end: list[float] = []
    for i in sorted(range(len(starts)), key=lambda i: starts[i]):
        row = next((r for r, end in enumerate(last_end) if end + gap <= starts[i]), len(last_end))
        if row == len(last_end):
            last_end.append(ends[i])
        else:
            last_end[row] = ends[i]
        rows[i] = row
    return rows


@style.styled
def neutral_positions(record: dict, words, concept: str = "family", ax=None, sides=("male", "female")):
    """Where the neutral words sit on the Difference-in-Means axis (train side a = +1, b = −1).
    Words are stacked in as many rows as their labels need not to overlap (:func:`label_rows`)."""
    fig, ax = _axes(ax, height=2.4)
    c = record["concepts"][concept]
    pos = c.get("neutral_positions") or []
    a, b = style.SIDE_COLORS[:2]
    ax.axvline(1, color=a, lw=1.5)
    ax.axvline(-1, color=b, lw=1.5)
    ax.axvline(c["test_position_a"], color=a, ls="--", lw=1.5)
    ax.axvline(c["test_position_b"], color=b, ls="--", lw=1.5)
    xs = [*pos, -1.0, 1.0, c["test_position_a"], c["test_position_b"]]
    pad = 0.05 * (max(xs) - min(xs))
    ax.set_xlim(min(xs) - pad, max(xs) + 3 * pad)  # room on the right for the last label
    texts = [ax.annotate(w, (p, 0), xytext=(2, 2), textcoords="offset points") for w, p in zip(words, pos)]
    renderer = ax.figure.canvas.get_renderer()
    to_data = ax.transData.inverted()
    spans = [to_data.transform(t.get_window_extent(renderer))[:, 0] for t in texts]
    rows = label_rows(pos, [span[1] for span in spans], gap=pad / 3)
    n_rows = max(rows, default=0) + 1
    step = 1.0 / max(n_rows, 4)
    ys = [r * step for r in rows]
    for t, p, y in zip(texts, pos, ys):
        t.xy = (p, y)
    ax.scatter(pos, ys, color=style.REFERENCE, s=12)
    ax.set_yticks([])
    ax.set_ylim(-0.2, max(1.0, n_rows * step))
    ax.set_xlabel(f"position on the DiM axis ({sides[0]} train mean = +1, {sides[1]} = −1;\ndashed: test means)")
    ax.set_title(f"layer {record['layer']}: neutral words between the sides")
    return fig if fig is not None else ax.figure


#: how :func:`doubling_curves` names the models of :func:`abstopk_mini.coding.doubling.compare_training`
DOUBLING_LABELS = {"abstopk": "AbsTopK (P latents)", "tied_doubled_topk": "TopK, tied doubled [D, −D]",
                   "untied_doubled_topk": "TopK, untied doubled", "topk_2P_random": "TopK, 2P random latents"}


@style.styled
def doubling_curves(hist: dict):
    """The [D, −D] training comparison of :func:`abstopk_mini.coding.doubling.compare_training`, in
    three stacked panels that share the step axis (top: batch FVU; middle: the largest difference
    between the tied doubled TopK's and AbsTopK's reconstructions; bottom: the untied model's
    antipodal cosine and pairs with both halves firing). AbsTopK in its colour, the TopK variants in
    TopK's, told apart by line style; one legend below the panels."""
    fig, axes = style.subplots(3, 1, height=7.6, pyplot=True, sharex=True)
    for (name, ys), st in zip(hist["fvu"].items(), ("-", ":", "--", "-.")):
        act = hist["activation"][name]  # each model's activation: its colour, and the signed one drawn bold
        axes[0].plot(hist["steps"], ys, st, color=style.color(act), label=DOUBLING_LABELS.get(name, name),
                     lw=2 if spec(act).signed else 1.2)
    axes[0].set_yscale("log")
    style.plain_log_labels(axes[0].yaxis)
    axes[0].set_ylabel("FVU (batch)")
    axes[0].set_title("Reconstruction")
    axes[1].plot(hist["steps"], [max(v, 1e-18) for v in hist["max_abs_diff_tied"]], color=style.REFERENCE,
                 label="max |x̂ tied doubled − x̂ AbsTopK|")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("max |difference|")
    axes[1].set_title("Tied doubled TopK = AbsTopK (to rounding)")
    axes[2].plot(hist["steps"], hist["antipodal_cos"], label="untied: mean cos(+atom, −(−atom))", **style.SERIES[0])
    axes[2].plot(hist["steps"], hist["both_used"], label="untied: pairs with both halves firing", **style.SERIES[1])
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_ylabel("share / cosine")
    axes[2].set_title("Untied doubled TopK: the pairs drift apart")
    axes[2].set_xlabel("training step")
    for ax in axes:
        ax.grid(alpha=0.3)
    return shared_legend(fig, ncol=2)


def _sorted_rows(records, columns, where, sort) -> tuple[list, list]:
    """``(cols, records)`` of :func:`table` / :func:`html_table`: each column as ``(path, header)``
    (a plain path is headed by its last part), and the selected records sorted by ``sort`` (numbers
    numerically, before text)."""
    cols = [(c, c.split(".")[-1]) if isinstance(c, str) else c for c in columns]

    def key(r):
        vals = [get(r, s, "") for s in sort]
        return tuple((0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v)) for v in vals)

    return cols, sorted(select(records, where), key=key)


def table(records, columns, where: dict | None = None, sort=("layer", "d_sae", "k", "activation", "seed"), digits: int = 3) -> str:
    """A markdown table of ``columns`` (dotted paths; a tuple ``(path, header)`` renames), rows
    sorted by the ``sort`` fields (numbers numerically, before text; ``sort=()`` keeps the order)."""
    cols, rows = _sorted_rows(records, columns, where, sort)
    cell = lambda v: f"{v:.{digits}g}" if isinstance(v, float) else str(v)  # noqa: E731
    return format_table(rows, cols, style="markdown", cell=cell, get=lambda r, path: get(r, path, ""))


def html_table(records, columns, where: dict | None = None, sort=("layer", "d_sae", "k", "activation", "seed"),
               digits: int = 3, key=None):
    """:func:`table` as a :class:`~abstopk_mini.chapters.style.Table` for the page: ``key`` (headers)
    are the columns shown, the full table folds below them; floats keep ``digits`` significant digits."""
    from .style import Table

    cols, recs = _sorted_rows(records, columns, where, sort)

    def cell(v):
        if isinstance(v, float):
            return None if math.isnan(v) else f"{v:.{digits}g}"
        return v

    rows = [{head: cell(get(r, path, "")) for path, head in cols} for r in recs]
    return Table(rows, [head for _, head in cols], key=key)


def best_bidirectional(records, concept: str = "family", activations=("abstopk", "batchabstopk", "absjumprelu")):
    """The record whose sign latent has the highest test bidirectional share on ``concept``, and that share."""
    recs = [r for r in records if r["activation"] in activations and concept in r.get("concepts", {})]
    if not recs:
        return None, math.nan
    best = max(recs, key=lambda r: get(r, f"concepts.{concept}.sign_latent.bidirectional_share"))
    return best, get(best, f"concepts.{concept}.sign_latent.bidirectional_share")
