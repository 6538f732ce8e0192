"""Figures of chapters 5 (activations) and 6 (training SAEs) on a real model.

Every function takes plain numbers (dicts and tensors computed by :mod:`abstopk_mini.lm.stats`,
:func:`abstopk_mini.evaluate.evaluate_sae`, :func:`abstopk_mini.lm.splice.evaluate_many` or a
training history) and returns a matplotlib Figure with labelled axes and a title.

The figure is a :class:`abstopk_mini.chapters.style.Figure` registered with pyplot (the chapters
let the inline backend show it). An SAE is drawn in its activation's colour, dashed when the
activation is signed; series that are not SAEs (layer statistics, token groups) in black and greys
(:data:`abstopk_mini.chapters.style.SERIES`).
"""

from __future__ import annotations

import math

import torch
from matplotlib.ticker import FormatStrFormatter, NullLocator

from . import style

__all__ = [
    "sae_labels", "corpus_table", "layer_table", "layer_stats", "norm_histograms", "position_profile", "training_curves", "frontier", "k_comparison", "k_table",
    "firing_histograms", "negative_share_histograms",
]


def _plain_log(ax, axis: str = "y", ticks=None) -> None:
    """Log-scale axis labelled with plain numbers (0.2, 16) instead of powers; ``ticks``: only these."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    if ticks is not None:
        (ax.set_yticks if axis == "y" else ax.set_xticks)(list(ticks))
        a.set_minor_locator(NullLocator())
    a.set_major_formatter(FormatStrFormatter("%g"))
    a.set_minor_formatter(FormatStrFormatter("%g") if ticks is None else FormatStrFormatter(""))


def sae_labels(names) -> dict[str, str]:
    """Display labels of SAE run names (``"abstopk-k32"`` -> ``"AbsTopK"``): the activation's label,
    with ``k = ...`` added only when the names do not all share one k. Other names stay as they are."""
    names = list(names)
    runs = {n: p for n in names if len(p := n.rsplit("-k", 1)) == 2 and p[1].isdigit()}  # name -> (activation, k)
    one_k = len({k for _, k in runs.values()}) <= 1
    return {n: style.label(runs[n][0]) + ("" if one_k else f", k = {runs[n][1]}") if n in runs else n for n in names}


def _log_ticks(lo: float, hi: float) -> list[float]:
    """The 1-2-5 values between lo and hi (at least two), for a readable log axis."""
    vals = [m * 10.0 ** e for e in range(-6, 7) for m in (1, 2, 5)]
    inside = [v for v in vals if lo <= v <= hi]
    if len(inside) > 6:  # a range of several decades: the powers of ten alone
        inside = [v for v in inside if f"{v:.0e}".startswith("1")]
    if len(inside) >= 2:
        return inside
    below, above = max([v for v in vals if v < lo], default=lo), min([v for v in vals if v > hi], default=hi)
    return sorted(set([below, *inside, above]))


def _series(i: int, **kw) -> dict:
    return {**style.SERIES[i % len(style.SERIES)], **kw}


# --------------------------------------------------------------------------- chapter 5
#: (key of a :func:`abstopk_mini.lm.stats.layer_table` row, column header, format) of :func:`layer_table`
LAYER_COLUMNS = (
    ("layer", "layer", "d"), ("norm_median", "median ‖x‖", ",.0f"), ("norm_q01", "1 %", ",.0f"),
    ("norm_q99", "99 %", ",.0f"), ("bos_norm", "BOS ‖x‖", ",.0f"), ("bos_ratio", "BOS / median", ".1f"),
    ("mean_share", "mean share", ".3f"), ("top_dim", "top coord.", "d"), ("top_dim_share", "its share", ".3f"),
    ("kurtosis_max", "max kurtosis", ".0f"), ("participation_ratio", "PR", ".1f"),
)
#: the columns :func:`layer_table` shows in the page (the 1-99 % band folds below with the rest)
LAYER_KEY = ("layer", "median ‖x‖", "BOS ‖x‖", "BOS / median", "mean share", "top coord.", "its share",
             "max kurtosis", "PR")


def layer_table(rows: list[dict]) -> style.Table:
    """rows: :func:`abstopk_mini.lm.stats.layer_table`, one per layer. The table of chapter 5:
    median token norm and its 1-99 % band, the BOS norm and its ratio to the median, the mean
    vector's share of the mean squared norm, the top coordinate and its share, the largest excess
    kurtosis of a coordinate and the participation ratio (:data:`LAYER_COLUMNS`); the page shows
    :data:`LAYER_KEY` and folds the full table below."""
    if not rows:
        raise ValueError("rows is empty; pass abstopk_mini.lm.stats.layer_table(...) of at least one layer")
    out = [{head: r[key] for key, head, _ in LAYER_COLUMNS} for r in rows]
    return style.Table(out, formats={head: f for _, head, f in LAYER_COLUMNS}, key=list(LAYER_KEY))


def corpus_table(rows: list[dict]) -> style.Table:
    """rows: :func:`abstopk_mini.lm.stats.corpus_table`. Documents and tokens per source on each side
    of the train / held-out split, counts with thousands separators."""
    if not rows:
        raise ValueError("rows is empty; pass abstopk_mini.lm.stats.corpus_table(...)")
    heads = {"source": "source", "train_docs": "train docs", "train_tokens": "train tokens",
             "heldout_docs": "held-out docs", "heldout_tokens": "held-out tokens"}
    out = [{head: r[key] for key, head in heads.items()} for r in rows]
    return style.Table(out, formats={h: ",d" for h in list(heads.values())[1:]})


def _legend_right(ax) -> None:
    """The panel's legend to its right, outside the data (constrained layout makes room)."""
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))


@style.styled
def layer_stats(rows: list[dict], title: str = "Residual stream, layer by layer"):
    """rows: :func:`abstopk_mini.lm.stats.layer_table`. Four stacked panels against the layer
    each with its legend to its right, outside the data: token norms (median,
    1-99 % band, BOS), mean share and top-coordinate shares (of the mean squared norm and, if the
    rows have ``top_var_share``, of the variance), max excess kurtosis, and participation ratio."""
    layers = [r["layer"] for r in rows]
    fig, axes = style.subplots(4, 1, height=9.0, pyplot=True)
    a = axes[0]
    a.fill_between(layers, [r["norm_q01"] for r in rows], [r["norm_q99"] for r in rows], color="0.85",
                   label="tokens, 1–99 %")
    a.plot(layers, [r["norm_median"] for r in rows], label="tokens, median", **_series(0))
    a.plot(layers, [r["bos_norm"] for r in rows], label="BOS position", **_series(1))
    a.set_yscale("log")
    style.finish(a, "layer", "‖x‖ (residual norm)", "Norms", legend=False)
    a = axes[1]
    a.plot(layers, [r["mean_share"] for r in rows], label="‖mean‖² / mean ‖x‖²", **_series(0))
    a.plot(layers, [r["top_dim_share"] for r in rows], label="top coordinate's\nshare of mean ‖x‖²", **_series(1))
    if all("top_var_share" in r for r in rows):
        a.plot(layers, [r["top_var_share"] for r in rows], label="top coordinate's\nshare of tr Σ", **_series(2))
    a.set_ylim(0, 1.02)
    style.finish(a, "layer", "share", "Mean vector, top coordinate", legend=False)
    a = axes[2]
    a.plot(layers, [r["kurtosis_max"] for r in rows], label="max over\ncoordinates", **_series(0))
    a.plot(layers, [r["kurtosis_median"] for r in rows], label="median over\ncoordinates", **_series(1))
    a.set_yscale("symlog", linthresh=1)
    style.finish(a, "layer", "excess kurtosis", "Heavy-tailed coordinates", legend=False)
    a = axes[3]
    a.plot(layers, [r["participation_ratio"] for r in rows], label="(tr Σ)² / tr Σ²", **_series(0))
    a.set_yscale("log")
    style.finish(a, "layer", "participation ratio", "Directions holding the variance", legend=False)
    for a in axes:
        _legend_right(a)
    fig.align_ylabels(axes)
    fig.suptitle(title)
    return fig


@style.styled
def norm_histograms(groups: dict[str, torch.Tensor], title: str = "Token norms", bins: int = 60):
    """groups: label -> 1-D tensor of norms. Overlaid histograms on a log x axis (density)."""
    values = [v.double() for v in groups.values() if len(v)]
    if not values:
        raise ValueError("groups holds no norms; pass at least one non-empty tensor")
    fig, ax = style.subplots(height=3.4, pyplot=True)
    lo = min(float(v[v > 0].min()) for v in values)
    hi = max(float(v.max()) for v in values)
    edges = torch.logspace(math.log10(lo), math.log10(hi * 1.0001), bins + 1).numpy()
    for i, (label, v) in enumerate(groups.items()):
        if len(v):
            color = style.SERIES[i % len(style.SERIES)]["color"]
            ax.hist(v.double().numpy(), bins=edges, density=True, histtype="stepfilled", alpha=0.35, color=color,
                    edgecolor=color, label=f"{label} (n={len(v):,})")
    ax.set_xscale("log")
    _plain_log(ax, "x", _log_ticks(*ax.get_xlim()))  # 1-2-5 values in view only: minor labels (3×10³, 4×10³) collide
    return style.finish(ax, "‖x‖ (residual norm)", "density", title)


@style.styled
def position_profile(curves: dict[str, torch.Tensor], ylabel: str = "mean ‖x‖", title: str = "Norm by position"):
    """curves: label -> [n_positions] values (NaN where absent), plotted against the position."""
    fig, ax = style.subplots(height=3.4, pyplot=True)
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(range(len(c)), c.double().numpy(), label=label, **_series(i, marker=".", ls="-"))
    return style.finish(ax, "position in the context (BOS = 0)", ylabel, title)


# --------------------------------------------------------------------------- chapter 6
@style.styled
def training_curves(histories: dict[str, dict], title: str = "Training"):
    """histories: name ('topk-k32') -> a train_sae history. FVU and L0 (log scales) and the dead
    share against the training tokens (millions); lines labelled by :func:`sae_labels`."""
    fig, axes = style.subplots(1, 3, height=3.0, pyplot=True)
    labels = sae_labels(histories)
    for name, h in histories.items():
        tokens = [t / 1e6 for t in h["tokens"]]
        axes[0].plot(tokens, h["fvu"], label=labels[name], **style.line_style(name))
        axes[1].plot(tokens, h["l0"], label=labels[name], **style.line_style(name))
        axes[2].plot(tokens, [100 * d for d in h["dead_frac"]], label=labels[name], **style.line_style(name))
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    l0 = [v for h in histories.values() for v in h["l0"] if v > 0]
    _plain_log(axes[1], "y", _log_ticks(min(l0), max(l0)) if l0 else None)
    for a, ylabel, t in zip(axes, ("FVU (training batch)", "L0 (training batch)", "dead latents (%)"),
                            ("Reconstruction", "Sparsity", "Dead latents")):
        style.finish(a, "training tokens (M)", ylabel, t, legend=False)
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(len(histories), 4))
    return fig


@style.styled
def frontier(rows: list[dict], title: str = "Reconstruction and loss recovered vs sparsity"):
    """rows: dicts with activation, l0, fvu and (optionally) loss_recovered_mean or loss_recovered (zero
    ablation). Left: FVU vs L0; right: loss recovered vs L0 (against mean ablation when every row has
    it). Points of one activation at several k are joined."""
    lr_key = next((key for key in ("loss_recovered_mean", "loss_recovered") if all(key in r for r in rows)), None)
    fig, axes = style.subplots(1, 2 if lr_key else 1, height=3.4, pyplot=True, squeeze=False)
    panels = [("fvu", "FVU (held-out)", "FVU (lower is better)")]
    if lr_key:
        panels.append((lr_key, f"loss recovered ({'mean' if lr_key.endswith('mean') else 'zero'} abl.)",
                       "Loss recovered (higher)"))
    for a, (key, ylabel, t) in zip(axes[0], panels):
        for act in dict.fromkeys(r["activation"] for r in rows):
            pts = sorted((r["l0"], r[key]) for r in rows if r["activation"] == act)
            a.plot(*zip(*pts), marker="o", label=style.label(act), **style.line_style(act))
        a.set_xscale("log", base=2)
        style.finish(a, "L0 (held-out)", ylabel, t, legend=False)
    axes[0][0].set_yscale("log")
    fvu = [r["fvu"] for r in rows]
    _plain_log(axes[0][0], "y", _log_ticks(min(fvu), max(fvu)))
    fig.suptitle(title)
    n = len(dict.fromkeys(r["activation"] for r in rows))
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=min(n, 4))
    return fig


def k_table(rows: list[dict], base: str = "topk", signed: str = "abstopk") -> style.Table:
    """rows: dicts with activation, k, fvu, loss_recovered and dead_frac (chapter 6's held-out rows).
    One row per k at which both ``base`` and ``signed`` were trained: their FVUs, the gap
    100 (FVU_signed / FVU_base - 1) in %, their loss recovered and dead shares (%), columns named
    by :func:`abstopk_mini.chapters.style.label`."""
    by = {(r["activation"], r["k"]): r for r in rows}
    ks = sorted(k for a, k in by if a == base and (signed, k) in by)
    if not ks:
        raise ValueError(f"no k has both a {base!r} and a {signed!r} row; pass rows of both activations")
    b, s = style.label(base), style.label(signed)
    out = [{"k": k, f"FVU {b}": by[base, k]["fvu"], f"FVU {s}": by[signed, k]["fvu"],
            "gap %": 100 * (by[signed, k]["fvu"] / by[base, k]["fvu"] - 1),
            f"loss rec. {b}": by[base, k]["loss_recovered"], f"loss rec. {s}": by[signed, k]["loss_recovered"],
            f"dead % {b}": 100 * by[base, k]["dead_frac"], f"dead % {s}": 100 * by[signed, k]["dead_frac"]} for k in ks]
    return style.Table(out, digits=4, formats={"gap %": "+.1f", f"dead % {b}": ".1f", f"dead % {s}": ".1f",
                                               f"loss rec. {b}": ".3f", f"loss rec. {s}": ".3f"})


@style.styled
def k_comparison(rows: list[dict], activations: tuple[str, ...] = ("topk", "abstopk"),
                 title: str = "TopK vs AbsTopK at equal width"):
    """rows: dicts with activation, k, fvu, dead_frac and loss_recovered. Three panels against k."""
    fig, axes = style.subplots(1, 3, height=3.0, pyplot=True)
    keys = (("fvu", "FVU (held-out)", "Reconstruction"), ("loss_recovered", "loss recovered", "Loss recovered"),
            ("dead_frac", "dead latents, held-out (%)", "Dead latents"))
    for act in activations:
        pts = sorted((r["k"], r) for r in rows if r["activation"] == act)
        if not pts:
            continue
        ks = [k for k, _ in pts]
        for a, (key, _, _) in zip(axes, keys):
            scale = 100 if key == "dead_frac" else 1
            a.plot(ks, [scale * r[key] for _, r in pts], marker="o", label=style.label(act), **style.line_style(act))
    all_ks = sorted({r["k"] for r in rows if r["activation"] in activations})
    for a, (_, ylabel, t) in zip(axes, keys):
        a.set_xscale("log", base=2)
        _plain_log(a, "x", all_ks)
        style.finish(a, "k (per token)", ylabel, t, legend=False)
    axes[0].set_yscale("log")
    fvus = [r["fvu"] for r in rows if r["activation"] in activations]
    _plain_log(axes[0], "y", _log_ticks(min(fvus), max(fvus)) if fvus else None)  # no crowded minor labels
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=len(activations))
    return fig


@style.styled
def firing_histograms(rates: dict[str, torch.Tensor], title: str = "How often each latent fires (held-out)"):
    """rates: name -> [d_sae] firing rates (share of tokens with z != 0). Histogram of log10 rate
    per SAE, one row each; dead latents (rate 0) are drawn as a black bar left of the lowest bin."""
    n = len(rates)
    if n == 0:
        raise ValueError("rates is empty; pass {name: firing-rate tensor}")
    fig, axes = style.subplots(n, 1, height=1.3 * n + 1.1, pyplot=True, sharex=True, squeeze=False)
    alive = [r[r > 0].double() for r in rates.values()]
    lo = min([math.log10(float(a.min())) for a in alive if len(a)] + [-1.0])
    edges = torch.linspace(math.floor(lo * 2) / 2, 0, 41).numpy()
    labels = sae_labels(rates)
    for a, (name, r) in zip(axes[:, 0], rates.items()):
        live = r[r > 0].double()
        a.hist(torch.log10(live).numpy(), bins=edges, color=style.color(name), alpha=0.8)
        dead = int((r == 0).sum())
        a.bar([edges[0] - 0.25], [dead], width=0.2, color=style.REFERENCE)
        a.set_ylim(0, 1.35 * max(a.get_ylim()[1], 1))  # headroom: the label sits above the bars
        a.text(0.99, 0.9, f"{labels[name]}: {dead:,} dead of {len(r):,}", transform=a.transAxes, va="top", ha="right",
               bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        a.set_ylabel("latents")
        a.grid(alpha=0.3)
    fig.supxlabel("log10 firing rate (share of tokens; black bar at the left: dead latents)")
    axes[0, 0].set_title(title)
    return fig


@style.styled
def negative_share_histograms(stats: dict[str, dict], title: str = "Sign of the codes (held-out)"):
    """stats: name -> :func:`abstopk_mini.lm.stats.firing_stats` of a signed SAE. Histogram over alive
    latents of the share of their activations that are negative."""
    fig, ax = style.subplots(height=3.4, pyplot=True)
    edges = torch.linspace(0, 1, 21).numpy()
    labels, top = sae_labels(stats), 0.0
    for name, st in stats.items():
        alive = st["n_fire"] > 0
        share = st["n_neg"][alive].double() / st["n_fire"][alive].double()
        counts, _, _ = ax.hist(share.numpy(), bins=edges, histtype="step", lw=2, color=style.color(name),
                               label=f"{labels[name]} ({int(alive.sum()):,} alive)")
        top = max(top, float(max(counts, default=0)))
    ax.set_ylim(0, 1.45 * top if top > 0 else 1)  # room for the legend above the histograms
    style.finish(ax, "share of a latent's activations that are negative", "latents", title, legend=False)
    ax.legend(loc="upper center", ncol=2)
    return fig
