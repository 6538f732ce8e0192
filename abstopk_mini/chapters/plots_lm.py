"""Figures for SAEs on language models (the reproduce report and chapters 5-9).

Every function returns a matplotlib Figure with labelled axes and a title; callers save or show it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["fvu_l0_frontier", "fvu_vs_k", "concept_bars", "steering_curves"]

_COLORS = {"topk": "C0", "abstopk": "C3", "batchtopk": "C9", "batchabstopk": "C1", "jumprelu": "C2",
           "absjumprelu": "C4", "relu": "C7"}


def fvu_l0_frontier(rows: list[dict], title: str = "Reconstruction vs sparsity"):
    """rows: dicts with activation, l0, fvu (held-out). One point per SAE, coloured by activation."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for act in dict.fromkeys(r["activation"] for r in rows):
        pts = sorted((r["l0"], r["fvu"]) for r in rows if r["activation"] == act)
        ax.plot(*zip(*pts), "o-", color=_COLORS.get(act), label=act)
    ax.set_xlabel("L0 (non-zero latents per token)")
    ax.set_ylabel("FVU (held-out)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fvu_vs_k(rows: list[dict], title: str = "TopK vs AbsTopK at equal width"):
    """rows: dicts with activation (topk/abstopk), k, fvu and dead_frac. Two panels."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for act in ("topk", "abstopk"):
        pts = sorted((r["k"], r["fvu"], r["dead_frac"]) for r in rows if r["activation"] == act)
        if not pts:
            continue
        ks, fvus, dead = zip(*pts)
        a1.plot(ks, fvus, "o-", color=_COLORS[act], label=act)
        a2.plot(ks, [100 * d for d in dead], "o-", color=_COLORS[act], label=act)
    for ax, ylabel in ((a1, "FVU (held-out)"), (a2, "dead latents (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    a1.set_title(title)
    a2.set_title("Dead latents")
    fig.tight_layout()
    return fig


def concept_bars(results: dict[str, dict], title: str = "Gender (family pairs), test split"):
    """results: name -> a concepts report. Bars: sign, threshold, pair rule and DiM accuracy."""
    metrics = [("sign_accuracy", "best latent, sign"), ("threshold_accuracy", "best latent, threshold"),
               ("best_pair_accuracy", "best two-latent rule"), ("dim_test_accuracy", "Difference in Means")]
    names = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.8 / len(metrics)
    for i, (key, label) in enumerate(metrics):
        ax.bar([j + i * width for j in range(len(names))], [results[n][key] for n in names], width, label=label)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (balanced, per word)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def steering_curves(curves: dict[str, dict], xlabel: str = "clamp value c", title: str = "Steering: female vs male log-odds"):
    """curves: label -> a CurveResult dict (values, log_odds). One line each."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(c["values"], c["log_odds"], "o-", color=f"C{i}", label=label)
    ax.axhline(0, color="k", lw=0.8, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean log p(female) − log p(male)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
