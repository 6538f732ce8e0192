r"""Figures shared by the chapters. Every function returns a :class:`matplotlib.figure.Figure`.

Figures are built with ``Figure(...)`` rather than ``pyplot``, so nothing is drawn twice in a
notebook (a returned figure is shown once, by its PNG repr, with or without ``%matplotlib
inline``) and nothing accumulates in pyplot's figure registry when a widget redraws. Every axes gets an x label, a y label and a title; a
colour bar gets a label.

The module is organised in sections, one per chapter (plus shared helpers at the top); a
chapter adds its figures in its own section.

* **Shared**: :class:`ReprFigure`, :class:`Table`, :func:`new_figure`, :func:`order_atoms`, :func:`axis_latents`.
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

__all__ = [
    "ReprFigure",
    "Table",
    "new_figure",
    "order_atoms",
    "axis_latents",
    "gender_axis_figure",
    "axis_latent_figure",
    "cosine_heatmaps",
    "antipodal_figure",
    "width_sweep_figure",
    "ACTIVATION_COLORS",
]

#: one colour per activation, so a method has the same colour in every chapter
ACTIVATION_COLORS = {
    "abstopk": "#1f77b4",
    "batchabstopk": "#17becf",
    "absjumprelu": "#2ca02c",
    "topk": "#d62728",
    "batchtopk": "#ff7f0e",
    "jumprelu": "#9467bd",
    "relu": "#7f7f7f",
}
_MALE, _FEMALE, _NEUTRAL = "#1f77b4", "#d62728", "#7f7f7f"


# =============================================================================== shared helpers
class ReprFigure(Figure):
    """A matplotlib Figure that IPython shows as a PNG when it is a cell's value (no pyplot needed)."""

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=110)
        return buf.getvalue()


def new_figure(n_panels: int = 1, panel_size: tuple[float, float] = (4.8, 3.6), ncols: int | None = None):
    """A constrained-layout figure with ``n_panels`` axes in one row (or ``ncols`` columns).

    Returns (fig, axes) with ``axes`` a flat list of length ``n_panels``.
    """
    if n_panels < 1:
        raise ValueError(f"n_panels must be >= 1; got {n_panels}")
    ncols = ncols or n_panels
    nrows = -(-n_panels // ncols)
    fig = ReprFigure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


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


class Table:
    """Rows of results (dicts) shown as an HTML table in a notebook and as fixed-width text elsewhere.

    columns: the keys to show, in order (default: every key of the first row whose value is a
    str, int, float or None, so a model object in a row is left out). Floats print with ``digits``
    decimals unless ``formats`` gives a column its own format spec (``{"seconds": ".0f"}``).
    """

    def __init__(self, rows: Sequence[Mapping], columns: Sequence[str] | None = None, digits: int = 3,
                 formats: Mapping[str, str] | None = None):
        if not rows:
            raise ValueError("rows is empty; pass at least one dict of results")
        self.rows = list(rows)
        self.columns = list(columns) if columns is not None else [
            key for key, value in self.rows[0].items() if value is None or isinstance(value, (str, int, float))
        ]
        missing = [c for c in self.columns if c not in self.rows[0]]
        if missing:
            raise ValueError(f"columns {missing} are not keys of the rows (keys: {sorted(self.rows[0])})")
        self.digits = digits
        self.formats = dict(formats or {})

    def _cell(self, column: str, value) -> str:
        if value is None:
            return "-"
        if column in self.formats:
            return format(value, self.formats[column])
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        return str(value)

    def cells(self) -> list[list[str]]:
        return [[self._cell(c, row.get(c)) for c in self.columns] for row in self.rows]

    def __repr__(self) -> str:
        cells = self.cells()
        width = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(self.columns, width))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, width)) for r in cells]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        cell = "padding: 0.15em 0.7em; text-align: right; border-bottom: 1px solid #ddd"
        head = "".join(f'<th style="{cell}">{escape(c)}</th>' for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f'<td style="{cell}">{escape(v)}</td>' for v in r) + "</tr>" for r in self.cells()
        )
        return (f'<table class="abstopk-table" style="border-collapse: collapse; font-size: 0.85em">'
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


# =============================================================================== chapter 04
# A toy model of bidirectional features: the gender toy and the P signed axes benchmark.


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
    fig, (ax,) = new_figure(1, (8.0, 3.8))
    for word, (base, sign) in GENDER_CONCEPTS.items():
        rows = np.flatnonzero(words_arr == word)
        if not len(rows):
            continue
        rows = rng.choice(rows, size=min(per_word, len(rows)), replace=False)
        fam = "+".join(c for c in base if c != "person") or "person"
        y = families.index(fam) + rng.uniform(-0.15, 0.15, size=len(rows))
        color = {1: _MALE, -1: _FEMALE, 0: _NEUTRAL}[sign]
        ax.scatter(proj[rows], y, s=4, alpha=0.35, color=color, linewidths=0)
        ax.annotate(word, (float(np.median(proj[rows])), families.index(fam) + 0.22), ha="center", va="bottom",
                    fontsize=8, color=color)
    ax.set_yticks(range(len(families)), ["person (alone)" if f == "person" else f"person + {f}" for f in families])
    ax.set_ylim(-0.5, len(families) - 0.2)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("projection on the gender axis  $x \\cdot g$")
    ax.set_ylabel("word family (base concepts)")
    ax.set_title("The gender toy: male words at $+g$, female at $-g$, neutral at 0")
    for label, color in (("male", _MALE), ("female", _FEMALE), ("neutral", _NEUTRAL)):
        ax.scatter([], [], color=color, s=12, label=label)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="gender", title_fontsize=8)
    return fig


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
    fig, axes = new_figure(len(saes), (max(5.0, 0.5 * len(order)), 3.2), ncols=1)
    for ax, (title, sae) in zip(axes, saes.items()):
        with torch.no_grad():
            z = sae.encode(x.to(sae.W_enc.device)).float().cpu()
        picks = axis_latents(sae, axis)
        width = 0.8 / len(picks)
        pos = np.arange(len(order))
        for j, (latent, cos) in enumerate(picks):
            flip = -1.0 if (_is_signed(sae) and cos < 0) else 1.0
            means = [float(z[words_arr == w, latent].mean()) * flip if (words_arr == w).any() else np.nan for w in order]
            label = f"latent {latent} (atom·g cos {cos * flip:+.2f})"
            color = _MALE if cos * flip >= 0 else _FEMALE
            ax.bar(pos + (j - (len(picks) - 1) / 2) * width, means, width, label=label, color=color,
                   alpha=0.85 if j == 0 else 0.6)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(pos, order, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("word")
        ax.set_ylabel("mean activation")
        if len(picks) == 2:
            D = _dictionary(sae)
            pair = float(metrics.cosine_matrix(D[:, [picks[0][0]]], D[:, [picks[1][0]]])[0, 0])
            what = f"two latents for the {axis_name} axis" if pair < -0.9 else f"the latents nearest to ±{axis_name}"
            title = f"{title}: {what} (cos between their atoms {pair:+.2f})"
        else:
            aligned = abs(picks[0][1]) >= 0.9
            title = f"{title}: " + (f"one signed latent for the {axis_name} axis" if aligned else f"the latent nearest to the {axis_name} axis")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def cosine_heatmaps(D_true: torch.Tensor, saes: Mapping[str, object], rows: Mapping[str, dict] | None = None,
                    axis_labels: Sequence[str] | None = None, panel_size: tuple[float, float] = (2.5, 2.5)) -> Figure:
    """Cosine between each true axis (rows) and each learned atom (columns), one panel per SAE.

    Columns are in :func:`order_atoms` order (matches on the diagonal, then the rest). The
    atoms of a signed SAE are flipped to point along the axis they match, because their sign is
    arbitrary; a nonnegative SAE's atoms are shown as learned, so its ± pairs show up as a red
    and a blue entry in the same row. ``rows`` ({title: metrics dict}) adds MCC and FVU to the
    titles.

    shape: D_true [d, P]; each SAE's W_dec [Q, d] (or a tensor of atoms [d, Q])
    """
    fig, axes = new_figure(len(saes), panel_size)
    image = None
    for ax, (title, sae) in zip(axes, saes.items()):
        D = _dictionary(sae)
        if _is_signed(sae):  # point each atom along the axis it matches best (same code, z -> -z)
            C = metrics.cosine_matrix(D_true, D)
            best = C.gather(0, C.abs().argmax(0, keepdim=True))  # [1, Q]
            D = D * torch.where(best < 0, -1.0, 1.0).float()
        C = metrics.cosine_matrix(D_true, D[:, order_atoms(D_true, D)])  # [P, Q]
        image = ax.imshow(C.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"learned atom ({D.shape[1]}, matched first)", fontsize=8)
        ax.set_ylabel("true axis", fontsize=8)
        if axis_labels is not None:
            ax.set_yticks(range(len(axis_labels)), axis_labels)
        ax.tick_params(labelsize=7)
        row = (rows or {}).get(title)
        if row:
            title = f"{title}\nMCC {row['mcc']:.2f}, FVU {row['fvu']:.3f}, {row['split_axes']} split"
        ax.set_title(title, fontsize=8)
    bar = fig.colorbar(image, ax=axes, shrink=0.9)
    bar.set_label("cos(true axis, learned atom)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def _most_opposite(D: torch.Tensor) -> torch.Tensor:
    """For each atom, the smallest cosine with any other atom.  shape: D [d, Q] -> [Q]"""
    G = metrics.cosine_matrix(D, D)
    G.fill_diagonal_(float("inf"))
    return G.min(dim=1).values


def antipodal_figure(saes: Mapping[str, object], below: float = -0.9, bins: int = 40) -> Figure:
    """Histogram, per SAE, of each atom's most negative cosine with another atom of the same SAE.

    Needs no ground truth: a spike near −1 is a dictionary that codes axes as ± pairs
    (:func:`abstopk_mini.metrics.antipodal_pairs` counts the pairs below ``below``).
    """
    fig, (ax,) = new_figure(1, (6.4, 3.6))
    edges = np.linspace(-1, 0.2, bins + 1)
    for i, (title, sae) in enumerate(saes.items()):
        D = _dictionary(sae)
        m = _most_opposite(D).numpy()
        n_pairs = metrics.antipodal_pairs(D.T, below)
        ax.hist(np.clip(m, edges[0], edges[-1]), bins=edges, alpha=0.5, color=f"C{i}", histtype="stepfilled",
                edgecolor=f"C{i}", label=f"{title}: {D.shape[1]} atoms, {n_pairs} pairs below {below}")
    ax.axvline(below, color="k", lw=0.8, ls="--")
    ax.set_xlabel("most negative cosine between an atom and another atom")
    ax.set_ylabel("number of atoms")
    ax.set_title("Antipodal pairs: nonnegative codes spend two atoms per axis")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def width_sweep_figure(rows: Sequence[Mapping], P: int,
                       panels: Sequence[tuple[str, str]] = (("fvu", "FVU (held out)"), ("mcc", "MCC with the true axes"),
                                                            ("split_axes", "axes split into a ± pair"))) -> Figure:
    """Metrics against dictionary width (d_sae / P), one line per activation.

    rows: dicts with ``activation``, ``d_sae`` and the keys named in ``panels`` (the rows of
    :func:`abstopk_mini.chapters.widgets.toy_fit` or :func:`abstopk_mini.coding.toy.toy_benchmark`).
    """
    if not rows:
        raise ValueError("rows is empty; pass the rows of a width sweep")
    fig, axes = new_figure(len(panels), (2.7, 2.6))
    activations = list(dict.fromkeys(r["activation"] for r in rows))
    for ax, (key, label) in zip(axes, panels):
        for act in activations:
            pts = sorted((r["d_sae"] / P, r[key]) for r in rows if r["activation"] == act)
            ax.plot(*zip(*pts), "o-", color=ACTIVATION_COLORS.get(act), label=act)
        ax.set_xlabel("width  d_sae / P")
        ax.set_ylabel(label)
        ax.set_title(f"{label}", fontsize=9)
        ax.axvline(1, color="k", lw=0.5, ls=":")
        ax.axvline(2, color="k", lw=0.5, ls=":")
        ax.legend(fontsize=8)
    return fig
