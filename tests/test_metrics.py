"""Metrics against closed forms, constructed cases and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from abstopk_mini import metrics


def unit_columns(d: int, P: int, seed: int) -> torch.Tensor:
    D = torch.randn(d, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return D / D.norm(dim=0, keepdim=True)


# --------------------------------------------------------------------------- reconstruction
def test_running_fvu_is_the_fvu_of_every_row_seen():
    """lm/splice streams its FVU through RunningFVU: batch by batch it must equal metrics.fvu of all the
    rows (one formula), also for data far from the origin, where Σ‖x‖² − ‖Σx‖²/n would cancel."""
    gen = torch.Generator().manual_seed(3)
    x = 1e3 + torch.randn(300, 7, generator=gen, dtype=torch.float64)
    x_hat = x + 0.3 * torch.randn(300, 7, generator=gen, dtype=torch.float64)
    r = metrics.RunningFVU()
    assert np.isnan(r.value())
    for a, b in ((0, 1), (1, 50), (50, 50), (50, 177), (177, 300)):
        r.update(x[a:b], x_hat[a:b])
    assert r.n == 300
    assert r.value() == pytest.approx(metrics.fvu(x, x_hat), rel=1e-9)
    one = metrics.RunningFVU()
    one.update(x[:1], x_hat[:1])
    assert np.isnan(one.value())  # no variance: reported as NaN, where fvu raises
    with pytest.raises(ValueError, match="same shape"):
        r.update(x[:2], x_hat[:3])


def test_fvu_closed_form_perfect_and_mean():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=gen)
    x_hat = x + 0.3 * torch.randn(50, 6, generator=gen)
    X, Xh = x.double().numpy(), x_hat.double().numpy()
    ref = ((X - Xh) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()
    assert metrics.fvu(x, x_hat) == pytest.approx(ref, rel=1e-12)
    assert metrics.fvu(x, x) == 0.0
    assert metrics.fvu(x, x.mean(0).expand_as(x)) == pytest.approx(1.0, rel=1e-12)
    # leading dims are flattened
    assert metrics.fvu(x.reshape(5, 10, 6), x_hat.reshape(5, 10, 6)) == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        metrics.fvu(x, x_hat[:, :5])


def test_nmse_closed_form():
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # sum of squares 26
    x_hat = torch.tensor([[3.0, 3.0], [1.0, 1.0]])  # error 1 + 1 = 2
    assert metrics.nmse(x, x_hat) == pytest.approx(2 / 26, rel=1e-12)
    assert metrics.nmse(x, torch.zeros_like(x)) == 1.0
    assert metrics.nmse(x, x) == 0.0


# --------------------------------------------------------------------------- sparsity and health
Z = torch.tensor(
    [
        [1.0, -2.0, 0.0, 0.0, 0.5],
        [0.0, -1.0, 0.0, 0.0, 0.3],
        [2.0, 0.0, 0.0, 0.0, -0.1],
        [3.0, 0.0, 0.0, 0.0, 0.2],
    ]
)


def test_l0_counts_negative_values():
    assert metrics.l0(Z) == (3 + 2 + 2 + 2) / 4
    assert metrics.l0(-Z.abs()) == metrics.l0(Z)
    assert metrics.l0(Z.reshape(2, 2, 5)) == metrics.l0(Z)


def test_firing_counts_dead_and_dense():
    counts = metrics.firing_counts(Z)
    assert counts.tolist() == [3, 2, 0, 0, 4]
    assert counts.dtype == torch.int64
    assert metrics.dead_fraction(counts) == 2 / 5
    # fires on more than half the rows: latents 0 (3/4) and 4 (4/4); latent 1 is exactly 1/2
    assert metrics.dense_fraction(counts, n_rows=4, above=0.5) == 2 / 5
    assert metrics.dense_fraction(counts, n_rows=4, above=0.1) == 3 / 5


def test_sign_stats_on_constructed_codes():
    st = metrics.sign_stats(Z, min_share=0.2)
    assert st["n_pos"].tolist() == [3, 0, 0, 0, 3]
    assert st["n_neg"].tolist() == [0, 2, 0, 0, 1]
    assert st["alive"].tolist() == [True, True, False, False, True]
    frac = st["frac_negative"]
    assert frac[0].item() == 0.0 and frac[1].item() == 1.0 and frac[4].item() == 0.25
    assert torch.isnan(frac[2]) and torch.isnan(frac[3])
    assert st["bidirectional"].tolist() == [False, False, False, False, True]
    # with a stricter share, latent 4 (25 % negative) is no longer bidirectional
    assert not metrics.sign_stats(Z, min_share=0.3)["bidirectional"][4]
    assert metrics.bidirectional_fraction(Z, min_share=0.2) == pytest.approx(1 / 3)
    assert metrics.bidirectional_fraction(Z, min_share=0.3) == 0.0
    assert metrics.bidirectional_fraction(torch.zeros(3, 4)) == 0.0


# --------------------------------------------------------------------------- dictionaries
def test_cosine_matrix_matches_numpy():
    A, B = unit_columns(7, 4, 0) * 3, unit_columns(7, 5, 1) * 0.5
    An = A.numpy() / np.linalg.norm(A.numpy(), axis=0)
    Bn = B.numpy() / np.linalg.norm(B.numpy(), axis=0)
    # cosines lie in [-1, 1]: a 7-term fp64 dot product rounds at ~1e-16 absolute, so a cosine near 0
    # needs the absolute bound too (rtol alone fails by cancellation)
    np.testing.assert_allclose(metrics.cosine_matrix(A, B).numpy(), An.T @ Bn, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="same dimension"):
        metrics.cosine_matrix(A, unit_columns(6, 4, 0))


def test_mcc_is_one_for_permuted_sign_flipped_copy():
    D = unit_columns(16, 8, 0)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    signs = torch.tensor([1, -1, -1, 1, 1, -1, 1, -1], dtype=torch.float64)
    D_learned = D[:, perm] * signs * torch.linspace(0.5, 2, 8, dtype=torch.float64)  # scale is ignored
    assert metrics.mcc(D, D_learned) == pytest.approx(1.0, abs=1e-12)
    rows, cols, cos = metrics.match_atoms(D, D_learned)
    assert torch.equal(perm[cols], rows)
    torch.testing.assert_close(cos, signs[cols])


def test_mcc_below_one_when_an_atom_is_wrong():
    D = unit_columns(16, 8, 0)
    D_learned = D.clone()
    D_learned[:, 3] = D[:, 3] + 0.5 * unit_columns(16, 1, 5)[:, 0]
    assert 0.9 < metrics.mcc(D, D_learned) < 1.0 - 1e-4


@pytest.mark.parametrize("P,Q,seed", [(3, 3, 0), (4, 6, 1), (5, 5, 2), (6, 6, 3), (6, 4, 4)])
def test_mcc_equals_brute_force_over_matchings(P, Q, seed):
    d = 5
    A, B = unit_columns(d, P, seed), unit_columns(d, Q, seed + 100)
    C = np.abs(A.numpy().T @ B.numpy())  # [P, Q]
    m = min(P, Q)
    best = 0.0
    if P <= Q:
        for cols in itertools.permutations(range(Q), P):
            best = max(best, sum(C[i, cols[i]] for i in range(P)))
    else:
        for rows in itertools.permutations(range(P), Q):
            best = max(best, sum(C[rows[j], j] for j in range(Q)))
    assert metrics.mcc(A, B) == pytest.approx(best / m, abs=1e-12)


def test_signed_axis_recovery_cases():
    D = unit_columns(16, 8, 0)
    assert metrics.signed_axis_recovery(D, D, signed_codes=True) == pytest.approx(1.0, abs=1e-12)
    assert metrics.signed_axis_recovery(D, -D, signed_codes=True) == pytest.approx(1.0, abs=1e-12)
    # a nonnegative code with one atom per axis reaches only half the 2P directions
    assert metrics.signed_axis_recovery(D, D, signed_codes=False) == pytest.approx(0.5, abs=1e-12)
    # ... and all of them with an antipodal pair per axis
    assert metrics.signed_axis_recovery(D, torch.cat([D, -D], 1), signed_codes=False) == pytest.approx(1.0, abs=1e-12)
    # never above 1, and 0 for atoms orthogonal to every axis
    E = torch.zeros(16, 8, dtype=torch.float64)
    E[:, 0] = 1.0
    Dorth = torch.linalg.qr(torch.cat([E[:, :1], unit_columns(16, 15, 9)], 1))[0]
    assert metrics.signed_axis_recovery(Dorth[:, :4], Dorth[:, 4:8], signed_codes=True) == pytest.approx(0.0, abs=1e-12)


def test_split_axes_counts_pairs_exactly():
    D = torch.eye(6, dtype=torch.float64)[:, :4]  # 4 orthonormal axes in R^6
    noisy = lambda v, s: (v + 0.05 * unit_columns(6, 1, s)[:, 0])
    learned = torch.stack(
        [
            noisy(D[:, 0], 1), -noisy(D[:, 0], 2),  # axis 0: a ± pair -> counts
            noisy(D[:, 1], 3), noisy(D[:, 1], 4),  # axis 1: two atoms, same sign -> no
            -D[:, 2],  # axis 2: one atom -> no
            D[:, 3], -0.7 * D[:, 3] + 0.714 * torch.eye(6, dtype=torch.float64)[:, 4],  # axis 3: second atom too far -> no
        ],
        dim=1,
    )
    assert metrics.split_axes(D, learned) == 1
    learned2 = torch.cat([learned, -D[:, 1:2], D[:, 2:3]], dim=1)  # now axes 1 and 2 are split too
    assert metrics.split_axes(D, learned2) == 3


def test_antipodal_pairs():
    D = unit_columns(8, 5, 0)
    W = torch.cat([D, -D[:, :2], -D[:, 0:1] * 3.0], dim=1).T  # rows: 5 atoms, −a0, −a1, −3·a0
    # antipodal pairs: (a0, −a0), (a0, −3a0), (a1, −a1); −a0 and −3a0 are parallel, not antipodal
    assert metrics.antipodal_pairs(W) == 3
    assert metrics.antipodal_pairs(D.T) == sum(
        1 for i in range(5) for j in range(i + 1, 5) if (D[:, i] @ D[:, j]).item() < -0.9
    )
