r"""Figures shared by the chapters. Every function returns a :class:`matplotlib.figure.Figure`.

Figures are :class:`abstopk_mini.chapters.style.Figure` objects built without ``pyplot``, so
nothing is drawn twice in a notebook (a returned figure is shown once, by its PNG repr, with or
without ``%matplotlib inline``) and nothing accumulates in pyplot's figure registry when a widget
redraws; colours, sizes and fonts come from :mod:`abstopk_mini.chapters.style`. Every axes gets an
x label, a y label and a title; a colour bar gets a label.

The module is organised in sections, one per chapter (plus shared helpers at the top); a
chapter adds its figures in its own section.

* **Shared**: :func:`order_atoms`, :func:`axis_latents`; :class:`Table` is
  :class:`abstopk_mini.chapters.style.Table`.
* **Chapter 04, a toy model of bidirectional features**: :func:`gender_axis_figure`,
  :func:`axis_latent_figure`, :func:`cosine_heatmaps`, :func:`antipodal_figure`,
  :func:`width_sweep_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import metrics
from . import style
from .style import GENDER_COLORS, Table

__all__ = [
    "Table",
    "order_atoms",
    "axis_latents",
    "gender_axis_figure",
    "axis_latent_figure",
    "cosine_heatmaps",
    "antipodal_figure",
    "width_sweep_figure",
]


# =============================================================================== shared helpers
def _dictionary(obj) -> torch.Tensor:
    """Learned atoms as columns [d, Q] from an SAE (its W_dec rows) or a tensor [d, Q]."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().float().cpu()
    W_dec = getattr(obj, "W_dec", None)
    if W_dec is None:
        raise TypeError(f"expected an SAE or a tensor of atoms [d, Q]; got {type(obj).__name__}")
    return W_dec.detach().float().cpu().T


def _is_signed(obj) -> bool:
    cfg = getattr(obj, "cfg", None)
    return bool(getattr(cfg, "signed", False))


def order_atoms(D_true: torch.Tensor, D_learned: torch.Tensor, signed: bool = True) -> torch.Tensor:
    """A display order for learned atoms: the Hungarian match of axis 0, 1, ..., P−1 first, then
    the unmatched atoms grouped by the axis they align with best in |cos| (most aligned first).

    ``signed=True`` matches on the signed cosine (each axis gets the atom pointing its way), so a
    nonnegative SAE of width 2P shows the +d_i atoms on the diagonal and then a second, negative
    diagonal: the partner of each axis, pointing the other way. ``signed=False`` matches on |cos|.

    shape: D_true [d, P], D_learned [d, Q] -> permutation [Q] (long)
    """
    true_idx, learned_idx, _ = metrics.match_atoms(D_true, D_learned, signed=signed)
    first = learned_idx[torch.argsort(true_idx)]
    rest = torch.tensor(sorted(set(range(D_learned.shape[1])) - set(first.tolist())), dtype=torch.long)
    if len(rest):
        C = metrics.cosine_matrix(D_true, D_learned[:, rest]).abs()  # [P, R]
        best_val, best_axis = C.max(dim=0)
        key = best_axis.double() * 10 - best_val  # by axis, then most aligned first
        rest = rest[torch.argsort(key)]
    return torch.cat([first, rest])


def axis_latents(sae_or_atoms, axis: torch.Tensor, signed: bool | None = None, top: int = 2) -> list[tuple[int, float]]:
    """The latents that carry a concept axis, as (latent index, cosine of its atom with the axis).

    A signed code (AbsTopK) carries the axis with the one latent of largest |cos|; a nonnegative
    code needs one latent per direction, so it returns the latent most aligned with +axis and the
    one most aligned with −axis (whatever their cosines: a weak match is itself the finding).
    ``top`` caps how many are returned.

    shape: axis [d]; atoms [d, Q] (or an SAE) -> list of (int, float)
    """
    D = _dictionary(sae_or_atoms)
    signed = _is_signed(sae_or_atoms) if signed is None else signed
    cos = metrics.cosine_matrix(axis.reshape(-1, 1).float().cpu(), D)[0]
    if signed:
        i = int(cos.abs().argmax())
        return [(i, float(cos[i]))]
    picks = [int(cos.argmax()), int(cos.argmin())]
    return [(i, float(cos[i])) for i in dict.fromkeys(picks)][:top]


# =============================================================================== chapter 04
# A toy model of bidirectional features: the gender toy and the P signed axes benchmark.


@style.styled
def gender_axis_figure(x: torch.Tensor, words: Sequence[str], D_true: torch.Tensor, concepts: Sequence[str],
                       per_word: int = 150, seed: int = 0) -> Figure:
    """Each word's samples projected on the gender axis g (the last column of ``D_true``), one row
    per word family, coloured by gender: male words sit near +1, female near −1, neutral near 0.

    x [n, d], words (n str) and D_true [d, C+1], concepts from :func:`abstopk_mini.coding.toy.gender_data`.
    """
    from ..coding.toy import GENDER_CONCEPTS

    if len(words) != x.shape[0]:
        raise ValueError(f"words has {len(words)} entries but x has {x.shape[0]} rows; pass the words of gender_data")
    g = D_true[:, list(concepts).index("gender")].float()
    proj = (x.float() @ g).numpy()
    families = []
    for word, (base, _) in GENDER_CONCEPTS.items():
        fam = "+".join(c for c in base if c != "person") or "person"
        if fam not in families:
            families.append(fam)
    rng = np.random.default_rng(seed)
    words_arr = np.asarray(words)
    fig, ax = style.subplots(height=3.6)
    colors = {1: GENDER_COLORS["male"], -1: GENDER_COLORS["female"], 0: GENDER_COLORS["neutral"]}
    for word, (base, sign) in GENDER_CONCEPTS.items():
        rows = np.flatnonzero(words_arr == word)
        if not len(rows):
            continue
        rows = rng.choice(rows, size=min(per_word, len(rows)), replace=False)
        fam = "+".join(c for c in base if c != "person") or "person"
        y = families.index(fam) + rng.uniform(-0.15, 0.15, size=len(rows))
        color = colors[sign]
        ax.scatter(proj[rows], y, s=4, alpha=0.5, color=color, linewidths=0)
        ax.annotate(word, (float(np.median(proj[rows])), families.index(fam) + 0.2), ha="center", va="bottom",
                    color="black")
    ax.set_yticks(range(len(families)), ["person" if f == "person" else f"+ {f}" for f in families])
    ax.set_ylim(-0.5, len(families) - 0.05)
    ax.axvline(0, color=style.REFERENCE, lw=0.5)
    ax.set_xlabel("projection on the gender axis  $x \\cdot g$")
    ax.set_ylabel("word family (person + ...)")
    ax.set_title("The gender toy: male words at $+g$, female at $-g$, neutral at 0")
    for label, color in (("male", colors[1]), ("female", colors[-1]), ("neutral", colors[0])):
        ax.scatter([], [], color=color, s=20, label=label)
    fig.legend(loc="outside lower center", ncol=3, title="gender of the word:", alignment="left")
    return fig


@style.styled
def axis_latent_figure(saes: Mapping[str, object], x: torch.Tensor, words: Sequence[str], axis: torch.Tensor,
                       word_order: Sequence[str] | None = None, axis_name: str = "gender") -> Figure:
    """Mean activation, per word, of the latent(s) that carry a concept axis, one panel per SAE.

    For a signed SAE the one latent is oriented so that its atom points along +axis (the sign of
    an AbsTopK atom is arbitrary: flipping atom and code together changes nothing). A
    nonnegative SAE shows its two latents, one per direction; the panel title gives the cosine
    between their decoder rows (≈ −1: an antipodal pair).

    saes: {title: SAE}; x [n, d]; words (n str); axis [d]; ``axis_name`` is used in the titles.
    """
    words_arr = np.asarray(words)
    order = list(word_order) if word_order is not None else list(dict.fromkeys(words))
    fig, axes = style.subplots(len(saes), 1, height=2.6 * len(saes), squeeze=False)
    for ax, (title, sae) in zip(axes[:, 0], saes.items()):
        with torch.no_grad():
            z = sae.encode(x.to(sae.W_enc.device)).float().cpu()
        picks = axis_latents(sae, axis)
        width = 0.8 / len(picks)
        pos = np.arange(len(order))
        for j, (latent, cos) in enumerate(picks):
            flip = -1.0 if (_is_signed(sae) and cos < 0) else 1.0
            means = [float(z[words_arr == w, latent].mean()) * flip if (words_arr == w).any() else np.nan for w in order]
            label = f"latent {latent}\ncos {cos * flip:+.2f}"
            color = GENDER_COLORS["male"] if cos * flip >= 0 else GENDER_COLORS["female"]
            ax.bar(pos + (j - (len(picks) - 1) / 2) * width, means, width, label=label, color=color)
        ax.axhline(0, color=style.REFERENCE, lw=0.5)
        ax.set_xticks(pos, order, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_xlabel("word")
        ax.set_ylabel("mean activation")
        if len(picks) == 2:
            D = _dictionary(sae)
            pair = float(metrics.cosine_matrix(D[:, [picks[0][0]]], D[:, [picks[1][0]]])[0, 0])
            what = f"two latents for the {axis_name} axis" if pair < -0.9 else f"the latents nearest to ±{axis_name}"
            title = f"{title}: {what}\n(cos between their atoms {pair:+.2f})"
        else:
            aligned = abs(picks[0][1]) >= 0.9
            title = f"{title}: " + (f"one signed latent for the {axis_name} axis" if aligned else f"the latent nearest to the {axis_name} axis")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="atom·g", handlelength=1.0)
    return fig


@style.styled
def cosine_heatmaps(D_true: torch.Tensor, saes: Mapping[str, object], rows: Mapping[str, dict] | None = None,
                    axis_labels: Sequence[str] | None = None, height: float = 2.6) -> Figure:
    """Cosine between each true axis (rows) and each learned atom (columns), one panel per SAE.

    Columns are in :func:`order_atoms` order (matches on the diagonal, then the rest). The
    atoms of a signed SAE are flipped to point along the axis they match, because their sign is
    arbitrary; a nonnegative SAE's atoms are shown as learned, so its ± pairs show up as a red
    and a blue entry in the same row. ``rows`` ({title: metrics dict}) adds MCC and FVU to the
    titles. All panels share one row of the text column's width; ``height`` in inches.

    shape: D_true [d, P]; each SAE's W_dec [Q, d] (or a tensor of atoms [d, Q])
    """
    fig, axes = style.subplots(1, len(saes), height=height + (0.6 if rows else 0.0), squeeze=False)
    axes = list(axes[0])
    image = None
    for ax, (title, sae) in zip(axes, saes.items()):
        D = _dictionary(sae)
        if _is_signed(sae):  # point each atom along the axis it matches best (same code, z -> -z)
            C = metrics.cosine_matrix(D_true, D)
            best = C.gather(0, C.abs().argmax(0, keepdim=True))  # [1, Q]
            D = D * torch.where(best < 0, -1.0, 1.0).float()
        C = metrics.cosine_matrix(D_true, D[:, order_atoms(D_true, D)])  # [P, Q]
        image = ax.imshow(C.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.set_xlabel(f"atom ({D.shape[1]})")
        ax.set_ylabel("true axis")
        if axis_labels is not None:
            ax.set_yticks(range(len(axis_labels)), axis_labels)
        row = (rows or {}).get(title)
        if row:
            title = f"{title}\nMCC {row['mcc']:.2f}, FVU {row['fvu']:.3f}\n{row['split_axes']} axes split"
        ax.set_title(title, fontsize=style.FONT)
    bar = fig.colorbar(image, ax=axes, shrink=0.9, ticks=[-1, 0, 1])
    bar.set_label("cos(true axis, atom)")
    return fig


def _most_opposite(D: torch.Tensor) -> torch.Tensor:
    """For each atom, the smallest cosine with any other atom.  shape: D [d, Q] -> [Q]"""
    G = metrics.cosine_matrix(D, D)
    G.fill_diagonal_(float("inf"))
    return G.min(dim=1).values


@style.styled
def antipodal_figure(saes: Mapping[str, object], below: float = -0.9, bins: int = 40) -> Figure:
    """Histogram, per SAE, of each atom's most negative cosine with another atom of the same SAE.

    Needs no ground truth: a spike near −1 is a dictionary that codes axes as ± pairs
    (:func:`abstopk_mini.metrics.antipodal_pairs` counts the pairs below ``below``).
    """
    fig, ax = style.subplots(height=3.4)
    edges = np.linspace(-1, 0.2, bins + 1)
    used: list[str] = []
    for i, (title, sae) in enumerate(saes.items()):
        D = _dictionary(sae)
        m = _most_opposite(D).numpy()
        n_pairs = metrics.antipodal_pairs(D.T, below)
        color = style.color(title, default=f"C{i}")  # "topk, d_sae=2P" -> TopK's colour
        ls = ("-", "--", ":")[used.count(color) % 3]  # the same method twice: another line style
        used.append(color)
        ax.hist(np.clip(m, edges[0], edges[-1]), bins=edges, color=color, histtype="step", lw=2, ls=ls,
                label=f"{title}: {D.shape[1]} atoms, {n_pairs} pairs")
    ax.axvline(below, color=style.REFERENCE, lw=0.8, ls="--")
    ax.set_xlabel("most negative cosine between an atom and another atom")
    ax.set_ylabel("number of atoms")
    ax.set_title(f"Antipodal pairs (cos < {below}): nonnegative codes\nspend two atoms per axis")
    return style.legend_below(fig, ncol=1)  # below the panel: inside it covered the histograms


@style.styled
def width_sweep_figure(rows: Sequence[Mapping], P: int,
                       panels: Sequence[tuple[str, str]] = (("fvu", "FVU (held out)"), ("mcc", "MCC with true axes"),
                                                            ("split_axes", "axes split in ± pairs"))) -> Figure:
    """Metrics against dictionary width (d_sae / P), one line per activation.

    rows: dicts with ``activation``, ``d_sae`` and the keys named in ``panels`` (the rows of
    :func:`abstopk_mini.chapters.widgets.toy_fit` or :func:`abstopk_mini.coding.toy.toy_benchmark`).
    """
    if not rows:
        raise ValueError("rows is empty; pass the rows of a width sweep")
    fig, axes = style.subplots(1, len(panels), height=2.9, squeeze=False)
    activations = list(dict.fromkeys(r["activation"] for r in rows))
    for ax, (key, label) in zip(axes[0], panels):
        for act in activations:
            pts = sorted((r["d_sae"] / P, r[key]) for r in rows if r["activation"] == act)
            ax.plot(*zip(*pts), "o-", color=style.color(act), label=style.label(act))
        ax.set_xlabel("width d_sae / P")
        ax.set_ylabel(label)
        ax.set_title({"fvu": "Reconstruction", "mcc": "Recovery", "split_axes": "Split axes"}.get(key, key))
        ax.axvline(1, color=style.REFERENCE, lw=0.5, ls=":")
        ax.axvline(2, color=style.REFERENCE, lw=0.5, ls=":")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=len(activations))
    return fig
