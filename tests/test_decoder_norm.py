"""The unit-norm decoder's two steps (abstopk_mini.decoder_norm) against a numpy loop over rows."""

import numpy as np
import pytest
import torch

from abstopk_mini.decoder_norm import normalize_rows, remove_parallel


def _numpy_remove_parallel(W, g):
    out = g.copy()
    for i in range(W.shape[0]):
        w = W[i]
        out[i] = g[i] - (g[i] @ w) / max(w @ w, 1e-24) * w
    return out


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_remove_parallel_matches_numpy_and_leaves_nothing_along_the_rows(dtype, tol):
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(40, 9, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3, 40, dtype=torch.float64)[:, None]
    g = torch.randn(40, 9, generator=gen, dtype=torch.float64)
    want = _numpy_remove_parallel(W.numpy(), g.numpy())  # rows of any norm, not only unit ones
    W, got = W.to(dtype), g.to(dtype).clone()
    remove_parallel(W, got)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)
    assert (got * W).sum(1).abs().max() < 10 * tol * W.norm(dim=1).max()


def test_the_scratch_is_reused_and_replaced_when_it_does_not_fit():
    W, g = torch.randn(8, 5), torch.randn(8, 5)
    s1 = remove_parallel(W, g.clone())
    assert s1.shape == W.shape
    assert remove_parallel(W, g.clone(), s1) is s1  # the same work tensor next step
    s2 = remove_parallel(W, g.clone(), torch.empty(3, 5))  # wrong shape: a new one
    assert s2.shape == W.shape
    assert remove_parallel(W.double(), g.double(), s1).dtype == torch.float64  # wrong dtype: a new one
    a, b = g.clone(), g.clone()
    remove_parallel(W, a)
    remove_parallel(W, b, torch.full_like(W, float("nan")))  # whatever the scratch held does not leak in
    assert torch.equal(a, b)


def test_normalize_rows_keeps_a_zero_row_zero():
    W = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    normalize_rows(W)
    assert torch.allclose(W, torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]]))
