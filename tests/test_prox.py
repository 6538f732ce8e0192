"""The proximal operators in abstopk_mini.coding.prox against brute force.

Each operator must be the argmin over z of ½‖u − z‖² + penalty(z). The references below never
call prox.py: a fine 1-D grid (the l1 problem is separable), a closed form written with numpy,
and an exhaustive search over every support S ⊆ {0..n-1} (n ≤ 8, at most 256 supports).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from abstopk_mini.coding import prox

N_VEC = 300  # random vectors per case
N_DIM = (1, 2, 5, 8)


# ----------------------------------------------------------------------------- references
def all_supports(n: int, max_size: int | None = None) -> np.ndarray:
    """Every support of size <= max_size as a boolean matrix. shape: [n_supports, n]"""
    max_size = n if max_size is None else max_size
    rows = [s for s in itertools.product([False, True], repeat=n) if sum(s) <= max_size]
    return np.array(rows, dtype=bool)


def brute_force(u: np.ndarray, supports: np.ndarray, penalty_per_atom: float, nonneg: bool) -> np.ndarray:
    """argmin over S of ½‖u − z_S‖² + penalty·|S|, z_S = u (or max(u, 0)) on S and 0 off S.

    shape: u [N, n], supports [M, n] -> z [N, n]
    """
    kept = np.maximum(u, 0.0) if nonneg else u
    z_all = supports[None, :, :] * kept[:, None, :]  # [N, M, n]
    cost = 0.5 * ((u[:, None, :] - z_all) ** 2).sum(-1) + penalty_per_atom * supports.sum(-1)[None, :]
    best = cost.argmin(1)
    return z_all[np.arange(len(u)), best]


def objective(u: np.ndarray, z: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    return 0.5 * ((u - z) ** 2).sum(-1) + penalty


def random_u(n: int, seed: int, scale: float = 2.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=scale, size=(N_VEC, n))


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


# ----------------------------------------------------------------------------- soft threshold
@pytest.mark.parametrize("nonneg", [False, True])
def test_soft_threshold_matches_grid_search(nonneg):
    """Per coordinate, nothing on a fine grid beats the prox, and the grid argmin is within a step."""
    rng = np.random.default_rng(0)
    u = rng.normal(scale=1.5, size=(60, 8))
    lam = 0.7
    grid = np.linspace(-8.0, 8.0, 16001)  # step 1e-3, wider than any |u| here
    assert np.abs(u).max() < 7.0
    step = grid[1] - grid[0]
    cost = 0.5 * (u[..., None] - grid) ** 2 + lam * np.abs(grid)  # [60, 8, G]
    if nonneg:
        cost = np.where(grid >= 0, cost, np.inf)
    z_grid = grid[cost.argmin(-1)]
    z = prox.soft_threshold(t(u), lam, nonneg=nonneg).numpy()
    assert np.abs(z - z_grid).max() <= step
    f_prox = 0.5 * (u - z) ** 2 + lam * np.abs(z)
    assert (f_prox <= cost.min(-1) + 1e-12).all()
    if nonneg:
        assert (z >= 0).all()


@pytest.mark.parametrize("n", N_DIM)
@pytest.mark.parametrize("nonneg", [False, True])
def test_soft_threshold_closed_form(n, nonneg):
    u = random_u(n, seed=n)
    for lam in (0.0, 0.3, 1.0, 2.5):
        expected = np.maximum(u - lam, 0.0) if nonneg else np.where(
            u > lam, u - lam, np.where(u < -lam, u + lam, 0.0)
        )
        got = prox.soft_threshold(t(u), lam, nonneg=nonneg)
        assert got.shape == u.shape and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-15)


def test_soft_threshold_tensor_lam_broadcasts():
    u = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lam = torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    got = prox.soft_threshold(u, lam)
    for i in range(5):
        torch.testing.assert_close(got[..., i], prox.soft_threshold(u[..., i], float(lam[i])))


# ----------------------------------------------------------------------------- hard threshold
@pytest.mark.parametrize("n", N_DIM)
@pytest.mark.parametrize("nonneg", [False, True])
def test_hard_threshold_is_prox_of_scaled_l0(n, nonneg):
    """hard_threshold(u, θ) = argmin ½‖u − z‖² + (θ²/2)‖z‖₀ over all supports (+ z ≥ 0)."""
    supports = all_supports(n)
    for seed, theta in enumerate((0.0, 0.5, 1.0, 2.0, 3.5)):
        u = random_u(n, seed=100 * n + seed)
        expected = brute_force(u, supports, theta**2 / 2, nonneg)
        got = prox.hard_threshold(t(u), theta, nonneg=nonneg).numpy()
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("nonneg", [False, True])
def test_hard_threshold_restricted_nonneg_supports(nonneg):
    """Same answer if the nonneg brute force only allows supports with u_S > 0 (and z_S = u_S)."""
    n = 6
    supports = all_supports(n)
    u = random_u(n, seed=7)
    theta = 1.1
    if nonneg:
        # supports allowed per vector: only positive entries; others cost +inf
        allowed = ~(supports[None] & (u[:, None, :] <= 0)).any(-1)  # [N, M]
        z_all = supports[None] * u[:, None, :]
        cost = 0.5 * ((u[:, None, :] - z_all) ** 2).sum(-1) + theta**2 / 2 * supports.sum(-1)
        cost = np.where(allowed, cost, np.inf)
        expected = z_all[np.arange(len(u)), cost.argmin(1)]
    else:
        expected = brute_force(u, supports, theta**2 / 2, False)
    np.testing.assert_array_equal(prox.hard_threshold(t(u), theta, nonneg=nonneg).numpy(), expected)


@pytest.mark.parametrize("nonneg", [False, True])
def test_prox_of_lambda_l0_is_hard_threshold_at_sqrt_2lambda(nonneg):
    n = 7
    supports = all_supports(n)
    for seed, lam in enumerate((0.05, 0.5, 2.0)):
        u = random_u(n, seed=200 + seed)
        theta = prox.l0_lambda_to_threshold(lam)
        assert theta == pytest.approx(math.sqrt(2 * lam), rel=1e-15)
        expected = brute_force(u, supports, lam, nonneg)
        np.testing.assert_array_equal(prox.hard_threshold(t(u), theta, nonneg=nonneg).numpy(), expected)


def test_hard_threshold_boundary_returns_zero():
    u = torch.tensor([1.0, -1.0, 0.75, 1.25, -1.25])
    assert prox.hard_threshold(u, 1.0).tolist() == [0.0, 0.0, 0.0, 1.25, -1.25]
    assert prox.hard_threshold(u, 1.0, nonneg=True).tolist() == [0.0, 0.0, 0.0, 1.25, 0.0]


def test_hard_threshold_drops_to_a_true_zero():
    """Dropped entries are +0 (not −0, and not NaN for an infinite entry: −inf·0 would be NaN)."""
    u = torch.tensor([-float("inf"), -0.5, 0.5, 2.0, float("inf")])
    z = prox.hard_threshold(u, 1.0, nonneg=True)
    assert z.tolist() == [0.0, 0.0, 0.0, 2.0, float("inf")]
    assert not torch.signbit(z[:3]).any()
    z = prox.hard_threshold(u, 1.0)
    assert z.tolist() == [-float("inf"), 0.0, 0.0, 2.0, float("inf")]
    assert not torch.signbit(z[1:3]).any()


def test_hard_threshold_per_coordinate_threshold():
    u = torch.tensor([[0.5, -0.5, 2.0], [1.5, -3.0, 0.1]])
    theta = torch.tensor([0.4, 0.6, 2.5])
    assert prox.hard_threshold(u, theta).tolist() == [[0.5, 0.0, 0.0], [1.5, -3.0, 0.0]]
    assert prox.hard_threshold(u, theta, nonneg=True).tolist() == [[0.5, 0.0, 0.0], [1.5, 0.0, 0.0]]


# ----------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("n", N_DIM)
def test_topk_and_abs_topk_are_projections(n):
    """topk = projection onto {‖z‖₀ ≤ k, z ≥ 0}; abs_topk = projection onto {‖z‖₀ ≤ k}."""
    for k in range(0, n + 1):
        supports = all_supports(n, max_size=k)
        u = random_u(n, seed=300 + 10 * n + k)
        np.testing.assert_array_equal(prox.topk(t(u), k).numpy(), brute_force(u, supports, 0.0, nonneg=True))
        np.testing.assert_array_equal(prox.abs_topk(t(u), k).numpy(), brute_force(u, supports, 0.0, nonneg=False))


def test_topk_with_few_positive_entries_keeps_fewer_than_k():
    u = torch.tensor([-1.0, 2.0, -0.5, -3.0, 0.25])
    assert prox.topk(u, 4).tolist() == [0.0, 2.0, 0.0, 0.0, 0.25]
    assert prox.abs_topk(u, 2).tolist() == [0.0, 2.0, 0.0, -3.0, 0.0]


def test_batched_shapes_act_on_last_dim():
    u = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    for fn in (prox.topk, prox.abs_topk):
        z = fn(u, 3)
        assert z.shape == u.shape and z.dtype == u.dtype
        for i, j in itertools.product(range(2), range(3)):
            torch.testing.assert_close(z[i, j], fn(u[i, j], 3), rtol=0, atol=0)
    assert ((prox.abs_topk(u, 3) != 0).sum(-1) == 3).all()


# ----------------------------------------------------------------------------- ties
def test_ties_lower_index_wins():
    assert prox.topk(torch.tensor([1.0, 2.0, 2.0, 0.5]), 1).tolist() == [0.0, 2.0, 0.0, 0.0]
    assert prox.topk(torch.tensor([3.0, 1.0, 3.0, 3.0]), 2).tolist() == [3.0, 0.0, 3.0, 0.0]
    assert prox.abs_topk(torch.tensor([2.0, -2.0, 1.0]), 1).tolist() == [2.0, 0.0, 0.0]
    assert prox.abs_topk(torch.tensor([-2.0, 2.0, 1.0]), 1).tolist() == [-2.0, 0.0, 0.0]
    assert prox.abs_topk(torch.tensor([1.0, -5.0, 5.0, 5.0, -5.0]), 3).tolist() == [0.0, -5.0, 5.0, 5.0, 0.0]
    # all equal, long row (torch.topk's own order is unspecified here)
    z = prox.abs_topk(torch.full((2, 40), -1.5), 5)
    assert (z[:, :5] == -1.5).all() and (z[:, 5:] == 0).all()
    z = prox.topk(torch.ones(3, 64), 7)
    assert (z[:, :7] == 1).all() and (z[:, 7:] == 0).all()


def test_ties_are_deterministic_across_calls():
    u = torch.randint(-2, 3, (50, 8)).float()  # many ties
    first = prox.abs_topk(u, 3)
    for _ in range(3):
        assert torch.equal(prox.abs_topk(u, 3), first)
    # and the lower index wins: among equal |u| kept/dropped, no dropped index precedes a kept one
    mag = u.abs()
    kept = first != 0
    for row in range(50):
        cutoff = mag[row][kept[row]].min() if kept[row].any() else None
        if cutoff is None or cutoff == 0:
            continue
        tied = (mag[row] == cutoff).nonzero().flatten().tolist()
        tied_kept = [i for i in tied if kept[row, i]]
        assert tied_kept == tied[: len(tied_kept)]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [prox.soft_threshold, prox.hard_threshold])
def test_negative_lam_raises(fn):
    u = torch.zeros(3)
    with pytest.raises(ValueError, match="lam"):
        fn(u, -0.1)
    with pytest.raises(ValueError, match="lam"):
        fn(u, torch.tensor([0.1, -1.0, 0.0]))
    with pytest.raises(ValueError, match="lam"):
        prox.l0_lambda_to_threshold(-1.0)


@pytest.mark.parametrize("fn", [prox.topk, prox.abs_topk])
def test_bad_k_raises(fn):
    u = torch.zeros(2, 5)
    for k in (-1, 6, 100):
        with pytest.raises(ValueError, match="k"):
            fn(u, k)
    for k in (2.0, "2", True, None):
        with pytest.raises(TypeError, match="k must be an int"):
            fn(u, k)
    assert torch.equal(fn(u, 0), torch.zeros(2, 5))
