"""evaluate_sae on the paper's options: FVU in the raw space and the per-token normalised MSE of a
standardising SAE, and the paper's batch-level inference of the batch activations, each against a
reference computed by hand (numpy, or torch.topk over the flattened scores of a block).

Tolerances: float64 SAEs and references, 1e-12 relative (sums of a few thousand O(1) squares).
"""

import numpy as np
import pytest
import torch

from abstopk_mini.evaluate import evaluate_sae
from abstopk_mini.sae import SAE, SAEConfig

D_IN, D_SAE, K = 12, 48, 3
F64 = dict(rel=1e-12)


def _x(n, seed=0):
    """Rows with their own offset and spread (standardisation is not a no-op), float64."""
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 3 * torch.rand(n, 1, generator=g, dtype=torch.float64)) * torch.randn(n, D_IN, generator=g, dtype=torch.float64) \
        + torch.randn(n, 1, generator=g, dtype=torch.float64) + torch.linspace(-1, 1, D_IN, dtype=torch.float64)


def _sae(activation, **kw):
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=K, device="cpu", dtype="float64", seed=3,
                        input_scale=1.3, **kw))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        sae.b_dec.copy_(0.3 * torch.randn(D_IN, generator=g, dtype=torch.float64))
        if sae.cfg.use_b_enc:
            sae.b_enc.copy_(0.2 * torch.randn(D_SAE, generator=g, dtype=torch.float64))
    return sae.eval()


def _space_by_hand(sae, X):
    """(x_in = s·x~ or s·x, μ, σ) by hand; μ = 0, σ = 1 without standardisation.  shape: X [n, d]"""
    s = sae.cfg.input_scale
    if not sae.cfg.input_unit_norm:
        return s * X, np.zeros((len(X), 1)), np.ones((len(X), 1))
    mu, sd = X.mean(1, keepdims=True), X.std(1, ddof=1, keepdims=True)
    return s * (X - mu) / (sd + 1e-5), mu, sd


def _weights(sae):
    return [t.detach().numpy() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]


def _fvu(X, Xhat):
    return ((X - Xhat) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()


def test_standardising_sae_fvu_in_the_raw_space_and_the_per_token_mse():
    sae = _sae("abstopk", input_unit_norm=True, use_b_enc=False)
    x = _x(301)
    X = x.numpy()
    Xin, mu, sd = _space_by_hand(sae, X)
    W, be, Wd, bd = _weights(sae)
    U = (Xin - bd) @ W + be
    Z = np.zeros_like(U)
    for r, row in enumerate(U):
        top = np.argsort(-np.abs(row))[:K]
        Z[r, top] = row[top]
    Y = Z @ Wd + bd  # the reconstruction in the SAE's space
    s = sae.cfg.input_scale
    ev = evaluate_sae(sae, x, batch_size=50)
    assert ev["fvu"] == pytest.approx(_fvu(X, sd * Y / s + mu), **F64)
    # the paper's l2 loss: mean over tokens of ||x~ − x~_hat||² / d_in in the standardised space
    assert ev["mse_std"] == pytest.approx(np.mean(((Xin / s - Y / s) ** 2).sum(1) / D_IN), **F64)
    assert ev["l0"] == (Z != 0).sum() / len(X)
    assert "mse_std" not in evaluate_sae(_sae("abstopk"), x, batch_size=50)


def _batch_code_by_hand(u, k, signed):
    """The top k·B scores of the flattened block, kept where positive.  shape: u [B, P] -> z [B, P]"""
    score = (u.abs() if signed else u.clamp_min(0)).flatten()
    idx = torch.topk(score, k * u.shape[0]).indices
    idx = idx[score[idx] > 0]
    z = torch.zeros(u.numel(), dtype=u.dtype)
    z[idx] = (u if signed else u.clamp_min(0)).flatten()[idx]
    return z.reshape(u.shape)


@pytest.mark.parametrize("activation", ["batchtopk", "batchabstopk"])
@pytest.mark.parametrize("standardise", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_batch_inference_selects_top_kB_per_block_and_leaves_the_threshold(activation, standardise, training):
    sae = _sae(activation, input_unit_norm=standardise)
    with torch.no_grad():
        sae.act.threshold.fill_(0.37)  # as if trained
    sae.train(training)
    x = _x(300, seed=1)  # blocks of 128, 128 and 44 rows
    X = x.numpy()
    Xin, mu, sd = _space_by_hand(sae, X)
    W, be, Wd, bd = _weights(sae)
    U = torch.from_numpy((Xin - bd) @ W + be)
    Z = torch.cat([_batch_code_by_hand(U[i:i + 128], K, sae.cfg.signed) for i in range(0, 300, 128)]).numpy()
    s = sae.cfg.input_scale
    ev = evaluate_sae(sae, x, batch_size=7, inference="batch", eval_batch_size=128)
    assert sae.act.threshold.item() == 0.37 and sae.training == training  # no state moved
    assert ev["fvu"] == pytest.approx(_fvu(X, sd * (Z @ Wd + bd) / s + mu), **F64)
    assert ev["l0"] == (Z != 0).sum() / 300
    n_kept = int((Z != 0).sum())  # the budget k·B per block (k·44 for the last); ReLU scores may run out
    assert n_kept == K * 300 if sae.cfg.signed else 0 < n_kept <= K * 300
    if not training:  # the default still applies the learned threshold, token by token
        score = np.abs(U.numpy()) if sae.cfg.signed else np.maximum(U.numpy(), 0)
        Zt = np.where(score > 0.37, U.numpy(), 0.0)
        assert evaluate_sae(sae, x)["fvu"] == pytest.approx(_fvu(X, sd * (Zt @ Wd + bd) / s + mu), **F64)
        assert sae.act.threshold.item() == 0.37


def test_inference_argument_errors():
    x = _x(10)
    with pytest.raises(ValueError, match=r"inference='batch'.*activation='abstopk'.*inference='threshold'"):
        evaluate_sae(_sae("abstopk"), x, inference="batch")
    with pytest.raises(ValueError, match=r"inference='rows'; choose one of \('threshold', 'batch'\)"):
        evaluate_sae(_sae("batchtopk"), x, inference="rows")
    with pytest.raises(ValueError, match="eval_batch_size must be a positive int"):
        evaluate_sae(_sae("batchtopk"), x, inference="batch", eval_batch_size=0)
