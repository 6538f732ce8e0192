r"""Checks for the book's exercises, ARENA-style: write a function, pass it to ``check_*``.

    def my_abs_topk(u, k): ...
    am.exercises.check_abs_topk(my_abs_topk)     # prints "✓ ..." or raises AssertionError saying what is wrong

Each check calls the reader's function on seeded inputs, compares it with the package's own
implementation (and, where one exists, with an independent brute-force answer), and names the
first thing that differs in words: a lost sign, a threshold of λ instead of √(2λ), a step taken
with the wrong sign. Nothing here is used by the package itself.

* :func:`check_abs_topk` — the projection onto :math:`\{\|z\|_0 \le k\}` (chapter 2);
* :func:`check_prox_l0_nonneg` — the prox of :math:`\lambda\|z\|_0 + \iota_{z \ge 0}` (chapter 2);
* :func:`check_iht` — iterative hard thresholding (chapter 1);
* :func:`check_ista` — ISTA with a non-negativity option, the T-step encoder (chapter 3);
* :func:`check_twin` — the TopK SAE with latents :math:`[D, -D]` that computes what an AbsTopK SAE does (chapter 4).
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_abs_topk", "check_prox_l0_nonneg", "check_iht", "check_ista", "check_twin"]


def _call(fn, *args, what: str):
    if not callable(fn):
        raise TypeError(f"pass your function itself (e.g. check(my_{what})), not {type(fn).__name__}")
    out = fn(*args)
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"{what} must return a torch.Tensor; it returned {type(out).__name__}")
    return out


def _ok(name: str, n: int) -> None:
    print(f"✓ {name}: all {n} checks passed")


# ----------------------------------------------------------------------------- AbsTopK
def check_abs_topk(fn) -> None:
    """``fn(u, k)``: keep the k entries of largest |u| in each row (last dim), with their sign; zero the rest.
    shape: u [..., n] -> [..., n]"""
    from .coding.prox import abs_topk

    g = torch.Generator().manual_seed(0)
    cases = [(torch.tensor([0.5, -3.0, 1.0, 2.0, -0.1]), 2), (torch.randn(8, 16, generator=g), 4),
             (torch.randn(3, 5, 12, generator=g), 1), (torch.randn(6, 10, generator=g), 10),
             (-torch.rand(4, 9, generator=g) - 0.1, 3)]
    for n, (u, k) in enumerate(cases, 1):
        z = _call(fn, u.clone(), k, what="abs_topk")
        if z.shape != u.shape:
            raise AssertionError(f"case {n}: the output has shape {tuple(z.shape)}, the input {tuple(u.shape)}; "
                                 "return a tensor like u with the dropped entries set to 0 (torch.zeros_like + scatter)")
        nz = (z != 0).sum(-1)
        if (nz > k).any():
            raise AssertionError(f"case {n}: a row has {int(nz.max())} non-zeros for k={k}; keep at most k per row "
                                 "(select along the last dimension)")
        kept = z != 0
        if not torch.equal(z[kept], u[kept]):
            if torch.equal(z[kept], u[kept].abs()):
                raise AssertionError(f"case {n}: the kept entries lost their sign; keep u_i itself, not |u_i|")
            raise AssertionError(f"case {n}: kept entries differ from u; AbsTopK keeps u_i unchanged")
        want = abs_topk(u, k)
        if not torch.equal(z, want):
            neg_dropped = ((want != 0) & (z == 0) & (u < 0)).any()
            if neg_dropped:
                raise AssertionError(f"case {n}: a large negative entry was dropped; select by |u| (u.abs().topk), "
                                     "not by u (that is TopK)")
            raise AssertionError(f"case {n}: the kept set differs from the k largest |u_i| "
                                 f"(got {z.tolist()}, expected {want.tolist()})")
    _ok("abs_topk", len(cases))


# ----------------------------------------------------------------------------- prox of l0 + nonneg
def _brute_prox_l0_nonneg(u: torch.Tensor, lam: float) -> torch.Tensor:
    """Per coordinate, the better of z = 0 (cost u²/2) and z = max(u, 0) (cost λ + (u − max(u,0))²/2); ties -> 0."""
    keep = torch.clamp(u, min=0)
    cost_keep = lam + 0.5 * (u - keep) ** 2
    cost_zero = 0.5 * u ** 2
    return torch.where((keep > 0) & (cost_keep < cost_zero), keep, torch.zeros_like(u))


def check_prox_l0_nonneg(fn) -> None:
    r"""``fn(u, lam)``: :math:`\arg\min_{z \ge 0} \tfrac12\|z - u\|^2 + \lambda\|z\|_0`, elementwise
    (JumpReLU with threshold :math:`\sqrt{2\lambda}`). shape: u [..., n], lam > 0 float -> [..., n]"""
    from .coding.prox import hard_threshold

    g = torch.Generator().manual_seed(1)
    cases = [(torch.linspace(-3, 3, 25), 0.5), (torch.randn(8, 16, generator=g, dtype=torch.float64) * 2, 1.0),
             (torch.randn(4, 7, generator=g, dtype=torch.float64), 0.02), (torch.tensor([0.9, 1.1, -2.0, 1.5]), 0.5)]
    for n, (u, lam) in enumerate(cases, 1):
        z = _call(fn, u.clone(), lam, what="prox_l0_nonneg")
        if z.shape != u.shape:
            raise AssertionError(f"case {n}: shape {tuple(z.shape)} != input shape {tuple(u.shape)}")
        want = _brute_prox_l0_nonneg(u, lam)
        assert torch.equal(want, hard_threshold(u, math.sqrt(2 * lam), nonneg=True))  # the package agrees
        if torch.equal(z, want):
            continue
        if (z < 0).any():
            raise AssertionError(f"case {n}: negative entries in z; the constraint z ≥ 0 zeroes every u_i < 0")
        if torch.equal(z, hard_threshold(u, lam, nonneg=True)):
            raise AssertionError(f"case {n}: you cut at λ = {lam}; keeping u_i costs λ and saves u_i²/2, so the "
                                 f"threshold is √(2λ) = {math.sqrt(2 * lam):.3f}")
        if torch.equal(z, torch.relu(u - lam)) or torch.equal(z, torch.relu(u - math.sqrt(2 * lam))):
            raise AssertionError(f"case {n}: you shrank the kept entries (that is the ℓ1 prox); the ℓ0 prox keeps "
                                 "u_i unchanged above the threshold")
        raise AssertionError(f"case {n}: got {z.flatten()[:8].tolist()} ..., expected {want.flatten()[:8].tolist()} ...")
    _ok("prox of λ‖z‖₀ + ι(z ≥ 0)", len(cases))


# ----------------------------------------------------------------------------- IHT
def check_iht(fn) -> None:
    r"""``fn(x, D, k, n_steps)``: iterative hard thresholding from z = 0 with step 1,
    :math:`z \leftarrow \mathrm{abs\_topk}(z + D^\top(x - Dz), k)`. shape: x [B, d], D [d, P] -> z [B, P]"""
    from .coding.unroll import iht

    g = torch.Generator().manual_seed(2)
    d, P, k, B = 32, 64, 3, 16
    D = torch.randn(d, P, generator=g, dtype=torch.float64)
    D = D / D.norm(dim=0, keepdim=True)
    z_true = torch.zeros(B, P, dtype=torch.float64)
    for b in range(B):
        idx = torch.randperm(P, generator=g)[:k]
        z_true[b, idx] = (torch.rand(k, generator=g, dtype=torch.float64) + 0.5) * torch.sign(torch.randn(k, generator=g))
    x = z_true @ D.T
    for n, steps in enumerate((1, 2, 30), 1):
        z = _call(fn, x.clone(), D.clone(), k, steps, what="iht")
        if z.shape != (B, P):
            raise AssertionError(f"n_steps={steps}: z has shape {tuple(z.shape)}; expected [B, P] = [{B}, {P}] "
                                 "(one code per row of x, one entry per atom = column of D)")
        want = iht(x, D, k, steps)
        if torch.allclose(z, want, rtol=1e-9, atol=1e-9):
            continue
        if steps == 1 and torch.allclose(z, -want, atol=1e-9):
            raise AssertionError("after one step z has the wrong sign: the gradient step is z + Dᵀ(x − Dz), i.e. "
                                 "z − ∇ of ½‖x − Dz‖²")
        if steps == 1 and torch.allclose(z, x @ D, atol=1e-9):
            raise AssertionError("after one step z is not sparse: project onto ‖z‖₀ ≤ k (abs_topk) after each step")
        raise AssertionError(f"n_steps={steps}: z differs from the reference (max |Δ| {float((z - want).abs().max()):.3g}); "
                             "check the step z + Dᵀ(x − Dz) and that abs_topk follows every step")
    err = ((x - z @ D.T).norm(dim=1) / x.norm(dim=1)).max()
    _ok(f"iht (after 30 steps the worst relative residual is {float(err):.1e})", 3)


# ----------------------------------------------------------------------------- ISTA
def check_ista(fn) -> None:
    r"""``fn(x, D, lam, n_steps, nonneg)``: ISTA from z = 0 with step :math:`\eta = 1/L`,
    :math:`L = \lVert D\rVert_2^2`: :math:`z \leftarrow \mathrm{soft}(z + \eta D^\top(x - Dz), \eta\lambda)`
    (:math:`\mathrm{ReLU}(\cdot - \eta\lambda)` when ``nonneg``). shape: x [B, d], D [d, P] -> z [B, P]"""
    from .coding.unroll import ista, lipschitz

    g = torch.Generator().manual_seed(4)
    d, P, B = 16, 32, 8
    D = torch.randn(d, P, generator=g, dtype=torch.float64)
    D = D / D.norm(dim=0, keepdim=True)
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    lam, n = 0.1, 0
    for nonneg in (False, True):
        for steps in (1, 5, 50):
            n += 1
            z = _call(fn, x.clone(), D.clone(), lam, steps, nonneg, what="ista")
            want = ista(x, D, lam, steps, nonneg=nonneg)
            if z.shape != want.shape:
                raise AssertionError(f"z has shape {tuple(z.shape)}; expected [B, P] = {list(want.shape)}")
            if torch.allclose(z, want, rtol=1e-9, atol=1e-9):
                continue
            if nonneg and (z < 0).any():
                raise AssertionError("nonneg=True but z has negative entries: use ReLU(v − ηλ), not the two-sided soft threshold")
            if torch.allclose(z, ista(x, D, lam, steps, nonneg=nonneg, step=1.0), atol=1e-9):
                raise AssertionError(f"you used step 1; ISTA's step is η = 1/L with L = ‖D‖₂² = {lipschitz(D):.3f} "
                                     "(torch.linalg.matrix_norm(D, 2) ** 2)")
            if steps == 1 and torch.allclose(z, ista(x, D, lam / lipschitz(D), 1, nonneg=nonneg), atol=1e-9):
                raise AssertionError("the threshold must be ηλ (the step times λ), not λ/L² or λ alone")
            raise AssertionError(f"nonneg={nonneg}, n_steps={steps}: z differs from the reference "
                                 f"(max |Δ| {float((z - want).abs().max()):.3g})")
    _ok("ista", n)


# ----------------------------------------------------------------------------- the [D, -D] twin
def check_twin(fn) -> None:
    r"""``fn(sae)``: from an AbsTopK SAE with P latents, the TopK SAE with 2P latents (encoder columns
    :math:`[W, -W]`, biases :math:`[b, -b]`, decoder rows :math:`[D; -D]`) that reconstructs every
    input exactly as the AbsTopK SAE does."""
    from .sae import SAE, SAEConfig

    torch.manual_seed(3)
    sae = SAE(SAEConfig(d_in=12, d_sae=20, activation="abstopk", k=3, dtype="float64")).eval()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.3)
    twin = fn(sae)
    if not isinstance(twin, SAE):
        raise AssertionError(f"return an abstopk_mini SAE (am.SAE(am.SAEConfig(...))); got {type(twin).__name__}")
    if twin.cfg.activation != "topk" or twin.cfg.d_sae != 2 * sae.cfg.d_sae or twin.cfg.k != sae.cfg.k:
        raise AssertionError(f"the twin must be a TopK SAE with 2P = {2 * sae.cfg.d_sae} latents and the same k = "
                             f"{sae.cfg.k}; got activation={twin.cfg.activation!r}, d_sae={twin.cfg.d_sae}, k={twin.cfg.k}")
    x = torch.randn(64, 12, dtype=torch.float64)
    with torch.no_grad():
        want, got = sae(x), twin.to(torch.float64)(x)
        z, z2 = sae.encode(x), twin.encode(x)
    folded = z2[:, :20] - z2[:, 20:]
    if not torch.allclose(folded, z, atol=1e-10):
        raise AssertionError("the twin's codes do not fold back to AbsTopK's (z⁺ − z⁻ ≠ z): the second half of the "
                             "encoder must be −W_enc and −b_enc, so latent P + i fires where u_i < 0")
    if not torch.allclose(got, want, atol=1e-10):
        raise AssertionError("the codes fold correctly but the reconstructions differ: the second half of the "
                             "decoder must be −W_dec (latent P + i writes −d_i), and b_dec stays as it is")
    _ok("the [D, −D] twin", 2)
