"""Figures of the reproduce report (:func:`abstopk_mini.runs.reproduce.reproduce`): SAEs on a
language model.

Every function returns a :class:`abstopk_mini.chapters.style.Figure` registered with pyplot
(the report saves and closes it), with labelled axes and a title; colours, sizes and fonts come
from :mod:`abstopk_mini.chapters.style`.
"""

from __future__ import annotations

from . import style

__all__ = ["fvu_l0_frontier", "fvu_vs_k", "concept_bars", "steering_curves"]


@style.styled
def fvu_l0_frontier(rows: list[dict], title: str = "Reconstruction vs sparsity"):
    """rows: dicts with activation, l0, fvu (held-out). One point per SAE, coloured by activation."""
    fig, ax = style.subplots(height=3.6, pyplot=True)
    for act in dict.fromkeys(r["activation"] for r in rows):
        pts = sorted((r["l0"], r["fvu"]) for r in rows if r["activation"] == act)
        ax.plot(*zip(*pts), "o-", color=style.color(act), label=style.label(act))
    return style.finish(ax, "L0 (non-zero latents per token)", "FVU (held-out)", title)


@style.styled
def fvu_vs_k(rows: list[dict], title: str = "TopK vs AbsTopK at equal width"):
    """rows: dicts with activation (topk/abstopk), k, fvu and dead_frac. Two panels."""
    fig, (a1, a2) = style.subplots(1, 2, height=3.0, pyplot=True)
    for act in ("topk", "abstopk"):
        pts = sorted((r["k"], r["fvu"], r["dead_frac"]) for r in rows if r["activation"] == act)
        if not pts:
            continue
        ks, fvus, dead = zip(*pts)
        a1.plot(ks, fvus, "o-", color=style.color(act), label=style.label(act))
        a2.plot(ks, [100 * d for d in dead], "o-", color=style.color(act), label=style.label(act))
    for ax, ylabel, t in ((a1, "FVU (held-out)", title), (a2, "dead latents (%)", "Dead latents")):
        ax.set_xscale("log", base=2)
        style.finish(ax, "k", ylabel, t)
    return fig


@style.styled
def concept_bars(results: dict[str, dict], title: str = "Gender (family pairs), test split"):
    """results: name -> a concepts report. Bars: sign, threshold, pair rule and DiM accuracy (one
    grey per rule, DiM black; the SAEs are the groups on the x axis)."""
    metrics = [("sign_accuracy", "best latent, sign"), ("threshold_accuracy", "best latent, threshold"),
               ("best_pair_accuracy", "best two-latent rule"), ("dim_test_accuracy", "Difference in Means")]
    names = list(results)
    fig, ax = style.subplots(height=3.8, pyplot=True)
    width = 0.8 / len(metrics)
    shades = ("0.82", "0.6", "0.38", style.REFERENCE)  # rules, not methods: greys, DiM black
    for i, ((key, label), shade) in enumerate(zip(metrics, shades)):
        ax.bar([j + i * width for j in range(len(names))], [results[n][key] for n in names], width, label=label,
               color=shade)
    ax.axhline(0.5, color=style.REFERENCE, lw=0.8, ls=":")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names)
    ax.set_ylim(0, 1.05)
    style.finish(ax, "SAE", "accuracy (balanced, per word)", title, legend=False, grid=False)
    fig.legend(loc="outside lower center", ncol=2)
    return fig


@style.styled
def steering_curves(curves: dict[str, dict], xlabel: str = "clamp value c", title: str = "Steering: female vs male log-odds"):
    """curves: label -> a CurveResult dict (values, log_odds). One line each, in its method's
    colour when the label starts with an activation name."""
    fig, ax = style.subplots(height=3.6, pyplot=True)
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(c["values"], c["log_odds"], "o-", color=style.color(label, default=f"C{i}"), label=label)
    ax.axhline(0, color=style.REFERENCE, lw=0.8, ls=":")
    return style.finish(ax, xlabel, "mean log p(female) − log p(male)", title)
