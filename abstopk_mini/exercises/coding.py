r"""Checks of the sparse-coding exercises (chapters 1–3): AbsTopK, the prox of ℓ0 with z ≥ 0, IHT, ISTA.

Each check runs the reader's function on seeded inputs and compares it with the package's
implementation **and** with an independent reference written here in numpy (a search over all
supports, a per-coordinate comparison of the two candidates, a per-signal loop); the two must
agree, or :class:`~abstopk_mini.exercises.harness.PackageDisagrees` says the package is wrong.
When the reader's answer differs, the check recomputes the usual mistakes (selecting by u,
a lost sign, the wrong axis, a wrong threshold, a step of the wrong sign or size, one step too
few) and names the first that matches in words.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .harness import PackageDisagrees, call_tensor, passed, reader_name

__all__ = ["check_abs_topk", "check_prox_l0_nonneg", "check_iht", "check_ista",
           "brute_abs_topk", "iht_loop", "ista_loop"]


def _same(a: torch.Tensor, b, tol: float = 0.0) -> bool:
    b = torch.as_tensor(b, dtype=a.dtype)
    return a.shape == b.shape and (torch.equal(a, b) if tol == 0 else torch.allclose(a, b, rtol=tol, atol=tol))


def _agree(package: torch.Tensor, independent, what: str, tol: float = 0.0) -> None:
    if not _same(package, independent, tol):
        raise PackageDisagrees(f"{what}: the package and the independent reference differ — a bug in abstopk_mini, "
                               "not in your code; please report it")


# ----------------------------------------------------------------------------- AbsTopK
def brute_abs_topk(u: np.ndarray, k: int) -> np.ndarray:
    r"""The projection onto :math:`\{\|z\|_0 \le k\}` by search: of all supports S with |S| = k,
    the one that keeps most of :math:`\|u\|^2` (:math:`\|u - u_S\|^2` smallest); u_S keeps the rest.
    shape: u [..., n] -> [..., n] (numpy; exponential in n, for small checks only)"""
    flat = u.reshape(-1, u.shape[-1])
    out = np.zeros_like(flat)
    for r, row in enumerate(flat):
        best = max(itertools.combinations(range(row.size), k), key=lambda s: float(np.sum(row[list(s)] ** 2)))
        out[r, list(best)] = row[list(best)]
    return out.reshape(u.shape)


def _abs_topk_mistake(u: torch.Tensor, z: torch.Tensor, want: torch.Tensor, k: int) -> str:
    from ..coding.prox import abs_topk

    kept, nz, n_want = z != 0, (z != 0).sum(-1), (want != 0).sum(-1)
    if u.dim() >= 2 and _same(z, abs_topk(u.movedim(0, -1), k).movedim(-1, 0)):
        return ("you selected along the first dimension (dim=0); AbsTopK keeps the k largest |u_i| of each row, "
                "along the last dimension (dim=-1)")
    if torch.equal(z[kept], u[kept].abs()) and not torch.equal(z[kept], u[kept]):
        return "the kept entries lost their sign; keep u_i itself, not |u_i|"
    if ((want != 0) & (z == 0) & (u < 0)).any() and not (z < 0).any():
        return "a large negative entry was dropped; select by |u| (u.abs().topk), not by u (that is TopK)"
    if (nz > k).any():
        return (f"a row has {int(nz.max())} non-zeros for k={k}; keep at most k per row "
                "(select along the last dimension)")
    if (nz < n_want).any():
        return (f"a row keeps {int(nz[nz < n_want].min())} of the k={k} largest |u_i|: keep exactly k per row "
                "(u.abs().topk(k)), not k − 1")
    if not torch.equal(z[kept], u[kept]):
        return "kept entries differ from u; AbsTopK keeps u_i unchanged (no shrinkage, no rescaling)"
    return f"the kept set differs from the k largest |u_i| (got {z.tolist()}, expected {want.tolist()})"


def check_abs_topk(fn) -> None:
    """``fn(u, k)``: keep the k entries of largest |u| in each row (last dim), with their sign; zero the rest.
    shape: u [..., n] -> [..., n]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..coding.prox import abs_topk

    g = torch.Generator().manual_seed(0)
    cases = [(torch.tensor([0.5, -3.0, 1.0, 2.0, -0.1]), 2), (torch.randn(8, 16, generator=g), 4),
             (torch.randn(3, 5, 12, generator=g), 1), (torch.randn(6, 10, generator=g), 10),
             (-torch.rand(4, 9, generator=g) - 0.1, 3)]
    for n, (u, k) in enumerate(cases, 1):
        z = call_tensor(fn, u.clone(), k, what="abs_topk")
        if z.shape != u.shape:
            raise AssertionError(f"case {n}: the output has shape {tuple(z.shape)}, the input {tuple(u.shape)}; "
                                 "return a tensor like u with the dropped entries set to 0 (torch.zeros_like + scatter)")
        want = abs_topk(u, k)
        _agree(want, brute_abs_topk(u.numpy(), k), "abs_topk")
        if not torch.equal(z, want):
            raise AssertionError(f"case {n} (u {tuple(u.shape)}, k={k}): {_abs_topk_mistake(u, z, want, k)}")
    passed(fn, "abs_topk", f"{len(cases)} cases (1-D to 3-D, k = 1 to n, all-negative rows) equal am.prox.abs_topk "
           "and a search over every support")


# ----------------------------------------------------------------------------- prox of l0 + nonneg
def brute_prox_l0_nonneg(u: np.ndarray, lam: float) -> np.ndarray:
    """Per coordinate, the cheaper of z = 0 (cost u²/2) and z = max(u, 0) (cost λ + (u − max(u, 0))²/2);
    a tie goes to 0, the sparser.  shape: u [...] -> [...] (numpy)"""
    keep = np.maximum(u, 0)
    better = (keep > 0) & (lam + 0.5 * (u - keep) ** 2 < 0.5 * u ** 2)
    return np.where(better, keep, 0.0).astype(u.dtype)


def _cut(u: torch.Tensor, z: torch.Tensor, t: float, strict: bool = True) -> bool:
    """Whether z keeps exactly the u_i > t (u_i >= t unless ``strict``), unchanged."""
    return torch.equal(z, torch.where(u > t if strict else u >= t, u, torch.zeros_like(u)))


#: thresholds a learner plausibly uses instead of √(2λ), and how to say each
_WRONG_CUTS = ((lambda lam: lam, lambda lam: f"λ = {lam:g}"),
               (math.sqrt, lambda lam: f"√λ = {math.sqrt(lam):.4g} (the factor 2 is lost)"),
               (lambda lam: 2 * lam, lambda lam: f"2λ = {2 * lam:g}"),
               (lambda lam: lam / 2, lambda lam: f"λ/2 = {lam / 2:g}"))


def _prox_mistake(runs: list, n: int) -> str:
    """The mistake behind case ``n`` of ``runs`` = [(u, lam, z)], in words; a wrong threshold is named
    only if it explains every case (on a coarse grid several thresholds cut alike)."""
    u, lam, z = runs[n]
    theta = math.sqrt(2 * lam)
    kept = z != 0
    if (z < 0).any():
        return "negative entries in z; the constraint z ≥ 0 zeroes every u_i < 0 (that prox is one-sided)"
    if not torch.equal(z[kept], u[kept]):
        return ("you shrank the kept entries (that is the ℓ1 prox, ReLU(u − λ)); the ℓ0 prox keeps u_i unchanged "
                "above the threshold")
    why = f"keeping u_i costs λ and saves u_i²/2, so the threshold is √(2λ) = {theta:.4g}"
    if all(_cut(u_, z_, math.sqrt(2 * lam_), strict=False) for u_, lam_, z_ in runs):
        return (f"at u_i = √(2λ) = {theta:.4g} exactly, both choices cost the same; return 0 there, the sparser "
                "answer (keep u_i > √(2λ), strictly)")
    for cut, said in _WRONG_CUTS:
        if all(_cut(u_, z_, cut(lam_)) for u_, lam_, z_ in runs):
            return f"you cut at {said(lam)}; {why}"
    want = torch.where(u > theta, u, torch.zeros_like(u))
    return f"got {z.flatten()[:8].tolist()} ..., expected {want.flatten()[:8].tolist()} ...; {why}"


def check_prox_l0_nonneg(fn) -> None:
    r"""``fn(u, lam)``: :math:`\arg\min_{z \ge 0} \tfrac12\|z - u\|^2 + \lambda\|z\|_0`, elementwise
    (JumpReLU with threshold :math:`\sqrt{2\lambda}`). shape: u [..., n], lam > 0 float -> [..., n]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..coding.prox import hard_threshold

    g = torch.Generator().manual_seed(1)
    cases = [(torch.linspace(-3, 3, 25), 0.5), (torch.randn(8, 16, generator=g, dtype=torch.float64) * 2, 1.0),
             (torch.randn(4, 7, generator=g, dtype=torch.float64), 0.02), (torch.tensor([0.9, 1.1, -2.0, 1.5]), 0.5)]
    runs, first_wrong = [], None
    for n, (u, lam) in enumerate(cases):
        z = call_tensor(fn, u.clone(), lam, what="prox_l0_nonneg")
        if z.shape != u.shape:
            raise AssertionError(f"case {n + 1}: the output has shape {tuple(z.shape)}, the input {tuple(u.shape)}; "
                                 "the prox acts entry by entry and returns a tensor like u")
        want = hard_threshold(u, math.sqrt(2 * lam), nonneg=True)
        _agree(want, brute_prox_l0_nonneg(u.numpy(), lam), "prox of λ‖z‖₀ + ι(z ≥ 0)")
        runs.append((u, lam, z.to(u.dtype)))
        if first_wrong is None and not torch.equal(runs[-1][2], want):
            first_wrong = n
    if first_wrong is not None:
        raise AssertionError(f"case {first_wrong + 1} (λ = {cases[first_wrong][1]:g}): {_prox_mistake(runs, first_wrong)}")
    passed(fn, "prox of λ‖z‖₀ + ι(z ≥ 0)", f"{len(cases)} cases (a grid through the threshold √(2λ) itself, random "
           "rows) equal am.prox.hard_threshold(u, √(2λ), nonneg=True) and a per-entry comparison of the two candidates")


# ----------------------------------------------------------------------------- solvers: shared helpers
def _project(v: np.ndarray, k: int, signed: bool) -> np.ndarray:
    idx = np.argsort(-(np.abs(v) if signed else v), kind="stable")[:k]
    z = np.zeros_like(v)
    z[idx] = v[idx] if signed else np.maximum(v[idx], 0)
    return z


def iht_loop(x: np.ndarray, D: np.ndarray, k: int, n_steps: int, step: float = 1.0, sign: float = 1.0,
             signed: bool = True) -> np.ndarray:
    r"""IHT one signal at a time in numpy: from z = 0, :math:`z \leftarrow P_k(z + \eta\,\mathrm{sign}\,D^\top(x - Dz))`,
    :math:`P_k` = keep the k largest |v_i| (``signed``) or the k largest v_i, ReLU'd (TopK).
    ``step``, ``sign`` and ``signed`` exist to recompute the usual mistakes.  shape: x [B, d], D [d, P] -> [B, P]"""
    out = np.zeros((x.shape[0], D.shape[1]))
    for b in range(x.shape[0]):
        z = np.zeros(D.shape[1])
        for _ in range(n_steps):
            z = _project(z + step * sign * (D.T @ (x[b] - D @ z)), k, signed)
        out[b] = z
    return out


def ista_loop(x: np.ndarray, D: np.ndarray, lam: float, n_steps: int, nonneg: bool, step: float | None = None,
              thresh: float | None = None, sign: float = 1.0) -> np.ndarray:
    r"""ISTA one signal at a time in numpy: from z = 0, :math:`v = z + \eta\,\mathrm{sign}\,D^\top(x - Dz)`,
    :math:`z = \mathrm{sign}(v)\max(|v| - t, 0)` (:math:`\max(v - t, 0)` if ``nonneg``), with
    :math:`\eta = 1/\|D\|_2^2` and :math:`t = \eta\lambda` unless ``step`` / ``thresh`` say otherwise.
    shape: x [B, d], D [d, P] -> [B, P]"""
    eta = 1.0 / np.linalg.norm(D, 2) ** 2 if step is None else step
    t = eta * lam if thresh is None else thresh
    out = np.zeros((x.shape[0], D.shape[1]))
    for b in range(x.shape[0]):
        z = np.zeros(D.shape[1])
        for _ in range(n_steps):
            v = z + eta * sign * (D.T @ (x[b] - D @ z))
            z = np.maximum(v - t, 0) if nonneg else np.sign(v) * np.maximum(np.abs(v) - t, 0)
        out[b] = z
    return out


def _solver_basics(z: torch.Tensor, x: torch.Tensor, B: int, P: int, where: str) -> str | None:
    if z.shape != (B, P):
        return (f"{where}: z has shape {tuple(z.shape)}; expected [B, P] = [{B}, {P}] (one code per row of x, one entry "
                "per atom = column of D)")
    if z.dtype != x.dtype:
        return f"{where}: z is {z.dtype} but x is {x.dtype}; create z with dtype=x.dtype (torch.zeros(..., dtype=x.dtype))"
    return None


def _off_by_one(z: torch.Tensor, steps: int, run, tol: float) -> str | None:
    for other, said in ((steps - 1, "n_steps − 1"), (steps + 1, "n_steps + 1")):
        if other >= 0 and _same(z, run(other), tol):
            return (f"after n_steps={steps} your z is the solver's after {other} steps: the loop runs {said} times; "
                    "start from z = 0 and take exactly n_steps steps")
    return None


# ----------------------------------------------------------------------------- IHT
def check_iht(fn) -> None:
    r"""``fn(x, D, k, n_steps)``: iterative hard thresholding from z = 0 with step 1,
    :math:`z \leftarrow \mathrm{abs\_topk}(z + D^\top(x - Dz), k)`. shape: x [B, d], D [d, P] -> z [B, P]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..coding.unroll import iht, lipschitz

    g = torch.Generator().manual_seed(2)
    d, P, k, B = 32, 64, 3, 16
    D = torch.randn(d, P, generator=g, dtype=torch.float64)
    D = D / D.norm(dim=0, keepdim=True)
    z_true = torch.zeros(B, P, dtype=torch.float64)
    for b in range(B):
        idx = torch.randperm(P, generator=g)[:k]
        z_true[b, idx] = (torch.rand(k, generator=g, dtype=torch.float64) + 0.5) * torch.sign(torch.randn(k, generator=g))
    x = z_true @ D.T
    xn, Dn, tol = x.numpy(), D.numpy(), 1e-9
    for steps in (1, 2, 30):
        where = f"n_steps={steps}"
        z = call_tensor(fn, x.clone(), D.clone(), k, steps, what="iht")
        if (msg := _solver_basics(z, x, B, P, where)) is not None:
            raise AssertionError(msg)
        want = iht(x, D, k, steps)
        _agree(want, iht_loop(xn, Dn, k, steps), "iht", tol)
        if _same(z, want, tol):
            continue
        loop = lambda n, **kw: iht_loop(xn, Dn, k, n, **kw)  # noqa: E731
        if ((z != 0).sum(1) > k).any():
            msg = (f"{where}: z is not sparse ({int((z != 0).sum(1).max())} non-zeros in a row for k={k}): project onto "
                   "‖z‖₀ ≤ k (abs_topk) after each step")
        elif (m := _off_by_one(z, steps, loop, tol)) is not None:
            msg = m
        elif _same(z, loop(steps, sign=-1.0), tol):
            msg = (f"{where}: the gradient step has the wrong sign: it is z + Dᵀ(x − Dz), i.e. z − ∇ of ½‖x − Dz‖² "
                   "(in rows: z + (x − z Dᵀ) D)")
        elif _same(z, loop(steps, step=1.0 / lipschitz(D)), tol):
            msg = f"{where}: you used step 1/L = {1 / lipschitz(D):.3f}; IHT here takes step 1 (exercise 1.2 says why)"
        elif not (z < 0).any() and (want < 0).any():
            msg = (f"{where}: z has no negative entry: project with abs_topk (largest |v_i|, sign kept), not topk or "
                   "a ReLU")
        else:
            msg = (f"{where}: z differs from IHT (max |Δ| {float((z - want).abs().max()):.3g}); check the step "
                   "z + Dᵀ(x − Dz) and that abs_topk follows every step")
        raise AssertionError(msg)
    passed(fn, "iht", f"z after 1, 2 and 30 steps on {B} signals ({k} atoms each, signed) equals am.unroll.iht "
           "and a per-signal numpy loop")


# ----------------------------------------------------------------------------- ISTA
def check_ista(fn) -> None:
    r"""``fn(x, D, lam, n_steps, nonneg)``: ISTA from z = 0 with step :math:`\eta = 1/L`,
    :math:`L = \lVert D\rVert_2^2`: :math:`z \leftarrow \mathrm{soft}(z + \eta D^\top(x - Dz), \eta\lambda)`
    (:math:`\mathrm{ReLU}(\cdot - \eta\lambda)` when ``nonneg``). shape: x [B, d], D [d, P] -> z [B, P]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..coding.unroll import ista, lipschitz

    g = torch.Generator().manual_seed(4)
    d, P, B = 16, 32, 8
    D = torch.randn(d, P, generator=g, dtype=torch.float64)
    D = D / D.norm(dim=0, keepdim=True)
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    xn, Dn, lam, tol, L, n = x.numpy(), D.numpy(), 0.1, 1e-9, lipschitz(D), 0
    for nonneg in (False, True):
        for steps in (1, 5, 50):
            n += 1
            where = f"nonneg={nonneg}, n_steps={steps}"
            z = call_tensor(fn, x.clone(), D.clone(), lam, steps, nonneg, what="ista")
            if (msg := _solver_basics(z, x, B, P, where)) is not None:
                raise AssertionError(msg)
            want = ista(x, D, lam, steps, nonneg=nonneg)
            _agree(want, ista_loop(xn, Dn, lam, steps, nonneg), "ista", tol)
            if _same(z, want, tol):
                continue
            loop = lambda n_, **kw: ista_loop(xn, Dn, lam, n_, nonneg, **kw)  # noqa: E731
            if (m := _off_by_one(z, steps, loop, tol)) is not None:
                msg = m
            elif nonneg and (z < 0).any():
                msg = f"{where}: z has negative entries: with nonneg use ReLU(v − ηλ), not the two-sided soft threshold"
            elif not nonneg and not (z < 0).any() and (want < 0).any():
                msg = (f"{where}: z has no negative entry: without nonneg the soft threshold is two-sided, "
                       "sign(v)·max(|v| − ηλ, 0); you clipped or lost the sign")
            elif _same(z, loop(steps, step=1.0), tol):
                msg = (f"{where}: you used step 1; ISTA's step is η = 1/L with L = ‖D‖₂² = {L:.3f} "
                       "(torch.linalg.matrix_norm(D, 2) ** 2)")
            elif _same(z, loop(steps, thresh=lam), tol) or _same(z, loop(steps, thresh=lam / L ** 2), tol):
                msg = f"{where}: the threshold must be ηλ = λ/L (the step times λ), not λ alone or λ/L²"
            elif _same(z, loop(steps, sign=-1.0), tol):
                msg = f"{where}: the gradient step has the wrong sign: v = z + η Dᵀ(x − Dz) (in rows: z + η (x − z Dᵀ) D)"
            else:
                msg = f"{where}: z differs from ISTA (max |Δ| {float((z - want).abs().max()):.3g})"
            raise AssertionError(msg)
    passed(fn, "ista", f"z after 1, 5 and 50 steps, signed and non-negative ({n} cases), equals am.unroll.ista "
           "and a per-signal numpy loop")
