r"""Figures of the theory chapters (01-03). Every function returns a :class:`matplotlib.figure.Figure`.

The inputs are the plain results of :mod:`abstopk_mini.chapters.experiments_theory` and
:mod:`abstopk_mini.chapters.experiments_unrolled` (dicts of arrays,
lists of row dicts). Figures are :class:`abstopk_mini.chapters.style.Figure` objects built without
``pyplot`` (nothing is drawn twice, nothing piles up in pyplot's registry) that show themselves as
a PNG when they are a cell's value; colours, sizes and fonts come from
:mod:`abstopk_mini.chapters.style`. Every axes has an x label, a y label and a title.

* Chapter 01: :func:`convergence_figure`, :func:`recovery_figure`.
* Chapter 02: :func:`prox_maps_figure`, :func:`signed_axis_figure`.
* Chapter 03: :func:`solver_steps_figure`, :func:`unrolled_figure`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from . import style
from .experiments_theory import PROX_MAPS, summarize
from .style import color as _color

__all__ = [
    "convergence_figure", "recovery_figure", "prox_maps_figure", "signed_axis_figure",
    "solver_steps_figure", "unrolled_figure",
]


def _panels(n: int, height: float = 2.8, ncols: int | None = None):
    """A full-width figure of ``n`` axes in rows of ``ncols`` (default: one row); ``height`` per row."""
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = style.subplots(nrows, ncols, height=height * nrows, squeeze=False)
    return fig, list(axes.flat)[:n]


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


# ============================================================================ chapter 01
@style.styled
def convergence_figure(curves: dict) -> Figure:
    """(a) Lasso suboptimality of ISTA and FISTA, (b) relative residual of IHT with η = 1 and 1/L.

    curves: the dict of :func:`~abstopk_mini.chapters.experiments_theory.convergence_curves`.
    """
    fig, (a, b) = _panels(2)
    t = _np(curves["step"])
    floor = 1e-16
    a.semilogy(t, np.maximum(_np(curves["ista"]), floor), color=_color("ISTA"), label="ISTA")
    a.semilogy(t, np.maximum(_np(curves["fista"]), floor), color=_color("FISTA"), label="FISTA")
    a.set(xlabel="iteration t", ylabel=r"$F(z^t) - F^\star$ (mean)", title="Lasso: ISTA vs FISTA")
    L = curves["L"]
    b.semilogy(t, _np(curves["iht_eta1"]), color=_color("IHT, η=1"), label="IHT, η = 1")
    b.semilogy(t, _np(curves["iht_eta1/L"]), color=_color("IHT, η=1/L"), label=f"IHT, η = 1/L = {1 / L:.2f}")
    b.set(xlabel="iteration t", ylabel=r"$\|x - Dz^t\|^2 / \|x\|^2$ (mean)", title="k-sparse: IHT, two step sizes")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return style.legend_below(fig, ncol=2)  # below the panels: the curves fill them


@style.styled
def recovery_figure(rows: list[dict], param: str) -> Figure:
    """Support recovery (share of true non-zeros found) and exact-support rate vs ``param`` ("k" or "rho").

    rows: from :func:`~abstopk_mini.chapters.experiments_theory.recovery_sweep`.
    """
    xlabel = {"k": "non-zeros per signal k", "rho": r"cosine $\rho$ of paired atoms"}.get(param, param)
    fig, (a, b) = _panels(2, height=3.4)
    for m in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == m]
        xs = [r[param] for r in sel]
        a.plot(xs, [r["recovery"] for r in sel], "o-", color=_color(m), label=m)
        b.plot(xs, [r["exact"] for r in sel], "o-", color=_color(m), label=m)
    what = "k" if param == "k" else "coherence"
    a.set(xlabel=xlabel, ylabel="true non-zeros recovered", title=f"Support recovery vs {what}", ylim=(-0.03, 1.03))
    b.set(xlabel=xlabel, ylabel="signals with the exact support", title=f"Exact recovery vs {what}", ylim=(-0.03, 1.03))
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.legend(*a.get_legend_handles_labels(), loc="outside lower center", ncol=4, columnspacing=1.0, handlelength=1.5)
    return fig


# ============================================================================ chapter 02
@style.styled
def prox_maps_figure(u_grid, curves: dict, *, lam: float, theta: float, k: int, rest) -> Figure:
    """The six proximal maps u_1 ↦ z_1 side by side (the other entries of u fixed to ``rest``).

    curves: from :func:`~abstopk_mini.chapters.experiments_theory.prox_map_curves`. Top row: signed maps
    (no sign constraint); bottom row: the same regulariser plus z ≥ 0.
    """
    order = ["soft threshold", "hard threshold", "AbsTopK", "ReLU", "JumpReLU", "TopK"]
    fig, axes = _panels(6, height=2.6, ncols=3)
    u = _np(u_grid)
    rest = np.asarray(rest, dtype=float)
    kth_val = np.sort(rest)[::-1][k - 1]
    kth_abs = np.sort(np.abs(rest))[::-1][k - 1]
    for ax, name in zip(axes, order):
        z = _np(curves[name])
        signed = name in ("soft threshold", "hard threshold", "AbsTopK")
        ax.plot(u, u, color="0.8", lw=1, ls="--", label="identity")
        # draw jumps as gaps: break the line where z jumps
        zz = z.astype(float).copy()
        jumps = np.where(np.abs(np.diff(zz)) > 2 * (u[1] - u[0]))[0]
        zz[jumps] = np.nan
        ax.plot(u, zz, color=_color("abstopk" if signed else "topk"), lw=2)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        if name in ("TopK", "AbsTopK"):
            cut = kth_val if name == "TopK" else kth_abs
            ax.axvline(cut, color="0.4", lw=0.8, ls=":")
            if name == "AbsTopK":
                ax.axvline(-cut, color="0.4", lw=0.8, ls=":")
        reg = PROX_MAPS[name][0]
        ax.set(xlabel=r"input $u_1$", ylabel=r"output $z_1$", title=f"{name}\n{reg}")
        ax.set_xticks([-2, 0, 2])
        ax.set_yticks([-2, 0, 2])
        ax.set_aspect("equal", adjustable="box")
    fig.suptitle(rf"Proximal maps ($\lambda = {lam:g}$, $\theta = {theta:g}$, $k = {k}$): signed (top), $z \geq 0$ (bottom);"
                 "\n" r"dotted: the $k$-th largest other entry, where TopK / AbsTopK cut")
    return fig


@style.styled
def signed_axis_figure(codes: dict) -> Figure:
    """Coding x = a·d_i along one signed axis with one step of three encoders, and the error vs a.

    Panels: the latent(s) of axis i for AbsTopK on D, TopK on D, TopK on [D, −D]; then the
    squared reconstruction error of each. codes: from
    :func:`~abstopk_mini.chapters.experiments_theory.signed_axis_codes`.
    """
    fig, axes = _panels(4, height=2.9, ncols=2)
    t = _np(codes["a"])
    xlabel = r"coefficient $a$ of $x = a\,d_i$"
    # TopK on [D, −D] is TopK with a second atom per axis: TopK's colour, dotted
    signed, topk = _color("abstopk"), _color("topk")
    axes[0].plot(t, _np(codes["abstopk"]), color=signed, lw=2)  # one line per panel: the title names it
    axes[0].set(title="AbsTopK on D: one latent")
    axes[1].plot(t, _np(codes["topk"]), color=topk, lw=2)
    axes[1].set(title="TopK on D: half the axis")
    axes[2].plot(t, _np(codes["topk_pm_plus"]), color=topk, lw=2, label=r"latent for $+d_i$")
    axes[2].plot(t, _np(codes["topk_pm_minus"]), color=topk, lw=2, ls=":", label=r"latent for $-d_i$")
    axes[2].set(title="TopK on [D, −D]: two latents")
    for ax in axes[:3]:
        ax.set(xlabel=xlabel, ylabel="latent value z", ylim=(t.min() - 0.2, t.max() + 0.2))
    axes[3].plot(t, _np(codes["err_abstopk"]), color=signed, lw=3, label="AbsTopK on D")
    axes[3].plot(t, _np(codes["err_topk"]), color=topk, lw=2, label="TopK on D")
    axes[3].plot(t, _np(codes["err_topk_pm"]), color=topk, lw=1.5, ls=":", label="TopK on [D, −D]")
    axes[3].set(xlabel=xlabel, ylabel=r"$\|x - \hat x\|^2$", title="Reconstruction error")
    for ax in axes:
        ax.grid(alpha=0.3)
    return style.legend_below(fig, ncol=3)  # below the panels: the curves fill them


# ============================================================================ chapter 03
@style.styled
def solver_steps_figure(rows: list[dict]) -> Figure:
    """FVU (log) and support recovery vs the number of steps T of solvers with the true dictionary.

    rows: from :func:`~abstopk_mini.chapters.experiments_unrolled.solver_steps_sweep`.
    """
    fig, (a, b) = _panels(2)
    for m in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == m]
        T = [r["T"] for r in sel]
        a.plot(T, [r["fvu"] for r in sel], "o-", color=_color(m), label=m)
        b.plot(T, [r["recovery"] for r in sel], "o-", color=_color(m), label=m)
    a.set(xscale="log", yscale="log", xlabel="steps T", ylabel="FVU (held-out signals)", title="Known D: FVU vs T")
    b.set(xscale="log", xlabel="steps T", ylabel="true non-zeros recovered", title="Known D: recovery vs T",
          ylim=(-0.03, 1.03))
    for ax in (a, b):
        ax.set_xticks(sorted({r["T"] for r in rows}), [str(t) for t in sorted({r["T"] for r in rows})])
        ax.grid(alpha=0.3)
    return style.legend_below(fig, ncol=3)  # below the panels: in the FVU panel it covered a curve (Fig 3.1)


@style.styled
def unrolled_figure(rows: list[dict]) -> Figure:
    """Trained T-step encoders: FVU, code recovery and encode time vs T (mean over seeds, min-max bars).

    rows: from :func:`~abstopk_mini.chapters.experiments_unrolled.unrolled_training_sweep`. Solid: trained with
    T steps; dashed: trained with 1 step, run with T (``trained_T = 1``).
    """
    s = summarize(rows, ("activation", "d_sae", "trained_T", "T"), ("fvu", "recovery", "encode_us_per_token"))
    fig, axes = _panels(4, height=3.0, ncols=2)
    key_ax = axes.pop()  # the fourth slot holds the legend
    for act in dict.fromkeys(r["activation"] for r in s):
        d_sae = next(r["d_sae"] for r in s if r["activation"] == act)
        trained = [r for r in s if r["activation"] == act and r["trained_T"] == r["T"]]
        infer = [r for r in s if r["activation"] == act and r["trained_T"] == 1]
        for sel, ls, tag in ((trained, "-", f"{act} (d_sae={d_sae}), trained with T"), (infer, "--", f"{act}, trained with T=1")):
            if len(sel) < 2:
                continue
            T = np.array([r["T"] for r in sel])
            for ax, key in zip(axes[:2], ("fvu", "recovery")):
                m = np.array([r[key] for r in sel])
                err = np.array([[r[key] - r[f"{key}_min"] for r in sel], [r[f"{key}_max"] - r[key] for r in sel]])
                ax.errorbar(T, m, yerr=err, fmt="o" + ls, color=_color(act), capsize=3, label=tag)
        # cost: the best time over seeds (timings on a shared machine only get slower), and FLOPs ∝ 2T − 1
        T = np.array([r["T"] for r in trained])
        best = np.array([r["encode_us_per_token_min"] for r in trained])
        axes[2].plot(T, best, "o-", color=_color(act), label=f"{act} (d_sae={d_sae}), measured")
        axes[2].plot(T, best[0] * (2 * T - 1), ":", color=_color(act), label=f"{act}, T=1 time × (2T − 1)")
    steps = sorted({r["T"] for r in s})
    axes[0].set(xlabel="encoder steps T", ylabel="FVU (held-out)", title="Reconstruction vs T")
    axes[1].set(xlabel="encoder steps T", ylabel="(axis, sign) recovered", title="Code recovery vs T")
    axes[2].set(xlabel="encoder steps T", ylabel="µs per token (best seed)", title="Encode time vs T")
    for ax in axes:
        ax.set_xticks(steps)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[2].get_legend_handles_labels()
    key_ax.legend(handles + h2, labels + l2, loc="center", frameon=False,
                  title="solid: trained with T\ndashed: trained with T=1, run with T")
    key_ax.set_axis_off()
    return fig
