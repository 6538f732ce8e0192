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
    "corpus_table", "layer_table", "layer_stats", "norm_histograms", "position_profile", "training_curves", "frontier", "k_comparison",
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


@style.styled
def layer_stats(rows: list[dict], title: str = "Residual stream, layer by layer"):
    """rows: :func:`abstopk_mini.lm.stats.layer_table`. Four panels against the layer: token norms
    (median, 1-99 % band, BOS), mean share and top-coordinate shares (of the mean squared norm and,
    if the rows have ``top_var_share``, of the variance), max excess kurtosis, and participation
    ratio."""
    layers = [r["layer"] for r in rows]
    fig, axes = style.subplots(2, 2, height=5.6, pyplot=True)
    a = axes[0, 0]
    a.fill_between(layers, [r["norm_q01"] for r in rows], [r["norm_q99"] for r in rows], color="0.85",
                   label="tokens, 1–99 %")
    a.plot(layers, [r["norm_median"] for r in rows], label="tokens, median", **_series(0))
    a.plot(layers, [r["bos_norm"] for r in rows], label="BOS position", **_series(1))
    a.set_yscale("log")
    style.finish(a, "layer", "‖x‖ (residual norm)", "Norms")
    a = axes[0, 1]
    a.plot(layers, [r["mean_share"] for r in rows], label="‖mean‖² / mean ‖x‖²", **_series(0))
    a.plot(layers, [r["top_dim_share"] for r in rows], label="top coordinate's share\nof mean ‖x‖²", **_series(1))
    if all("top_var_share" in r for r in rows):
        a.plot(layers, [r["top_var_share"] for r in rows], label="top coordinate's share of tr Σ", **_series(2))
    a.set_ylim(0, 1.02)
    style.finish(a, "layer", "share", "Mean vector, top coordinate")
    a = axes[1, 0]
    a.plot(layers, [r["kurtosis_max"] for r in rows], label="max over coordinates", **_series(0))
    a.plot(layers, [r["kurtosis_median"] for r in rows], label="median over coordinates", **_series(1))
    a.set_yscale("symlog", linthresh=1)
    style.finish(a, "layer", "excess kurtosis", "Heavy-tailed coordinates")
    a = axes[1, 1]
    a.plot(layers, [r["participation_ratio"] for r in rows], label="(tr Σ)² / tr Σ²", **_series(0))
    a.set_yscale("log")
    style.finish(a, "layer", "participation ratio", "Directions holding the variance")
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
    """histories: name ('topk-k32') -> a train_sae history. FVU (log), L0 and dead share against
    the training tokens."""
    fig, axes = style.subplots(1, 3, height=3.0, pyplot=True)
    for name, h in histories.items():
        tokens = h["tokens"]
        axes[0].plot(tokens, h["fvu"], label=name, **style.line_style(name))
        axes[1].plot(tokens, h["l0"], label=name, **style.line_style(name))
        axes[2].plot(tokens, [100 * d for d in h["dead_frac"]], label=name, **style.line_style(name))
    axes[0].set_yscale("log")
    for a, ylabel, t in zip(axes, ("FVU (training batch)", "L0 (training batch)", "dead latents (%)"),
                            ("Reconstruction", "Sparsity", "Dead latents")):
        style.finish(a, "training tokens", ylabel, t, legend=False)
    fig.suptitle(title)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(len(histories), 4))
    return fig


@style.styled
def frontier(rows: list[dict], title: str = "Reconstruction and loss recovered vs sparsity"):
    """rows: dicts with activation, l0, fvu and (optionally) loss_recovered. Left: FVU vs L0;
    right: loss recovered vs L0. Points of one activation at several k are joined."""
    has_lr = all("loss_recovered" in r for r in rows)
    fig, axes = style.subplots(1, 2 if has_lr else 1, height=3.4, pyplot=True, squeeze=False)
    panels = [("fvu", "FVU (held-out)", "FVU (lower is better)")]
    if has_lr:
        panels.append(("loss_recovered", "loss recovered (zero abl.)", "Loss recovered (higher)"))
    for a, (key, ylabel, t) in zip(axes[0], panels):
        for act in dict.fromkeys(r["activation"] for r in rows):
            pts = sorted((r["l0"], r[key]) for r in rows if r["activation"] == act)
            a.plot(*zip(*pts), marker="o", label=style.label(act), **style.line_style(act))
        a.set_xscale("log", base=2)
        style.finish(a, "L0 (held-out)", ylabel, t, legend=False)
    axes[0][0].set_yscale("log")
    _plain_log(axes[0][0], "y")
    axes[0][0].legend()
    fig.suptitle(title)
    return fig


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
    _plain_log(axes[0], "y")
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
    for a, (name, r) in zip(axes[:, 0], rates.items()):
        live = r[r > 0].double()
        a.hist(torch.log10(live).numpy(), bins=edges, color=style.color(name), alpha=0.8)
        dead = int((r == 0).sum())
        a.bar([edges[0] - 0.25], [dead], width=0.2, color=style.REFERENCE)
        a.text(0.01, 0.9, f"{name}: {dead} dead of {len(r)}", transform=a.transAxes, va="top")
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
    for name, st in stats.items():
        alive = st["n_fire"] > 0
        share = st["n_neg"][alive].double() / st["n_fire"][alive].double()
        ax.hist(share.numpy(), bins=edges, histtype="step", lw=2, color=style.color(name),
                label=f"{name} ({int(alive.sum())} alive)")
    return style.finish(ax, "share of a latent's activations that are negative", "latents", title)
