"""The encoder's starting scale (abstopk_mini.encoder_scale): the least-squares c, its effect on each
activation's code, and its place in init_from_sample / TrainConfig."""

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini.encoder_scale import MAX_SCALE, fit_encoder_scale, least_squares_scale
from abstopk_mini.train import init_from_sample
from abstopk_mini.train_config import TrainConfig

FAMILY = ("relu", "jumprelu", "absjumprelu", "topk", "batchtopk", "abstopk", "batchabstopk")


@pytest.fixture(scope="module")
def sample():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3000, 32, generator=g) @ torch.randn(32, 32, generator=g) + 2.0


def test_least_squares_scale_matches_numpy():
    g = torch.Generator().manual_seed(1)
    t, e = torch.randn(50, 7, generator=g), torch.randn(50, 7, generator=g)
    t = 0.3 * e + 0.1 * t
    c_np = np.linalg.lstsq(e.numpy().reshape(-1, 1).astype(np.float64), t.numpy().reshape(-1).astype(np.float64),
                           rcond=None)[0][0]
    assert least_squares_scale(t, e) == pytest.approx(c_np, rel=1e-10)
    # the minimiser: moving c either way raises the squared error
    err = lambda c: (t.double() - c * e.double()).pow(2).sum().item()  # noqa: E731
    c = least_squares_scale(t, e)
    assert err(c) < err(c * 1.01) and err(c) < err(c * 0.99)


def test_least_squares_scale_edges():
    t = torch.ones(4, 3)
    assert least_squares_scale(t, torch.zeros(4, 3)) == 1.0  # nothing to scale
    assert least_squares_scale(t, 1e-9 * torch.ones(4, 3)) == MAX_SCALE  # clipped, not 1e9
    assert least_squares_scale(-t, t) == 1.0 / MAX_SCALE  # a negative fit is not a scale
    with pytest.raises(ValueError, match="same shape"):
        least_squares_scale(t, torch.ones(3, 4))


@pytest.mark.parametrize("activation", FAMILY)
def test_the_code_is_scaled_and_the_fit_is_the_best_scale(activation, sample):
    cfg = am.SAEConfig(d_in=32, d_sae=256, activation=activation, k=8)
    torch.manual_seed(3)
    before = init_from_sample(cfg, sample, TrainConfig())
    torch.manual_seed(3)
    after = init_from_sample(cfg, sample, TrainConfig(encoder_init="least_squares"))
    c = (after.W_enc / before.W_enc).flatten()
    assert torch.allclose(c, c[0], rtol=1e-6)  # one scalar for every weight
    c = c[0].item()
    assert torch.equal(after.W_dec, before.W_dec) and torch.equal(after.b_dec, before.b_dec)
    with torch.no_grad():
        o_b, o_a = before.forward_train(sample), after.forward_train(sample)  # the rows the fit saw
        # the same latents fire (a float32 tie at a threshold may flip one in 10^4), with c times the value
        fired = (o_b.z != 0) & (o_a.z != 0)
        assert fired.float().mean() > 0 and ((o_b.z != 0) != (o_a.z != 0)).float().mean() < 1e-3
        torch.testing.assert_close(o_a.z[fired], c * o_b.z[fired], rtol=1e-4, atol=1e-5)
        # the fitted c is the 1-D least-squares size of (x̂ − b_dec) against (x − b_dec), found here by a grid
        t, e = (o_b.x_in - before.b_dec).double(), (o_b.x_hat - before.b_dec).double()
        grid = torch.linspace(0.05, 5, 2000, dtype=torch.float64)
        best = grid[torch.stack([(t - g * e).pow(2).sum() for g in grid]).argmin()].item()
        assert c == pytest.approx(best, abs=5 / 2000 + 1e-3 * best)
        assert am.metrics.fvu(sample, after(sample)) < am.metrics.fvu(sample, before(sample))


def test_default_is_the_transpose_unchanged(sample):
    cfg = am.SAEConfig(d_in=32, d_sae=64, activation="topk", k=4)
    torch.manual_seed(5)
    sae = init_from_sample(cfg, sample, TrainConfig())
    assert TrainConfig().encoder_init == "transpose"
    assert torch.equal(sae.W_enc, sae.W_dec.T)


def test_fit_encoder_scale_refuses_a_sample_without_finite_rows():
    sae = am.SAE(am.SAEConfig(d_in=4, d_sae=8, activation="topk", k=2))
    w = sae.W_enc.clone()
    with pytest.raises(ValueError, match="no finite rows"):
        fit_encoder_scale(sae, torch.full((5, 4), float("nan")))
    assert torch.equal(sae.W_enc, w)  # left as it was


def test_bad_encoder_init_names_the_choices():
    with pytest.raises(ValueError, match=r"encoder_init='lstsq'; choose one of \('transpose', 'least_squares'\)"):
        TrainConfig(encoder_init="lstsq")


def test_a_wide_sae_starts_closer_with_the_fitted_scale():
    """The effect the option exists for: many latents, few steps. Toy data of sparse signed features
    (the bench's), 2,048 latents for d_in 64, 30 steps of 64: the fitted start is ahead at the end."""
    g = torch.Generator().manual_seed(2)
    atoms = torch.nn.functional.normalize(torch.randn(512, 64, generator=g), dim=1)
    idx = torch.randint(0, 512, (4000, 4), generator=g)
    x = (torch.randn(4000, 4, generator=g).unsqueeze(-1) * atoms[idx]).sum(1)
    x_train, x_test = x[:1920], x[1920:]
    fvu = {}
    for init in ("transpose", "least_squares"):
        torch.manual_seed(0)
        sae, _ = am.train_sae(am.SAEConfig(d_in=64, d_sae=2048, activation="topk", k=8), x_train, batch_size=64,
                              n_tokens=1920, encoder_init=init, progress=False, seed=0)
        with torch.no_grad():
            fvu[init] = am.metrics.fvu(x_test, sae(x_test))
    assert fvu["least_squares"] < 0.9 * fvu["transpose"], fvu
