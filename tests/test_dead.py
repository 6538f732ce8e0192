"""Live and dead latents (abstopk_mini.dead): a hand-built SAE, and the firing rule of the SAE itself."""
import pytest
import torch

import abstopk_mini as am
from abstopk_mini.dead import latent_profile, latent_stats


def _hand_sae(activation: str) -> am.SAE:
    # u = x W_enc: latent 0 reads +x_0, latent 1 reads -0.9 x_0 (same axis, opposite sign), latent 2 0.1 x_0 + 0.5 x_1
    sae = am.SAE(am.SAEConfig(d_in=2, d_sae=3, activation=activation, k=1, device="cpu", dtype="float64"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, -0.9, 0.1], [0.0, 0.0, 0.5]], dtype=torch.float64))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=torch.float64)


def test_hand_built_topk_sees_the_negative_latent_as_pushed_negative():
    # TopK, k = 1: scores ReLU(u) are (1, 0, .1), (0, 0, .5), (2, 0, .2): latents 0 and 2 fire, latent 1 never
    s = latent_stats(_hand_sae("topk"), X)
    assert s["fired"].tolist() == [True, False, True]
    assert s["reach"].tolist() == pytest.approx([1.0, 0.0, 1.0], abs=1e-15)  # latent 2: max(.1/1, .5/.5, .2/2)
    assert s["max_u"].tolist() == pytest.approx([2.0, 0.0, 0.5], abs=1e-15)
    assert s["mean_abs_u"].tolist() == pytest.approx([1.0, 0.9, (0.1 + 0.5 + 0.2) / 3], abs=1e-15)
    assert s["positive_frac"].tolist() == pytest.approx([2 / 3, 0.0, 1.0], abs=1e-15)  # u = 0 is not positive
    assert s["enc_norm"].tolist() == pytest.approx([1.0, 0.9, (0.01 + 0.25) ** 0.5], abs=1e-15)
    p = latent_profile(_hand_sae("topk"), X)
    assert p["dead_frac"] == pytest.approx(1 / 3)
    assert p["dead"] == {"n": 1, "reach_median": 0.0, "mean_abs_u_median": pytest.approx(0.9), "positive_frac_median": 0.0,
                         "enc_norm_median": pytest.approx(0.9), "b_enc_median": 0.0, "positive_share": 0.0}
    assert p["alive"]["n"] == 2 and p["alive"]["positive_share"] == 1.0


def test_hand_built_abstopk_sees_it_by_magnitude():
    # AbsTopK, k = 1: scores |u| are (1, .9, .1), (0, 0, .5), (2, 1.8, .2): latent 1 reaches 0.9 of the line
    p = latent_profile(_hand_sae("abstopk"), X)
    assert p["dead"]["n"] == 1 and p["dead"]["reach_median"] == pytest.approx(0.9, abs=1e-15)
    assert p["dead"]["positive_share"] == 0.0 and p["alive"]["reach_median"] == pytest.approx(1.0)


@pytest.mark.parametrize("activation", ["topk", "abstopk"])
def test_firing_and_reach_agree_with_the_sae_itself(activation):
    torch.manual_seed(0)
    sae = am.SAE(am.SAEConfig(d_in=8, d_sae=64, activation=activation, k=3, device="cpu", dtype="float64"))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)  # TopK: some latents pushed below the line
        sae.W_enc[:, :16] *= 0.01  # both: shrunk latents
        sae.b_enc[:16] = 0
    x = torch.randn(200, 8, dtype=torch.float64)
    s = latent_stats(sae, x, batch_size=7)  # blocks do not change the result
    assert s["fired"].tolist() == (sae.encode(x) != 0).any(0).tolist()
    assert 0 < int((~s["fired"]).sum()) < 64
    u = sae.pre_acts(x)
    score = u.abs() if activation == "abstopk" else u.clamp_min(0)
    theta = score.sort(-1, descending=True).values[:, 2:3]  # the 3rd largest score of each token
    torch.testing.assert_close(s["reach"], (score / theta).max(0).values, rtol=1e-12, atol=0)
    torch.testing.assert_close(s["mean_abs_u"], u.abs().mean(0), rtol=1e-12, atol=0)
    assert torch.equal(s["positive_frac"], (u > 0).sum(0).double() / 200)  # a count / 200 either way: exact
    assert torch.all(s["reach"][~s["fired"]] < 1) and torch.all(s["reach"][s["fired"]] >= 1)
    whole = latent_stats(sae, x, batch_size=200)  # blocks change only the matmul's rounding of u
    assert torch.equal(whole["fired"], s["fired"]) and torch.equal(whole["enc_norm"], s["enc_norm"])
    torch.testing.assert_close(whole["max_u"], s["max_u"], rtol=1e-12, atol=1e-14)


def test_bad_input_names_the_argument():
    sae = _hand_sae("topk")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        latent_profile(sae, X, batch_size=0)
    with pytest.raises(ValueError, match=r"x must be \[N >= 1, d_in=2\]"):
        latent_profile(sae, X[:, :1])
    relu = am.SAE(am.SAEConfig(d_in=2, d_sae=3, activation="relu", device="cpu"))
    with pytest.raises(ValueError, match="per-token top-k SAEs"):
        latent_profile(relu, X.float())
