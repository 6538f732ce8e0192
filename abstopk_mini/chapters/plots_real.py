"""Figures of chapters 5 (activations) and 6 (training SAEs) on a real model.

Every function takes plain numbers (dicts and tensors computed by :mod:`abstopk_mini.lm.stats`,
:func:`abstopk_mini.evaluate.evaluate_sae`, :func:`abstopk_mini.lm.splice.evaluate_many` or a
training history) and returns a matplotlib Figure with labelled axes and a title.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import FormatStrFormatter, NullLocator

from .plots_lm import _COLORS

__all__ = [
    "layer_stats", "norm_histograms", "position_profile", "training_curves", "frontier", "k_comparison",
    "firing_histograms", "negative_share_histograms",
]

_LABELS = {"relu": "ReLU", "jumprelu": "JumpReLU", "absjumprelu": "AbsJumpReLU", "topk": "TopK",
           "batchtopk": "BatchTopK", "abstopk": "AbsTopK", "batchabstopk": "BatchAbsTopK"}
_SIGNED = {"abstopk", "batchabstopk", "absjumprelu"}


def _label(activation: str) -> str:
    return _LABELS.get(activation, activation)


def _style(activation: str) -> dict:
    """Colour per activation; signed activations dashed."""
    return {"color": _COLORS.get(activation, "k"), "ls": "--" if activation in _SIGNED else "-"}


def _plain_log(ax, axis: str = "y", ticks=None) -> None:
    """Log-scale axis labelled with plain numbers (0.2, 16) instead of powers; ``ticks``: only these."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    if ticks is not None:
        (ax.set_yticks if axis == "y" else ax.set_xticks)(list(ticks))
        a.set_minor_locator(NullLocator())
    a.set_major_formatter(FormatStrFormatter("%g"))
    a.set_minor_formatter(FormatStrFormatter("%g") if ticks is None else FormatStrFormatter(""))


def _activation_of(name: str) -> str:
    """'abstopk-k32' -> 'abstopk'."""
    return name.split("-")[0]


# --------------------------------------------------------------------------- chapter 5
def layer_stats(rows: list[dict], title: str = "Residual stream, layer by layer"):
    """rows: :func:`abstopk_mini.lm.stats.layer_table`. Four panels against the layer: token norms
    (median, 1-99 % band, BOS), mean share and top-coordinate shares (of the mean squared norm and,
    if the rows have ``top_var_share``, of the variance), max excess kurtosis, and participation
    ratio."""
    layers = [r["layer"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    a = axes[0, 0]
    a.fill_between(layers, [r["norm_q01"] for r in rows], [r["norm_q99"] for r in rows], color="C0", alpha=0.2,
                   label="tokens, 1–99 %")
    a.plot(layers, [r["norm_median"] for r in rows], "o-", color="C0", label="tokens, median")
    a.plot(layers, [r["bos_norm"] for r in rows], "s-", color="C3", label="BOS position")
    a.set_yscale("log")
    a.set_ylabel("‖x‖ (residual norm)")
    a.set_title("Norms")
    a = axes[0, 1]
    a.plot(layers, [r["mean_share"] for r in rows], "o-", color="C2", label="‖mean‖² / mean ‖x‖²")
    a.plot(layers, [r["top_dim_share"] for r in rows], "s-", color="C1", label="top coordinate's share of mean ‖x‖²")
    if all("top_var_share" in r for r in rows):
        a.plot(layers, [r["top_var_share"] for r in rows], "^-", color="C8", label="top coordinate's share of tr Σ")
    a.set_ylim(0, 1.02)
    a.set_ylabel("share")
    a.set_title("Mean vector and top coordinates")
    a = axes[1, 0]
    a.plot(layers, [r["kurtosis_max"] for r in rows], "o-", color="C4", label="max over coordinates")
    a.plot(layers, [r["kurtosis_median"] for r in rows], "s-", color="C7", label="median over coordinates")
    a.set_yscale("symlog", linthresh=1)
    a.set_ylabel("excess kurtosis")
    a.set_title("Heavy-tailed coordinates")
    a = axes[1, 1]
    a.plot(layers, [r["participation_ratio"] for r in rows], "o-", color="C5", label="(tr Σ)² / tr Σ²")
    a.set_yscale("log")
    a.set_ylabel("participation ratio")
    a.set_title("Directions holding the variance")
    for a in axes.flat:
        a.set_xlabel("layer (block output)")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def norm_histograms(groups: dict[str, torch.Tensor], title: str = "Token norms", bins: int = 60):
    """groups: label -> 1-D tensor of norms. Overlaid histograms on a log x axis (density)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    values = [v.double() for v in groups.values() if len(v)]
    if not values:
        raise ValueError("groups holds no norms; pass at least one non-empty tensor")
    lo = min(float(v[v > 0].min()) for v in values)
    hi = max(float(v.max()) for v in values)
    edges = torch.logspace(math.log10(lo), math.log10(hi * 1.0001), bins + 1).numpy()
    for i, (label, v) in enumerate(groups.items()):
        if len(v):
            ax.hist(v.double().numpy(), bins=edges, density=True, histtype="stepfilled", alpha=0.35, color=f"C{i}",
                    label=f"{label} (n={len(v):,})")
    ax.set_xscale("log")
    ax.set_xlabel("‖x‖ (residual norm)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def position_profile(curves: dict[str, torch.Tensor], ylabel: str = "mean ‖x‖", title: str = "Norm by position"):
    """curves: label -> [n_positions] values (NaN where absent), plotted against the position."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(range(len(c)), c.double().numpy(), "-", marker=".", color=f"C{i}", label=label)
    ax.set_xlabel("position in the context (BOS = 0)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- chapter 6
def training_curves(histories: dict[str, dict], title: str = "Training"):
    """histories: name ('topk-k32') -> a train_sae history. FVU (log), L0 and dead share against
    the training tokens."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, h in histories.items():
        act = _activation_of(name)
        tokens = h["tokens"]
        axes[0].plot(tokens, h["fvu"], label=name, **_style(act))
        axes[1].plot(tokens, h["l0"], label=name, **_style(act))
        axes[2].plot(tokens, [100 * d for d in h["dead_frac"]], label=name, **_style(act))
    axes[0].set_yscale("log")
    for a, ylabel, t in zip(axes, ("FVU (training batch)", "L0 (training batch)", "dead latents (%)"),
                            ("Reconstruction", "Sparsity", "Dead latents")):
        a.set_xlabel("training tokens")
        a.set_ylabel(ylabel)
        a.set_title(t)
        a.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8, frameon=False)
    return fig


def frontier(rows: list[dict], title: str = "Reconstruction and loss recovered vs sparsity"):
    """rows: dicts with activation, l0, fvu and (optionally) loss_recovered. Left: FVU vs L0;
    right: loss recovered vs L0. Points of one activation at several k are joined."""
    has_lr = all("loss_recovered" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_lr else 1, figsize=(11 if has_lr else 5.5, 4), squeeze=False)
    panels = [("fvu", "FVU (held-out)")] + ([("loss_recovered", "loss recovered (zero ablation)")] if has_lr else [])
    for a, (key, ylabel) in zip(axes[0], panels):
        for act in dict.fromkeys(r["activation"] for r in rows):
            pts = sorted((r["l0"], r[key]) for r in rows if r["activation"] == act)
            a.plot(*zip(*pts), marker="o", label=_label(act), **_style(act))
        a.set_xscale("log", base=2)
        a.set_xlabel("L0 (non-zero latents per token, held-out)")
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
    axes[0][0].set_yscale("log")
    _plain_log(axes[0][0], "y")
    axes[0][0].legend(fontsize=8)
    axes[0][0].set_title("FVU vs L0 (lower left is better)")
    if has_lr:
        axes[0][1].set_title("Loss recovered vs L0 (upper left is better)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def k_comparison(rows: list[dict], activations: tuple[str, ...] = ("topk", "abstopk"),
                 title: str = "TopK vs AbsTopK at equal width"):
    """rows: dicts with activation, k, fvu, dead_frac and loss_recovered. Three panels against k."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    keys = (("fvu", "FVU (held-out)"), ("loss_recovered", "loss recovered (zero ablation)"),
            ("dead_frac", "dead latents on held-out (%)"))
    for act in activations:
        pts = sorted((r["k"], r) for r in rows if r["activation"] == act)
        if not pts:
            continue
        ks = [k for k, _ in pts]
        for a, (key, _) in zip(axes, keys):
            scale = 100 if key == "dead_frac" else 1
            a.plot(ks, [scale * r[key] for _, r in pts], marker="o", label=_label(act), **_style(act))
    all_ks = sorted({r["k"] for r in rows if r["activation"] in activations})
    for a, (key, ylabel) in zip(axes, keys):
        a.set_xscale("log", base=2)
        _plain_log(a, "x", all_ks)
        a.set_xlabel("k (non-zeros per token)")
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    axes[0].set_yscale("log")
    _plain_log(axes[0], "y")
    axes[0].set_title("Reconstruction")
    axes[1].set_title("Loss recovered")
    axes[2].set_title("Dead latents")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def firing_histograms(rates: dict[str, torch.Tensor], title: str = "How often each latent fires (held-out)"):
    """rates: name -> [d_sae] firing rates (share of tokens with z != 0). Histogram of log10 rate
    per SAE, one row each; dead latents (rate 0) are drawn as a black bar left of the lowest bin."""
    n = len(rates)
    if n == 0:
        raise ValueError("rates is empty; pass {name: firing-rate tensor}")
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.25 * n + 1), sharex=True, squeeze=False)
    alive = [r[r > 0].double() for r in rates.values()]
    lo = min([math.log10(float(a.min())) for a in alive if len(a)] + [-1.0])
    edges = torch.linspace(math.floor(lo * 2) / 2, 0, 41).numpy()
    for a, (name, r) in zip(axes[:, 0], rates.items()):
        act = _activation_of(name)
        live = r[r > 0].double()
        a.hist(torch.log10(live).numpy(), bins=edges, color=_COLORS.get(act, "k"), alpha=0.7)
        dead = int((r == 0).sum())
        a.bar([edges[0] - 0.25], [dead], width=0.2, color="k")
        a.text(0.01, 0.85, f"{name}: {dead} dead of {len(r)}", transform=a.transAxes, fontsize=8, va="top")
        a.set_ylabel("latents")
        a.grid(alpha=0.3)
    fig.supxlabel("log10 firing rate (share of tokens; black bar at the left: dead latents)", fontsize=10)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    return fig


def negative_share_histograms(stats: dict[str, dict], title: str = "Sign of the codes (held-out)"):
    """stats: name -> :func:`abstopk_mini.lm.stats.firing_stats` of a signed SAE. Histogram over alive
    latents of the share of their activations that are negative."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    edges = torch.linspace(0, 1, 21).numpy()
    for name, st in stats.items():
        alive = st["n_fire"] > 0
        share = st["n_neg"][alive].double() / st["n_fire"][alive].double()
        ax.hist(share.numpy(), bins=edges, histtype="step", lw=2, color=_COLORS.get(_activation_of(name), "k"),
                label=f"{name} ({int(alive.sum())} alive)")
    ax.set_xlabel("share of a latent's activations that are negative")
    ax.set_ylabel("latents")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
