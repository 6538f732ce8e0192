"""Training losses against hand-computed values on tiny examples."""

from __future__ import annotations

import pytest
import torch

from abstopk_mini import losses

D = torch.float64


def test_mse_is_sum_over_features_mean_over_rows():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=D)
    x_hat = torch.tensor([[1.0, 0.0, 4.0], [1.0, -1.0, 2.0]], dtype=D)
    # row 0: 0 + 4 + 1 = 5; row 1: 1 + 1 + 4 = 6; mean 5.5
    assert losses.mse(x, x_hat).item() == 5.5
    assert losses.mse(x, x).item() == 0.0


def test_l1_penalty_is_mean_row_l1_norm_and_counts_negatives():
    z = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, -0.5]], dtype=D)
    assert losses.l1_penalty(z).item() == (3.0 + 0.5) / 2


def test_batch_fvu_closed_form():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]], dtype=D)  # mean [2, 1]; total variance 1+1+1+1 = 4
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 2.0]], dtype=D)  # error 1
    assert losses.batch_fvu(x, x_hat).item() == 0.25
    assert losses.batch_fvu(x, x.mean(0).expand_as(x)).item() == 1.0


# --------------------------------------------------------------------------- AuxK
U = torch.tensor([[3.0, -5.0, 1.0, 0.5], [-1.0, 2.0, -4.0, 0.2]], dtype=D)
W_DEC = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-0.8, 0.6]], dtype=D)
RESIDUAL = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=D)
DEAD = torch.tensor([False, True, True, True])


def _hand_loss(codes, scale):
    """mean over rows of ||r - code @ W_dec||², code given as {latent: value} per row, by hand."""
    total = 0.0
    for b, code in enumerate(codes):
        e_hat = [sum(v * W_DEC[i, j].item() for i, v in code.items()) for j in range(2)]
        total += sum((RESIDUAL[b, j].item() - e_hat[j]) ** 2 for j in range(2))
    return scale * total / len(codes)


def test_auxk_is_zero_with_no_dead_latents():
    out = losses.auxk_loss(RESIDUAL, U, W_DEC, torch.zeros(4, dtype=torch.bool), k_aux=2, signed=True)
    assert out.item() == 0.0


def test_auxk_signed_hand_computed():
    # dead latents 1..3; by |u|: row 0 keeps latent 1 (-5) and 2 (1); row 1 keeps 2 (-4) and 1 (2).
    # n_dead = 3 >= k_aux = 2, so the scale is 1. Latent 0 (u = 3, live) is never used.
    expected = _hand_loss([{1: -5.0, 2: 1.0}, {2: -4.0, 1: 2.0}], scale=1.0)
    got = losses.auxk_loss(RESIDUAL, U, W_DEC, DEAD, k_aux=2, signed=True).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_auxk_unsigned_hand_computed():
    # ReLU scores on dead latents: row 0: (0, 1, 0.5) -> latents 2, 3; row 1: (2, 0, 0.2) -> 1, 3.
    expected = _hand_loss([{2: 1.0, 3: 0.5}, {1: 2.0, 3: 0.2}], scale=1.0)
    got = losses.auxk_loss(RESIDUAL, U, W_DEC, DEAD, k_aux=2, signed=False).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_auxk_scale_is_min_of_dead_over_k_aux_and_one():
    # k_aux = 6 > n_dead = 3: all dead latents used, scale 3/6.
    expected = _hand_loss([{1: -5.0, 2: 1.0, 3: 0.5}, {1: 2.0, 2: -4.0, 3: 0.2}], scale=0.5)
    got = losses.auxk_loss(RESIDUAL, U, W_DEC, DEAD, k_aux=6, signed=True).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # one dead latent, k_aux = 4: scale 1/4, only latent 2 decodes
    dead = torch.tensor([False, False, True, False])
    expected = _hand_loss([{2: 1.0}, {2: -4.0}], scale=0.25)
    got = losses.auxk_loss(RESIDUAL, U, W_DEC, dead, k_aux=4, signed=True).item()
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("signed", [True, False])
def test_auxk_never_selects_live_latents(signed):
    gen = torch.Generator().manual_seed(0)
    B, d_sae, d_in = 16, 12, 5
    u = torch.randn(B, d_sae, generator=gen, dtype=D)
    dead = torch.zeros(d_sae, dtype=torch.bool)
    dead[[2, 5, 7, 11]] = True
    u[:, ~dead] = 100.0 * u[:, ~dead].sign()  # live latents have by far the largest |u|
    u.requires_grad_(True)
    W = torch.randn(d_sae, d_in, generator=gen, dtype=D, requires_grad=True)
    r = torch.randn(B, d_in, generator=gen, dtype=D)
    loss = losses.auxk_loss(r, u, W, dead, k_aux=3, signed=signed)
    loss.backward()
    assert loss.item() > 0
    assert (u.grad[:, ~dead] == 0).all()
    assert (W.grad[~dead] == 0).all()
    assert u.grad[:, dead].abs().sum() > 0
    # equals the same loss computed on the dead latents alone (a brute-force reference)
    u_dead = u.detach()[:, dead]
    score = u_dead.abs() if signed else u_dead.clamp_min(0)
    idx = score.argsort(dim=1, descending=True)[:, :3]
    code = torch.zeros_like(u_dead)
    for b in range(B):
        for i in idx[b]:
            code[b, i] = u_dead[b, i] if signed else max(u_dead[b, i].item(), 0.0)
    ref = (r - code @ W.detach()[dead]).pow(2).sum(1).mean() * min(4 / 3, 1.0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)


def test_auxk_residual_is_detached():
    r = RESIDUAL.clone().requires_grad_(True)
    W = W_DEC.clone().requires_grad_(True)
    losses.auxk_loss(r, U, W, DEAD, k_aux=2, signed=True).backward()
    assert r.grad is None and W.grad is not None
