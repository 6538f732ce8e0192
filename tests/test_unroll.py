"""Sparse-coding solvers against optimality conditions, and the one-step = SAE-encoder identity."""

import math

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.coding.unroll import (ONE_STEP_ACTIVATIONS, UnrolledSAE, fista, ista, iht, lasso_objective, lipschitz,
                                 one_step, sae_from_dictionary)


def dictionary(d, P, seed=0):
    D = torch.randn(d, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return D / D.norm(dim=0)


def kkt_violation(x, D, z, lam, b=None, nonneg=False):
    """Largest violation of the Lasso optimality conditions (0 at the optimum).

    g = Dᵀ(x − b − Dz): g_i = λ sign(z_i) where z_i ≠ 0; |g_i| ≤ λ where z_i = 0
    (nonneg: g_i = λ where z_i > 0, g_i ≤ λ where z_i = 0).
    """
    b = 0 if b is None else b
    g = (x - b - z @ D.T) @ D
    on = z != 0
    if nonneg:
        return torch.maximum((g - lam).abs().where(on, 0).max(), (g - lam).clamp_min(0).where(~on, 0).max()).item()
    return torch.maximum((g - lam * z.sign()).abs().where(on, 0).max(), (g.abs() - lam).clamp_min(0).where(~on, 0).max()).item()


@pytest.mark.parametrize("solver", [ista, fista])
@pytest.mark.parametrize("nonneg", [False, True])
def test_l1_solvers_reach_the_lasso_optimum(solver, nonneg):
    D = dictionary(12, 20)
    x = torch.randn(6, 12, dtype=torch.float64)
    b = 0.1 * torch.randn(12, dtype=torch.float64)
    z = solver(x, D, 0.3, 3000, nonneg=nonneg, b=b)
    assert kkt_violation(x, D, z, 0.3, b, nonneg) < 1e-4
    assert (z != 0).any()
    if nonneg:
        assert (z >= 0).all()


def test_ista_objective_never_increases_and_fista_is_ahead():
    D = dictionary(16, 40, seed=1)
    x = torch.randn(8, 16, dtype=torch.float64)
    _, h_ista = ista(x, D, 0.2, 60, return_history=True)
    _, h_fista = fista(x, D, 0.2, 60, return_history=True)
    assert (h_ista[1:] <= h_ista[:-1] + 1e-12).all()
    assert h_fista[-1].sum() <= h_ista[-1].sum()
    z_opt = fista(x, D, 0.2, 5000)
    f_opt = lasso_objective(x, D, z_opt, 0.2).sum()
    assert (h_fista[-1].sum() - f_opt) < 0.5 * (h_ista[-1].sum() - f_opt)  # O(1/t^2) vs O(1/t)


@pytest.mark.parametrize("nonneg", [False, True])
def test_iht_recovers_the_support_of_k_sparse_signals(nonneg):
    d, P, k, trials = 64, 128, 4, 100
    hits = 0
    for seed in range(trials):
        gen = torch.Generator().manual_seed(seed)
        D = dictionary(d, P, seed=1000 + seed)
        support = torch.randperm(P, generator=gen)[:k]
        amp = 1 + torch.rand(k, generator=gen, dtype=torch.float64)
        if not nonneg:
            amp = amp * torch.where(torch.rand(k, generator=gen) < 0.5, -1.0, 1.0).double()
        z_true = torch.zeros(1, P, dtype=torch.float64)
        z_true[0, support] = amp
        z = iht(z_true @ D.T, D, k, 200, nonneg=nonneg)
        hits += set(torch.nonzero(z[0]).flatten().tolist()) == set(support.tolist())
    assert hits / trials >= 0.95


@pytest.mark.parametrize("activation", ONE_STEP_ACTIVATIONS)
def test_one_step_is_the_sae_encoder(activation):
    D = dictionary(16, 48, seed=2)
    x = torch.randn(20, 16, dtype=torch.float64)
    b = 0.3 * torch.randn(16, dtype=torch.float64)
    eta, lam, k = 0.7, 0.15, 5
    z1 = one_step(x, D, activation, eta=eta, lam=lam, k=k, b=b)
    sae = sae_from_dictionary(D, activation, eta=eta, lam=lam, k=k, b=b, dtype="float64")
    torch.testing.assert_close(sae.encode(x), z1, rtol=0, atol=1e-6)
    # and the correspondence written in the docstring
    torch.testing.assert_close(sae.W_enc.detach(), eta * D)
    torch.testing.assert_close(sae.W_dec.detach(), D.T)
    torch.testing.assert_close(sae.b_dec.detach(), b)
    if activation == "relu":
        assert torch.all(sae.b_enc == -eta * lam)
    if activation in ("jumprelu", "absjumprelu"):
        assert torch.allclose(sae.threshold, torch.tensor(math.sqrt(2 * eta * lam), dtype=torch.float64))


def test_one_step_equals_the_first_solver_iterate():
    D = dictionary(16, 48, seed=3)
    x = torch.randn(20, 16, dtype=torch.float64)
    eta = 1 / lipschitz(D)
    torch.testing.assert_close(one_step(x, D, "relu", eta=eta, lam=0.2), ista(x, D, 0.2, 1, nonneg=True))
    torch.testing.assert_close(one_step(x, D, "abstopk", eta=eta, k=4), iht(x, D, 4, 1, step=eta))
    torch.testing.assert_close(one_step(x, D, "topk", eta=eta, k=4), iht(x, D, 4, 1, nonneg=True, step=eta))


@pytest.mark.parametrize("activation,solver", [("relu", "ista"), ("abstopk", "iht"), ("topk", "iht")])
@pytest.mark.parametrize("tied", [True, False])
def test_unrolled_sae_with_fixed_weights_runs_the_solver(activation, solver, tied):
    D = dictionary(16, 40, seed=4)
    x = torch.randn(12, 16, dtype=torch.float64)
    b = 0.2 * torch.randn(16, dtype=torch.float64)
    eta, lam, k = 1 / lipschitz(D), 0.1, 4
    base = sae_from_dictionary(D, activation, eta=eta, lam=lam, k=k, b=b, dtype="float64")
    for T in (1, 2, 6):
        un = UnrolledSAE.from_sae(base, n_steps=T, tied=tied)
        if solver == "ista":
            ref = ista(x, D, lam, T, nonneg=True, b=b)
        else:
            ref = iht(x, D, k, T, nonneg=activation == "topk", b=b, step=eta)
        torch.testing.assert_close(un.encode(x), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(UnrolledSAE.from_sae(base, n_steps=1).encode(x), base.encode(x), rtol=0, atol=0)


def test_unrolled_step_sizes_learn_and_untied_weights_count():
    cfg = am.SAEConfig(d_in=8, d_sae=16, activation="abstopk", k=3, device="cpu")
    tied, untied = UnrolledSAE(cfg, n_steps=3), UnrolledSAE(cfg, n_steps=3, tied=False)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(untied) - n(tied) == 2 * (8 * 16 + 16)
    x = torch.randn(32, 8)
    (tied(x) - x).pow(2).sum().backward()
    assert tied.step_sizes.grad is not None and tied.step_sizes.grad.abs().sum() > 0


@pytest.mark.parametrize("tied", [True, False])
def test_unrolled_sae_standardises_each_token_like_the_sae(tied):
    """With input_unit_norm (and no b_enc) the steps run on x_in = s(x − μ)/(σ + ε), and forward maps back
    with σ·(z W_dec + b_dec)/s + μ: a numpy float64 reference, 1e-12 relative."""
    import numpy as np

    d, P, k, s, T = 16, 40, 4, 1.3, 3
    cfg = am.SAEConfig(d_in=d, d_sae=P, activation="abstopk", k=k, device="cpu", dtype="float64", input_scale=s,
                       input_unit_norm=True, use_b_enc=False)
    base = am.SAE(cfg)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        base.b_dec.copy_(0.3 * torch.randn(d, generator=g, dtype=torch.float64))
        base.W_enc.mul_(0.5)
    un = UnrolledSAE.from_sae(base, n_steps=T, tied=tied)
    with torch.no_grad():
        un.step_sizes.copy_(torch.tensor([0.5, 0.8], dtype=torch.float64))
    x = (1 + 3 * torch.rand(12, 1, generator=g, dtype=torch.float64)) * torch.randn(12, d, generator=g, dtype=torch.float64) + 2
    X = x.numpy()
    mu, sd = X.mean(1, keepdims=True), X.std(1, ddof=1, keepdims=True)
    W, Wd, bd = un.W_enc.detach().numpy(), un.W_dec.detach().numpy(), un.b_dec.detach().numpy()
    centred = s * (X - mu) / (sd + 1e-5) - bd

    def abstopk(U):
        Z = np.zeros_like(U)
        for r, row in enumerate(U):
            top = np.argsort(-np.abs(row))[:k]
            Z[r, top] = row[top]
        return Z

    Z = abstopk(centred @ W)
    for step in (0.5, 0.8):
        Z = abstopk(Z + step * (centred - Z @ Wd) @ W)
    np.testing.assert_allclose(un.encode(x).detach().numpy(), Z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(un(x).detach().numpy(), sd * (Z @ Wd + bd) / s + mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(un.forward_train(x).x_in.detach().numpy(), centred + bd, rtol=1e-12, atol=1e-12)
    assert torch.equal(UnrolledSAE.from_sae(base, n_steps=1).encode(x), base.encode(x))
    names = [n for n, _ in un.named_parameters()]
    assert not any("b_enc" in n for n in names) and "b_enc" in dict(un.named_buffers())
    assert (un.W_enc_steps is None) == tied


def test_unrolled_sae_trains_with_train_sae():
    x, _, _ = am.toy.bidirectional_data(4000, d=16, P=16, n_active=2, seed=0)
    cfg = am.SAEConfig(d_in=16, d_sae=16, activation="abstopk", k=2, device="cpu")
    sae, hist = am.train_sae(cfg, x, sae=UnrolledSAE(cfg, n_steps=3), n_tokens=200 * 128, batch_size=128, progress=False)
    assert isinstance(sae, UnrolledSAE)
    assert hist["fvu"][-1] < 0.5 * hist["fvu"][0]
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(16))


def test_bad_input_is_named():
    D = dictionary(8, 10)
    x = torch.randn(4, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="unit norm"):
        ista(x, 2 * D, 0.1, 5)
    assert torch.allclose(ista(x, 2 * D, 0.1, 5, normalize=True), ista(x, D, 0.1, 5))
    with pytest.raises(ValueError, match="d=9"):
        iht(torch.randn(4, 9, dtype=torch.float64), D, 2, 5)
    with pytest.raises(ValueError, match="n_steps"):
        ista(x, D, 0.1, 0)
    with pytest.raises(ValueError, match="lam"):
        ista(x, D, -1.0, 5)
    with pytest.raises(ValueError, match="k must satisfy"):
        iht(x, D, 11, 5)
    with pytest.raises(ValueError, match="one_step knows"):
        one_step(x, D, "batchtopk", eta=0.1, k=2)
    with pytest.raises(ValueError, match="UnrolledSAE supports"):
        UnrolledSAE(am.SAEConfig(d_in=8, d_sae=16, activation="batchtopk", k=2))


def test_unrolled_sae_never_takes_the_one_step_fast_path():
    cfg = am.SAEConfig(d_in=8, d_sae=16, activation="abstopk", k=3, device="cpu")
    un = UnrolledSAE(cfg, n_steps=3)
    x = torch.randn(10, 8)
    torch.testing.assert_close(un(x), un.decode(un.encode(x)))
    one = UnrolledSAE.from_sae(am.SAE(cfg), n_steps=1)
    assert not torch.allclose(un.encode(x), one.encode(x))  # the extra steps do change the code
