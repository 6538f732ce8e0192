"""Regression tests for the CLI / fast-path / validation defects of issue 12 (3, 4, 7, 9, 11).

Each test is named after the defect it pins down and fails on the code before the fix.
"""

import copy
import json
import math
import os

import pytest
import torch

import abstopk_mini as am
from abstopk_mini import fast, losses
from abstopk_mini.cli import main as cli_main
from abstopk_mini.nonlinearities import K_ACTIVATIONS


# ----------------------------------------------------------------------------- defect 3: bf16/fp16 fast path
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative difference ‖a − b‖ / ‖b‖, in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("activation", K_ACTIVATIONS)
@pytest.mark.parametrize("n_dead", [0, 30, 90])  # no AuxK; AuxK on the dense dead block; AuxK sparse
def test_defect03_fast_path_trains_in_bf16_and_fp16(activation, dtype, n_dead):
    """One fast training step in half precision gives the reference path's code and gradients.

    Tolerances: bf16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 3.9e-3), fp16 11 bits. The two
    paths round their sums differently, so gradients agree to a few roundoffs: 2e-2 relative
    (norm-wise) without AuxK (measured ≤ 6.7e-3). AuxK picks the k_aux largest *rounded* scores
    among dead latents; in bf16 equal scores are common and the two paths may keep different
    members of a tie, so with AuxK the bound is 5e-2 (measured ≤ 2.9e-2).
    """
    D_IN, D_SAE, K, B = 24, 96, 5, 40
    cfg = am.SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=K, input_scale=1.7, device="cpu",
                       dtype=dtype, seed=0)
    ref = am.SAE(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ref.b_dec.copy_(torch.randn(D_IN, generator=gen))
        ref.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
        ref.W_enc.mul_(1 + torch.rand(D_IN, D_SAE, generator=gen))
    fst = copy.deepcopy(ref)
    x = torch.randn(B, D_IN, generator=torch.Generator().manual_seed(2)).to(getattr(torch, dtype))
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(3))[:n_dead]] = True
    k_aux = 8 if n_dead != 90 else 6

    o_ref = ref.forward_train(x)
    aux_ref = losses.auxk_loss(o_ref.x_in - o_ref.x_hat, o_ref.u, ref.W_dec, dead, k_aux, ref.cfg.signed)
    (losses.mse(o_ref.x_in, o_ref.x_hat) + aux_ref).backward()
    o_fast = fast.forward_train(fst, x)  # raised "sparse_sampled_addmm ... got BFloat16" before the fix
    aux_fast = fast.auxk_loss(fst, o_fast, dead, k_aux)
    (losses.mse(o_fast.x_in, o_fast.x_hat) + aux_fast).backward()

    assert torch.equal(o_fast.code.to_dense() != 0, o_ref.z != 0)  # the same support
    assert _rel(o_fast.x_hat, o_ref.x_hat) < 2e-2
    bound = 2e-2 if n_dead == 0 else 5e-2
    ref_params = dict(ref.named_parameters())
    for name, p in fst.named_parameters():
        assert p.grad.dtype == getattr(torch, dtype)
        assert _rel(p.grad, ref_params[name].grad) < bound, name


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_defect03_train_sae_fast_bf16_matches_reference_path(dtype):
    """train_sae(fast=True) in half precision finishes and lands where fast=False lands.

    The two runs round differently at every step, so they drift apart slowly: the final FVU agrees
    to 3e-2 relative (measured 7.6e-3 in bf16, 0 in fp16 on this data).
    """
    x = torch.randn(2048, 32, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=32, d_sae=128, activation="abstopk", k=4, dtype=dtype, device="cpu")
    runs = {}
    for use_fast in (True, False):
        sae, hist = am.train_sae(cfg, x, n_tokens=8192, batch_size=256, progress=False, fast=use_fast)
        assert sae.W_dec.dtype == getattr(torch, dtype)
        assert all(torch.isfinite(p).all() for p in sae.parameters())
        runs[use_fast] = hist["fvu"][-1]
    assert 0 < runs[True] < 1
    assert abs(runs[True] - runs[False]) / runs[False] < 3e-2
