"""Experiments of the theory chapters (01-03) against closed forms, hand-made cases and brute force."""

import itertools
import math

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.chapters import experiments_theory as xt
from abstopk_mini.chapters import experiments_unrolled as xu


# ------------------------------------------------------------------ data
def test_dictionaries_have_unit_atoms_and_the_asked_pair_cosine():
    D = xt.random_dictionary(16, 40, seed=1)
    assert D.shape == (16, 40) and D.dtype == torch.float64
    torch.testing.assert_close(D.norm(dim=0), torch.ones(40, dtype=torch.float64))
    for rho in (0.0, 0.6, 0.95):
        Dp = xt.paired_dictionary(16, 40, rho, seed=2)
        torch.testing.assert_close(Dp.norm(dim=0), torch.ones(40, dtype=torch.float64))
        pair_cos = (Dp[:, 0::2] * Dp[:, 1::2]).sum(0)
        torch.testing.assert_close(pair_cos, torch.full((20,), rho, dtype=torch.float64))
        assert xt.mutual_coherence(Dp) >= rho - 1e-12
    with pytest.raises(ValueError, match="even P"):
        xt.paired_dictionary(16, 41, 0.5)


def test_mutual_coherence_matches_a_double_loop():
    D = xt.random_dictionary(6, 9, seed=3)
    ref = max(abs(float(D[:, i] @ D[:, j])) for i, j in itertools.permutations(range(9), 2))
    assert xt.mutual_coherence(D) == pytest.approx(ref, abs=1e-12)


def test_sparse_codes_have_k_signed_entries_in_range():
    z = xt.sparse_codes(500, 30, 4, amplitude=(0.5, 1.5), seed=0)
    assert ((z != 0).sum(1) == 4).all()
    mags = z[z != 0].abs()
    assert mags.min() >= 0.5 and mags.max() <= 1.5
    assert 0.4 < (z > 0).sum().item() / (z != 0).sum().item() < 0.6


# ------------------------------------------------------------------ scores
def test_support_recovery_on_a_hand_made_case():
    z_true = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0]])
    z_hat = torch.tensor([[0.9, 0.1, -0.5, 0.0],    # top-2 by |.|: {0, 2}: one of two right
                          [0.0, 0.0, -3.0, 0.2]])   # top-2: {2, 3}: both right (sign not asked)
    assert xt.support_recovery(z_hat, z_true) == pytest.approx(3 / 4)
    assert xt.exact_support_rate(z_hat, z_true) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="same number"):
        xt.support_recovery(z_hat, torch.tensor([[1.0, 0, 0, 0], [1.0, 1.0, 0, 0]]))


def test_fit_summary_flags_divergence():
    D = torch.eye(3, dtype=torch.float64)
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    z_true = x.clone()
    z_hat = torch.tensor([[1.0, 0, 0], [0, -5.0, 0]], dtype=torch.float64)  # second: residual 36 > 1
    s = xt.fit_summary(x, D, z_hat, z_true)
    assert s["diverged"] == 0.5 and s["recovery"] == 1.0 and s["l0"] == 1.0


def test_one_step_is_abs_topk_of_the_correlations():
    D = xt.random_dictionary(12, 30, seed=4)
    x = torch.randn(7, 12, dtype=torch.float64)
    u = x @ D
    ref = torch.zeros_like(u)
    idx = u.abs().argsort(dim=1, descending=True)[:, :3]
    ref.scatter_(1, idx, u.gather(1, idx))
    torch.testing.assert_close(xt.solve("one step", x, D, 3), ref)
    with pytest.raises(ValueError, match="method="):
        xt.solve("OMP", x, D, 3)


def test_convergence_curves_behave_as_the_theory_says():
    D = xt.random_dictionary(24, 48, seed=5)
    z = xt.sparse_codes(30, 48, 2, seed=6)
    c = xt.convergence_curves(z @ D.T, D, k=2, lam=0.1, n_steps=60)
    assert (c["ista"] >= -1e-12).all() and (c["fista"] >= -1e-12).all()
    assert (c["ista"][1:] <= c["ista"][:-1] + 1e-12).all()          # ISTA never increases the objective
    assert (c["iht_eta1/L"][1:] <= c["iht_eta1/L"][:-1] + 1e-12).all()  # IHT with eta < 1/L never increases the residual
    assert c["fista"][-1] < c["ista"][19]


def test_recovery_sweep_one_step_is_exact_for_k_1():
    # k = 1: u_i = a and |u_j| = |a <d_j, d_i>| < |a| since atoms are distinct unit vectors
    rows = xt.recovery_sweep("k", [1, 3], d=16, P=32, n=50, n_steps=20, methods=("one step", "Lasso (FISTA)"))
    assert len(rows) == 4 and {r["k"] for r in rows} == {1, 3}
    one = next(r for r in rows if r["k"] == 1 and r["method"] == "one step")
    assert one["recovery"] == 1.0 and one["exact"] == 1.0
    rows_rho = xt.recovery_sweep("rho", [0.9], d=16, P=32, k=2, n=20, n_steps=10, methods=("one step",))
    assert rows_rho[0]["coherence"] >= 0.9 - 1e-12
    with pytest.raises(ValueError, match="param="):
        xt.recovery_sweep("d", [1])


# ------------------------------------------------------------------ proximal maps
def test_brute_force_prox_on_hand_cases():
    u = torch.tensor([3.0, -2.0, 0.5])
    torch.testing.assert_close(xt.brute_force_prox(u, "AbsTopK", k=1), torch.tensor([3.0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(xt.brute_force_prox(-u, "AbsTopK", k=1), torch.tensor([-3.0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(xt.brute_force_prox(-u, "TopK", k=1), torch.tensor([0, 2.0, 0], dtype=torch.float64))
    torch.testing.assert_close(xt.brute_force_prox(u, "hard threshold", theta=1.0), torch.tensor([3.0, -2.0, 0], dtype=torch.float64))
    torch.testing.assert_close(xt.brute_force_prox(u, "JumpReLU", theta=1.0), torch.tensor([3.0, 0, 0], dtype=torch.float64))
    soft = xt.brute_force_prox(u, "soft threshold", lam=1.0)
    torch.testing.assert_close(soft, torch.tensor([2.0, -1.0, 0], dtype=torch.float64), atol=1e-3, rtol=0)


def test_prox_maps_are_the_brute_force_minimisers():
    for row in xt.prox_check(n=6, n_vectors=8, lam=0.7, theta=1.1, k=2):
        tol = 5e-4 + 1e-12 if row["brute force"].startswith("grid,") else 0.0
        assert row["max_abs_diff"] <= tol, row


def test_prox_map_curves_cut_at_the_kth_competitor():
    u = torch.tensor([-1.0, 0.4, 0.6, 1.0, 1.3])
    rest = [1.2, 0.5, 0.3, -0.8, -1.5]  # k = 2: TopK cut 0.5, AbsTopK cut |.| > 1.2
    c = xt.prox_map_curves(u, rest, lam=1.0, theta=1.0, k=2)
    torch.testing.assert_close(c["TopK"], torch.tensor([0, 0, 0.6, 1.0, 1.3], dtype=torch.float64))
    torch.testing.assert_close(c["AbsTopK"], torch.tensor([0, 0, 0, 0, 1.3], dtype=torch.float64))
    torch.testing.assert_close(c["ReLU"], torch.tensor([0, 0, 0, 0, 0.3], dtype=torch.float64))
    torch.testing.assert_close(c["soft threshold"], torch.tensor([0, 0, 0, 0, 0.3], dtype=torch.float64))


# ------------------------------------------------------------------ one step = SAE
def test_one_step_check_agrees_for_every_activation():
    D = xt.random_dictionary(10, 24, seed=7)
    x = torch.randn(40, 10, dtype=torch.float64)
    rows = xt.one_step_check(x, D, eta=0.5, lam=0.2, k=3, b=0.1 * torch.ones(10, dtype=torch.float64))
    assert [r["activation"] for r in rows] == ["relu", "jumprelu", "absjumprelu", "topk", "abstopk"]
    # Not the same instructions: the SAE stores W_enc = eta*D in another memory layout than D, so the
    # matmul may sum in another order (d=32, P=64 gives 8.9e-16 on AVX-512, 0 with MKL_CBWR). fp64
    # 10-term sums on O(1) codes round at ~1e-16; a wrong support or threshold would differ by O(0.1).
    assert all(r["max_abs_diff"] < 1e-12 for r in rows)
    assert {r["activation"]: r["l0"] for r in rows}["abstopk"] == 3


def test_signed_axis_codes_match_the_closed_form():
    D = xt.random_dictionary(32, 16, seed=8)
    a = torch.linspace(-2, 2, 9, dtype=torch.float64)
    c = xt.signed_axis_codes(D, axis=3, a_grid=a, k=1)
    torch.testing.assert_close(c["abstopk"], a)                        # one latent carries the whole axis
    torch.testing.assert_close(c["topk"], a.clamp_min(0))              # TopK on D keeps the positive half
    torch.testing.assert_close(c["topk_pm_minus"], (-a).clamp_min(0))  # ... and [D, -D] the other half on latent P + i
    # for a < 0 TopK falls back on the atom most opposed to d_i (cosine -m): error a^2 (1 - m^2)
    m = (-(D.T @ D[:, 3])).clamp_min(0).max()
    torch.testing.assert_close(c["err_topk"], torch.where(a < 0, a**2 * (1 - m**2), 0.0), atol=1e-12, rtol=0)
    assert c["err_abstopk"].max() < 1e-20 and c["err_topk_pm"].max() < 1e-20


def test_abstopk_on_D_equals_topk_on_the_doubled_dictionary():
    x, z, D = am.toy.bidirectional_data(400, d=32, P=16, n_active=3, seed=1)
    rows = xt.one_step_signed_table(x.double(), z.double(), D.double(), k=3)
    by = {(r["encoder"], r["dictionary"]): r for r in rows}
    assert by[("AbsTopK", "D")]["fvu"] == pytest.approx(by[("TopK", "[D, −D]")]["fvu"], abs=1e-12)
    assert by[("AbsTopK", "D")]["recovery"] == by[("TopK", "[D, −D]")]["recovery"]
    positive_share = (z > 0).sum().item() / (z != 0).sum().item()
    assert by[("TopK", "D")]["recovery"] <= positive_share + 1e-12  # it can never code a negative entry
    assert by[("TopK", "D")]["latents"] == 16 and by[("TopK", "[D, −D]")]["latents"] == 32


# ------------------------------------------------------------------ chapter 03
def test_code_recovery_is_invariant_to_order_and_sign_of_the_atoms():
    gen = torch.Generator().manual_seed(0)
    D = xt.random_dictionary(20, 10, seed=9)
    z = xt.sparse_codes(60, 10, 3, seed=10)
    perm = torch.randperm(10, generator=gen)
    flip = torch.where(torch.rand(10, generator=gen) < 0.5, -1.0, 1.0).double()
    assert xu.code_recovery(z[:, perm] * flip, z, D, D[:, perm] * flip, signed=True) == 1.0
    assert xu.code_recovery(torch.zeros_like(z), z, D, D, signed=True) == 0.0
    # a nonnegative code on [D, -D] reaches every signed direction
    assert xu.code_recovery(torch.cat([z.clamp_min(0), (-z).clamp_min(0)], 1), z, D, torch.cat([D, -D], 1), signed=False) == 1.0
    # a nonnegative code on D alone only reaches +d_i: recovery = share of positive entries
    pos = (z > 0).sum().item() / (z != 0).sum().item()
    assert xu.code_recovery(z.clamp_min(0), z, D, D, signed=False) == pytest.approx(pos)


def test_unrolled_sae_from_D_runs_iht():
    D = xt.random_dictionary(16, 32, seed=11)
    x = xt.sparse_codes(20, 32, 2, seed=12) @ D.T
    rows = xu.unrolled_vs_solver(x, D, 2, steps=(1, 3))
    # same supports, same maths, but two different matmul calls (the SAE's and the solver's): fp64
    # rounding of 16- and 32-term sums on O(1) codes gives ~1e-16 (measured <= 4.4e-16 on AVX2
    # and AVX-512); a different support would differ by O(0.1).
    assert len(rows) == 4 and all(r["max_abs_diff"] < 1e-12 for r in rows)


def test_solver_steps_sweep_iht_safe_step_never_worsens_the_fit():
    D = xt.random_dictionary(24, 48, seed=13)
    z = xt.sparse_codes(100, 48, 3, seed=14)
    rows = xu.solver_steps_sweep(z @ D.T, z, D, 3, steps=(1, 2, 5, 10))
    safe = [r["fvu"] for r in rows if r["method"] == "IHT, η=1/L"]
    assert len(safe) == 4 and all(b <= a + 1e-12 for a, b in zip(safe, safe[1:]))
    assert all(r["l0"] == 3 for r in rows if r["method"].startswith("IHT"))


def test_encoder_flops_count_matrix_products():
    d, P = 7, 11
    assert xu.encoder_flops_per_token(d, P, 1) == 2 * d * P
    assert xu.encoder_flops_per_token(d, P, 3) == 2 * d * P * (1 + 2 * 2)


def test_unrolled_training_sweep_rows_and_inference_only_reuse_the_weights():
    x, z, D = am.toy.bidirectional_data(1200, d=8, P=8, n_active=2, seed=0)
    rows = xu.unrolled_training_sweep(x[:1000], x[1000:], z[1000:], D, k=2, activations=(("abstopk", 1), ("topk", 2)),
                                      steps=(1, 2), n_tokens=1024, batch_size=128, seeds=(0,))
    assert len(rows) == 2 * 3
    for act, d_sae in (("abstopk", 8), ("topk", 16)):
        mine = [r for r in rows if r["activation"] == act]
        assert {(r["trained_T"], r["T"]) for r in mine} == {(1, 1), (2, 2), (1, 2)}
        base = next(r for r in mine if r["trained_T"] == r["T"] == 1)
        reuse = next(r for r in mine if r["trained_T"] == 1 and r["T"] == 2)
        assert reuse["mcc"] == base["mcc"] and reuse["train_s"] == 0.0  # same atoms, no training
        assert all(r["d_sae"] == d_sae and math.isfinite(r["fvu"]) and r["encode_us_per_token"] > 0 for r in mine)
        assert all(r["l0"] <= 2 for r in mine)


# ------------------------------------------------------------------ tables
def test_summarize_and_format_rows():
    rows = [{"a": "x", "v": 1.0}, {"a": "x", "v": 3.0}, {"a": "y", "v": 5.0}]
    s = xt.summarize(rows, ("a",), ("v",))
    assert s == [{"a": "x", "n": 2, "v": 2.0, "v_min": 1.0, "v_max": 3.0}, {"a": "y", "n": 1, "v": 5.0, "v_min": 5.0, "v_max": 5.0}]
    text = xt.format_rows(s, ["a", "v"]).splitlines()
    assert text[0].split() == ["a", "v"] and text[1].split() == ["x", "2.000"] and len(text) == 3
    assert xt.format_rows([{"g": 4.43e-4, "z": 0.0}], sci=True).splitlines()[1].split() == ["4.43e-04", "0"]


def test_pivot_and_curves_table():
    rows = [{"k": 1, "method": "a", "r": 0.5}, {"k": 1, "method": "b", "r": 0.7}, {"k": 2, "method": "a", "r": 0.1}]
    assert xt.pivot(rows, "k", "method", "r") == [{"k": 1, "a": 0.5, "b": 0.7}, {"k": 2, "a": 0.1}]
    curves = {key: torch.arange(5, dtype=torch.float64) for key in ("ista", "fista", "iht_eta1", "iht_eta1/L")}
    table = xt.curves_table(curves, [1, 5])
    assert [r["t"] for r in table] == [1, 5] and table[1]["ISTA gap"] == 4.0 and table[0]["IHT(η=1/L) residual"] == 0.0
