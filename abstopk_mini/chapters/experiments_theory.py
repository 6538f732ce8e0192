r"""Experiments of the theory chapters 01-02: synthetic sparse codes, solvers, proximal maps.

Each function runs one measurement and returns plain numbers (a dict of arrays or a list of
row dicts) for a notebook to print and for :mod:`abstopk_mini.chapters.plots_theory` to draw.

**Data.** A dictionary :math:`D \in \mathbb R^{d\times P}` with unit-norm columns (atoms) and
codes with exactly k non-zeros per row, random signs and amplitudes in :math:`[a_{lo}, a_{hi}]`;
the signals are :math:`x = D z` (row form ``x = z @ D.T``), noise-free.

**Support recovery.** All methods are told k. A method's support is the k entries of largest
:math:`|\hat z_i|` (for the Lasso this reads a support off a solution that may have more or
fewer non-zeros); the score is the share of the true non-zeros that land in it.
Chapter 03 (unrolled encoders) lives in :mod:`abstopk_mini.chapters.experiments_unrolled`.
"""

from __future__ import annotations

import itertools
import math

import torch

from .. import metrics
from ..coding import prox
from ..tables import format_table
from ..coding.unroll import fista, iht, ista, lasso_objective, lipschitz, one_step, sae_from_dictionary

__all__ = [
    "random_dictionary", "paired_dictionary", "mutual_coherence", "sparse_codes",
    "support_recovery", "exact_support_rate", "fit_summary", "SOLVERS", "solve", "convergence_curves",
    "recovery_sweep", "PROX_MAPS", "prox_map_curves", "brute_force_prox", "prox_check",
    "one_step_check", "signed_axis_codes", "one_step_signed_table", "summarize", "pivot", "curves_table",
    "format_rows",
]


# ============================================================================ chapter 01: data
def random_dictionary(d: int, P: int, seed: int = 0) -> torch.Tensor:
    """P Gaussian directions in R^d, normalised.  shape: -> D [d, P] float64, unit columns"""
    if d < 1 or P < 1:
        raise ValueError(f"d and P must be >= 1; got d={d}, P={P}")
    D = torch.randn(d, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return D / D.norm(dim=0)


def paired_dictionary(d: int, P: int, rho: float, seed: int = 0) -> torch.Tensor:
    r"""P/2 random atoms, each followed by a partner at cosine exactly ``rho``.

    Partner of :math:`d_i`: :math:`\rho\, d_i + \sqrt{1-\rho^2}\, g_i` with :math:`g_i` a random unit
    vector orthogonal to :math:`d_i`. Raising ``rho`` raises the coherence of the dictionary
    (two features that look alike, "cat" and "kitten") at fixed d and P.
    shape: -> D [d, P] float64, columns 2i and 2i+1 are a pair
    """
    if P % 2 or not 0 <= rho < 1:
        raise ValueError(f"need an even P and 0 <= rho < 1; got P={P}, rho={rho}")
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(d, P // 2, generator=gen, dtype=torch.float64)
    A = A / A.norm(dim=0)
    G = torch.randn(d, P // 2, generator=gen, dtype=torch.float64)
    G = G - (G * A).sum(0) * A
    G = G / G.norm(dim=0)
    B = rho * A + math.sqrt(1 - rho**2) * G
    return torch.stack([A, B], dim=2).reshape(d, P)


def mutual_coherence(D: torch.Tensor) -> float:
    r"""μ(D) = max_{i≠j} |⟨d_i, d_j⟩| for unit columns.  shape: D [d, P] -> float"""
    C = metrics.cosine_matrix(D, D).abs()
    C.fill_diagonal_(0)
    return C.max().item()


def sparse_codes(n: int, P: int, k: int, amplitude=(0.5, 1.5), seed: int = 0) -> torch.Tensor:
    """Codes with exactly k non-zeros per row (uniform support, sign ±1 with p = 1/2, |z_i| ~ U[lo, hi]).

    shape: -> z [n, P] float64
    """
    if not 1 <= k <= P:
        raise ValueError(f"k must satisfy 1 <= k <= P={P}; got k={k}")
    gen = torch.Generator().manual_seed(seed)
    support = torch.rand(n, P, generator=gen).argsort(dim=1)[:, :k]
    lo, hi = amplitude
    amp = lo + (hi - lo) * torch.rand(n, k, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(n, k, generator=gen) < 0.5, -1.0, 1.0).double()
    return torch.zeros(n, P, dtype=torch.float64).scatter(1, support, sign * amp)


def _k_of(z_true: torch.Tensor) -> int:
    counts = (z_true != 0).sum(-1)
    if counts.min() != counts.max() or counts.min() == 0:
        raise ValueError(f"z_true must have the same number (>= 1) of non-zeros in every row; got {counts.min()}..{counts.max()}")
    return int(counts[0])


def _topk_mask(z_hat: torch.Tensor, k: int) -> torch.Tensor:
    idx = z_hat.abs().topk(k, dim=-1).indices
    return torch.zeros_like(z_hat, dtype=torch.bool).scatter(-1, idx, True)


def support_recovery(z_hat: torch.Tensor, z_true: torch.Tensor) -> float:
    """Share of the true non-zeros among the k largest |ẑ_i| of their row (k = true count).

    shape: z_hat, z_true [n, P] -> float in [0, 1]
    """
    k = _k_of(z_true)
    hit = _topk_mask(z_hat, k) & (z_true != 0)
    return hit.sum().item() / (z_true != 0).sum().item()


def exact_support_rate(z_hat: torch.Tensor, z_true: torch.Tensor) -> float:
    """Share of rows whose k largest |ẑ_i| are exactly the true support.  shape: [n, P] -> float"""
    k = _k_of(z_true)
    return (_topk_mask(z_hat, k) == (z_true != 0)).all(-1).double().mean().item()


def fit_summary(x: torch.Tensor, D: torch.Tensor, z_hat: torch.Tensor, z_true: torch.Tensor) -> dict:
    """How well a code fits: mean L0, FVU of x̂ = ẑ Dᵀ, the median relative residual
    ‖x − x̂‖²/‖x‖², the share of signals that diverged (relative residual > 1, worse than ẑ = 0),
    and :func:`support_recovery`.  shape: x [n, d], D [d, P], z_hat, z_true [n, P] -> dict
    """
    x_hat = z_hat @ D.T
    rel = (x - x_hat).pow(2).sum(-1) / x.pow(2).sum(-1).clamp_min(1e-30)
    return {"l0": metrics.l0(z_hat), "fvu": metrics.fvu(x, x_hat), "median_rel_residual": rel.median().item(),
            "diverged": (rel > 1).double().mean().item(), "recovery": support_recovery(z_hat, z_true)}


# ============================================================================ chapter 01: solvers
#: the sparse-coding methods compared in chapter 01 (all told k; see the module docstring)
SOLVERS = ("one step", "IHT, η=1", "IHT, η=1/L", "Lasso (FISTA)")


def solve(method: str, x: torch.Tensor, D: torch.Tensor, k: int, n_steps: int = 100, lam: float = 0.1) -> torch.Tensor:
    """Run one of :data:`SOLVERS`.  shape: x [n, d], D [d, P] -> z [n, P]

    "one step" is abs_topk(Dᵀx): one IHT step from 0, i.e. an AbsTopK encoder with W_enc = D.
    The Lasso runs ``3 * n_steps`` FISTA steps (its O(1/t²) rate needs more than IHT's).
    """
    if method == "one step":
        return iht(x, D, k, 1)
    if method == "IHT, η=1":
        return iht(x, D, k, n_steps)
    if method == "IHT, η=1/L":
        return iht(x, D, k, n_steps, step=1.0 / lipschitz(D))
    if method == "Lasso (FISTA)":
        return fista(x, D, lam, 3 * n_steps)
    raise ValueError(f"method={method!r}; choose one of {SOLVERS}")


def convergence_curves(x: torch.Tensor, D: torch.Tensor, k: int, lam: float = 0.1, n_steps: int = 200) -> dict:
    r"""Per-iteration progress of ISTA, FISTA (Lasso) and IHT (k-sparse), averaged over rows.

    Lasso: suboptimality F(z^t) − F* of F = ½‖x − Dz‖² + λ‖z‖₁, with F* from 20·n_steps FISTA
    steps (and never above the best value seen). IHT: relative residual ‖x − Dz^t‖² / ‖x‖².
    shape: x [n, d], D [d, P] -> dict of [n_steps] float64 tensors, plus ``L`` and ``F_star``
    """
    _, h_ista = ista(x, D, lam, n_steps, return_history=True)
    _, h_fista = fista(x, D, lam, n_steps, return_history=True)
    z_ref = fista(x, D, lam, 20 * n_steps)
    f_star = torch.minimum(lasso_objective(x, D, z_ref, lam), torch.minimum(h_ista.min(0).values, h_fista.min(0).values))
    energy = 0.5 * x.pow(2).sum(-1)
    out = {"step": torch.arange(1, n_steps + 1), "L": lipschitz(D), "F_star": f_star.mean().item()}
    out["ista"] = (h_ista - f_star).mean(1)
    out["fista"] = (h_fista - f_star).mean(1)
    for name, step in (("iht_eta1", 1.0), ("iht_eta1/L", 1.0 / out["L"])):
        _, h = iht(x, D, k, n_steps, step=step, return_history=True)
        out[name] = (h / energy).mean(1)
    return out


def recovery_sweep(param: str, values, *, d: int = 64, P: int = 128, k: int = 4, rho: float = 0.0, n: int = 500,
                   n_steps: int = 100, lam: float = 0.1, methods=SOLVERS, seed: int = 0) -> list[dict]:
    """Support recovery of each method as one parameter varies: ``param`` is "k" or "rho".

    "k": codes with k non-zeros, a random dictionary [d, P]. "rho": a :func:`paired_dictionary`
    with partner cosine rho, codes with k non-zeros. Returns one row per (value, method):
    param value, method, recovery, exact (rate), coherence μ(D).
    """
    if param not in ("k", "rho"):
        raise ValueError(f"param={param!r}; sweep 'k' or 'rho'")
    rows = []
    for v in values:
        kk, r = (int(v), rho) if param == "k" else (k, float(v))
        D = paired_dictionary(d, P, r, seed=seed) if r > 0 else random_dictionary(d, P, seed=seed)
        z = sparse_codes(n, P, kk, seed=seed + 1)
        x = z @ D.T
        mu = mutual_coherence(D)
        for m in methods:
            z_hat = solve(m, x, D, kk, n_steps=n_steps, lam=lam)
            rows.append({param: v, "method": m, "recovery": support_recovery(z_hat, z),
                         "exact": exact_support_rate(z_hat, z), "coherence": mu})
    return rows


# ============================================================================ chapter 02: prox maps
#: the six proximal maps of chapter 02: name -> (regulariser in LaTeX, how to call am.prox)
PROX_MAPS = {
    "soft threshold": (r"$\lambda\|z\|_1$", lambda u, p: prox.soft_threshold(u, p["lam"])),
    "ReLU": (r"$\lambda\|z\|_1 + \iota_{z\geq 0}$", lambda u, p: prox.soft_threshold(u, p["lam"], nonneg=True)),
    "hard threshold": (r"$\frac{\theta^2}{2}\|z\|_0$", lambda u, p: prox.hard_threshold(u, p["theta"])),
    "JumpReLU": (r"$\frac{\theta^2}{2}\|z\|_0 + \iota_{z\geq 0}$", lambda u, p: prox.hard_threshold(u, p["theta"], nonneg=True)),
    "TopK": (r"$\iota\{\|z\|_0 \leq k,\ z \geq 0\}$", lambda u, p: prox.topk(u, p["k"])),
    "AbsTopK": (r"$\iota\{\|z\|_0 \leq k\}$", lambda u, p: prox.abs_topk(u, p["k"])),
}


def prox_map_curves(u_grid: torch.Tensor, rest, *, lam: float = 1.0, theta: float = 1.0, k: int = 2) -> dict:
    """z_1 as a function of u_1 for each map of :data:`PROX_MAPS`, the other entries fixed to ``rest``.

    For the separable maps ``rest`` does not matter; for TopK / AbsTopK it sets the cut:
    u_1 survives when it beats the k-th largest of ``rest`` (by value / by magnitude).
    shape: u_grid [G], rest [n - 1] -> {name: z_1 [G]}
    """
    rest = torch.as_tensor(rest, dtype=torch.float64)
    u = torch.cat([u_grid.double()[:, None], rest.expand(len(u_grid), -1)], dim=1)
    params = {"lam": lam, "theta": theta, "k": k}
    return {name: fn(u, params)[:, 0] for name, (_, fn) in PROX_MAPS.items()}


def brute_force_prox(u: torch.Tensor, name: str, *, lam: float = 1.0, theta: float = 1.0, k: int = 2,
                     grid=torch.linspace(-6, 6, 12001, dtype=torch.float64)) -> torch.Tensor:
    r"""An independent reference for :data:`PROX_MAPS`: minimise ½‖u − z‖² + R(z) by search.

    Separable maps: per entry, the best z on ``grid`` ∪ {u_i, 0} (u_i is included so a hard
    threshold can keep the exact value). k-sparse sets: every support S with |S| ≤ k; on S the
    best z is u_S (clipped at 0 for TopK), so the objective is compared over all supports.
    Ties go to the sparser / lower-index candidate, as in :mod:`abstopk_mini.coding.prox`.
    shape: u [n] -> z [n] float64
    """
    u = u.double()
    if name in ("TopK", "AbsTopK"):
        best, best_val = torch.zeros_like(u), 0.5 * u.pow(2).sum().item()
        for size in range(1, k + 1):
            for S in itertools.combinations(range(len(u)), size):
                z = torch.zeros_like(u)
                z[list(S)] = u[list(S)].clamp_min(0) if name == "TopK" else u[list(S)]
                val = 0.5 * (u - z).pow(2).sum().item()
                if val < best_val - 1e-12:
                    best, best_val = z, val
        return best
    regs = {
        "soft threshold": lambda z: lam * z.abs(),
        "ReLU": lambda z: torch.where(z >= 0, lam * z, torch.inf),
        "hard threshold": lambda z: (theta**2 / 2) * (z != 0),
        "JumpReLU": lambda z: torch.where(z >= 0, (theta**2 / 2) * (z != 0), torch.inf),
    }
    if name not in regs:
        raise ValueError(f"name={name!r}; choose one of {list(PROX_MAPS)}")
    R = regs[name]
    out = torch.empty_like(u)
    for i, ui in enumerate(u):
        cand = torch.cat([torch.zeros(1, dtype=torch.float64), ui.reshape(1), grid])  # 0 first: ties -> sparser
        obj = 0.5 * (ui - cand).pow(2) + R(cand)
        out[i] = cand[torch.argmin(obj)]
    return out


def prox_check(n: int = 8, n_vectors: int = 20, seed: int = 0, **params) -> list[dict]:
    """max |am.prox map − brute force| over random vectors u ~ N(0, 1.5²)^n, one row per map.

    params: lam, theta, k (defaults 1, 1, 2). Rows: map, how the brute force searched, max_abs_diff.
    """
    gen = torch.Generator().manual_seed(seed)
    U = 1.5 * torch.randn(n_vectors, n, generator=gen, dtype=torch.float64)
    p = {"lam": 1.0, "theta": 1.0, "k": 2} | params
    search = {"soft threshold": "grid, step 1e-3", "ReLU": "grid, step 1e-3", "hard threshold": "grid + {0, u_i}",
              "JumpReLU": "grid + {0, u_i}", "TopK": f"all supports |S| <= {p['k']}", "AbsTopK": f"all supports |S| <= {p['k']}"}
    rows = []
    for name, (_, fn) in PROX_MAPS.items():
        err = max((fn(u[None], p)[0] - brute_force_prox(u, name, **p)).abs().max().item() for u in U)
        rows.append({"map": name, "brute force": search[name], "max_abs_diff": err})
    return rows


# ============================================================================ chapter 02: one step = SAE
def one_step_check(x: torch.Tensor, D: torch.Tensor, *, eta: float, lam: float, k: int, b=None) -> list[dict]:
    """For each one-step activation: max |one_step(x) − sae_from_dictionary(...).encode(x)| and the mean L0.

    shape: x [n, d], D [d, P] -> rows {activation, max_abs_diff, l0}
    """
    rows = []
    for act in ("relu", "jumprelu", "absjumprelu", "topk", "abstopk"):
        z1 = one_step(x, D, act, eta=eta, lam=lam, k=k, b=b)
        sae = sae_from_dictionary(D, act, eta=eta, lam=lam, k=k, b=b, dtype="float64")
        with torch.no_grad():
            z2 = sae.encode(x)
        rows.append({"activation": act, "max_abs_diff": (z1 - z2).abs().max().item(), "l0": metrics.l0(z1)})
    return rows


def signed_axis_codes(D: torch.Tensor, axis: int, a_grid: torch.Tensor, k: int = 1) -> dict:
    """Encode x = a·d_axis for a on a grid with one step of AbsTopK (D), TopK (D) and TopK ([D, −D]).

    Returns the grid, the codes of the latents that belong to the axis (AbsTopK: latent ``axis``;
    TopK on D: latent ``axis``; TopK on [D, −D]: latents ``axis`` (+d) and ``P + axis`` (−d))
    and the squared reconstruction error ‖x − x̂‖² of each encoder along the grid.
    shape: D [d, P], a_grid [G] -> dict of [G] tensors
    """
    P = D.shape[1]
    a = a_grid.double()
    x = a[:, None] * D[:, axis]
    D2 = torch.cat([D, -D], dim=1)
    z_abs = one_step(x, D, "abstopk", eta=1.0, k=k)
    z_top = one_step(x, D, "topk", eta=1.0, k=k)
    z_two = one_step(x, D2, "topk", eta=1.0, k=k)
    err = lambda z, Dm: (x - z @ Dm.T).pow(2).sum(-1)
    return {
        "a": a, "abstopk": z_abs[:, axis], "topk": z_top[:, axis],
        "topk_pm_plus": z_two[:, axis], "topk_pm_minus": z_two[:, P + axis],
        "err_abstopk": err(z_abs, D), "err_topk": err(z_top, D), "err_topk_pm": err(z_two, D2),
    }


def one_step_signed_table(x: torch.Tensor, z_true: torch.Tensor, D: torch.Tensor, k: int) -> list[dict]:
    """One step (η = 1) with the true dictionary: AbsTopK on D vs TopK on D vs TopK on [D, −D].

    recovery: share of the true signed non-zeros (i, sign) coded by a latent of that axis with
    the same sign (for [D, −D], latent P + i counts as axis i with sign −). FVU of x̂ = z Dᵀ.
    shape: x [n, d], z_true [n, P], D [d, P] -> rows
    """
    P = D.shape[1]
    D2 = torch.cat([D, -D], dim=1)
    runs = [("AbsTopK", "D", D, one_step(x, D, "abstopk", eta=1.0, k=k)),
            ("TopK", "D", D, one_step(x, D, "topk", eta=1.0, k=k)),
            ("TopK", "[D, −D]", D2, one_step(x, D2, "topk", eta=1.0, k=k))]
    rows = []
    for enc, dic, Dm, z in runs:
        signed = z if z.shape[1] == P else z[:, :P] - z[:, P:]  # fold ±latents back onto axes
        on = z_true != 0
        hit = (torch.sign(signed) == torch.sign(z_true)) & on
        rows.append({"encoder": enc, "dictionary": dic, "latents": Dm.shape[1], "k": k,
                     "recovery": hit.sum().item() / on.sum().item(), "fvu": metrics.fvu(x, z @ Dm.T),
                     "l0": metrics.l0(z)})
    return rows


# ============================================================================ tables
def summarize(rows: list[dict], by, values) -> list[dict]:
    """Group rows by the keys ``by`` (first-seen order) and give the mean, min and max of each
    key in ``values`` (``fvu``, ``fvu_min``, ``fvu_max``, ...) and the group size ``n``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, members in groups.items():
        row = dict(zip(by, key)) | {"n": len(members)}
        for v in values:
            xs = [m[v] for m in members]
            row |= {v: sum(xs) / len(xs), f"{v}_min": min(xs), f"{v}_max": max(xs)}
        out.append(row)
    return out


def pivot(rows: list[dict], index, column: str, value: str) -> list[dict]:
    """A wide table: one row per distinct ``index`` key(s), one column per distinct ``column`` value.

    ``pivot(rows, "k", "method", "recovery")`` turns the long rows of :func:`recovery_sweep` into
    {k, <method 1>, <method 2>, ...} rows holding the recovery.
    """
    index = (index,) if isinstance(index, str) else tuple(index)
    out: dict[tuple, dict] = {}
    for r in rows:
        key = tuple(r[i] for i in index)
        out.setdefault(key, dict(zip(index, key)))[r[column]] = r[value]
    return list(out.values())


def curves_table(curves: dict, steps) -> list[dict]:
    """Rows of :func:`convergence_curves` at the given iterations (1-based) for printing."""
    names = {"ista": "ISTA gap", "fista": "FISTA gap", "iht_eta1": "IHT(η=1) residual", "iht_eta1/L": "IHT(η=1/L) residual"}
    return [{"t": t} | {label: curves[key][t - 1].item() for key, label in names.items()} for t in steps]


def format_rows(rows: list[dict], cols=None, digits: int = 3, sci: bool = False) -> str:
    """A fixed-width text table of row dicts (:func:`abstopk_mini.tables.format_table`): floats
    with ``digits`` decimals (scientific notation for very small or large values, or for all
    floats with ``sci``); exact zeros print as 0, missing cells as nothing."""

    def fmt(v):
        if isinstance(v, float) and v == 0:
            return "0"
        if isinstance(v, float) and sci:
            return f"{v:.{digits - 1}e}"
        if isinstance(v, float):
            return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 10 ** -digits) else f"{v:.{digits}f}"
        return str(v)

    return format_table(rows, cols or None, cell=fmt, get=lambda r, c: r.get(c, ""), empty="(no rows)")
