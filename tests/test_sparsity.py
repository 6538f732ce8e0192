"""The penalty families' L0 (abstopk_mini.sparsity): they start at their target, the controller
reports a bound it hits, and a run that ends off target says so in its record and its warnings."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from abstopk_mini import sparsity
from abstopk_mini.coding.toy import bidirectional_data
from abstopk_mini.sae import SAE, SAEConfig
from abstopk_mini.sparsity import (COEF_RANGE, L0_TOLERANCE, OffTargetL0Warning, check_final_l0, l0_off_target,
                                   next_coefficient, start_at_target)
from abstopk_mini.train import init_from_sample, train_sae
from abstopk_mini.train_config import TrainConfig

PENALISED = ("relu", "jumprelu", "absjumprelu")


def data(n=4000, d=16, seed=0):
    return bidirectional_data(n, d=d, P=24, n_active=3, seed=seed)[0]


def fresh(activation, d_in=16, d_sae=64, k=None, **kw):
    return SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation, k=k, device="cpu", **kw)


# --------------------------------------------------------------------------- starting at the target
@pytest.mark.parametrize("activation", PENALISED)
@pytest.mark.parametrize("target", [2, 6, 20])
def test_a_fresh_sae_starts_at_its_target_l0(activation, target):
    x = data()
    sae = init_from_sample(fresh(activation, k=target), x, TrainConfig())
    with torch.no_grad():
        l0 = (sae.encode(x[: sparsity.INIT_ROWS]) != 0).double().sum(-1).mean().item()
    # each latent fires on exactly ⌊n·target/d_sae⌋ or one fewer row (ties aside): the mean is target - d_sae/n at worst
    assert target - 64 / 4000 - 1e-9 <= l0 <= target + 1e-9, l0


@pytest.mark.parametrize("activation", PENALISED)
def test_the_starting_quantiles_match_numpy(activation):
    # independent reference: numpy's inverted-CDF quantile of each latent's score (u, or |u| when signed)
    x = data(3000)
    sae = SAE(fresh(activation))
    with torch.no_grad():
        u = sae.pre_acts(x).double().numpy()
    score = np.abs(u) if sae.cfg.signed else u
    want = np.quantile(score, 1 - 5 / 64, axis=0, method="inverted_cdf")
    b_enc = sae.b_enc.detach().clone()
    q = start_at_target(sae, x, 5)
    np.testing.assert_allclose(q.double().numpy(), want, rtol=0, atol=1e-6)  # float32 scores, compared as stored
    if activation == "relu":
        torch.testing.assert_close(sae.b_enc, b_enc - q)
    else:
        torch.testing.assert_close(sae.act.threshold, q.clamp_min(0))


def test_sparsity_init_none_keeps_the_configured_threshold_and_a_zero_encoder_bias():
    x = data()
    sae = init_from_sample(fresh("jumprelu", k=4, threshold_init=0.25), x, TrainConfig(sparsity_init="none"))
    assert torch.equal(sae.act.threshold, torch.full((64,), 0.25))
    relu = init_from_sample(fresh("relu", k=4), x, TrainConfig(sparsity_init="none"))
    assert torch.equal(relu.b_enc, torch.zeros(64))


def test_the_topk_family_and_a_penalty_sae_without_target_are_left_alone():
    x = data()
    topk = init_from_sample(fresh("topk", k=4), x, TrainConfig())
    assert torch.equal(topk.b_enc, torch.zeros(64))
    free = init_from_sample(fresh("jumprelu"), x, TrainConfig())  # no k, no target_l0: nothing to start at
    assert torch.equal(free.act.threshold, torch.full((64,), 1e-3))


def test_the_first_training_batch_is_at_the_target_and_the_old_start_is_not():
    x = data(6000)
    kw = dict(n_tokens=256, batch_size=256, log_every=1, progress=False, lr=1e-3)
    _, at = train_sae(fresh("jumprelu", k=4), x, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OffTargetL0Warning)
        _, old = train_sae(fresh("jumprelu", k=4), x, sparsity_init="none", **kw)
    assert abs(at["l0"][0] / 4 - 1) < L0_TOLERANCE, at["l0"][0]
    assert old["l0"][0] > 20, old["l0"][0]  # θ = 1e-3: about half of the 64 latents fire


@pytest.mark.parametrize("target,match", [(0, "target_l0"), (65, "target_l0"), (math.nan, "target_l0")])
def test_a_target_outside_the_latents_is_refused(target, match):
    with pytest.raises(ValueError, match=match):
        start_at_target(SAE(fresh("jumprelu")), data(100), target)


def test_start_at_target_refuses_the_topk_family_and_a_relu_without_encoder_bias():
    with pytest.raises(ValueError, match="relu, jumprelu and absjumprelu"):
        start_at_target(SAE(fresh("topk", k=4)), data(100), 4)
    with pytest.raises(ValueError, match="use_b_enc"):
        start_at_target(SAE(fresh("relu", use_b_enc=False)), data(100), 4)


def test_sparsity_init_must_be_a_known_mode():
    with pytest.raises(ValueError, match="sparsity_init='data'.*'target', 'none'"):
        TrainConfig(sparsity_init="data")


# --------------------------------------------------------------------------- the controller
def test_the_controller_moves_the_coefficient_by_the_clipped_log_ratio():
    assert next_coefficient(1.0, 64, 32, 0.05, 1.0) == (pytest.approx(math.exp(0.05 * math.log(2))), False)
    assert next_coefficient(1.0, 16, 32, 0.05, 1.0)[0] == pytest.approx(math.exp(-0.05 * math.log(2)))
    assert next_coefficient(1.0, 32 * 100, 32, 0.05, 1.0)[0] == pytest.approx(math.exp(0.05))  # clip at +1
    assert next_coefficient(1.0, 0.0, 32, 0.05, 1.0)[0] == pytest.approx(math.exp(-0.05))  # L0 = 0: clip at -1
    assert next_coefficient(2.0, 32, 32, 0.05, 1.0) == (2.0, False)


def test_the_controller_says_when_a_bound_holds_it():
    top, lo = COEF_RANGE, 1 / COEF_RANGE
    assert next_coefficient(top, 100, 32, 0.05, 1.0) == (pytest.approx(top), True)
    assert next_coefficient(lo, 1, 32, 0.05, 1.0) == (pytest.approx(lo), True)
    assert next_coefficient(top, 1, 32, 0.05, 1.0)[1] is False  # moving away from the bound is free


def test_an_unreachable_target_is_counted_and_warned_about():
    x = data(2000)
    with pytest.warns(OffTargetL0Warning) as caught:
        _, hist = train_sae(fresh("relu", d_sae=32), x, n_tokens=300 * 128, batch_size=128, lr=1e-4,
                            l1_coefficient=0.5, target_l0=1e-3, target_rate=1.0, progress=False)
    assert max(hist["coef"]) == pytest.approx(0.5 * COEF_RANGE)
    assert hist["coef_saturated_steps"] > 0
    text = " ".join(str(w.message) for w in caught)
    assert "held its coefficient at a bound" in text


# --------------------------------------------------------------------------- the JumpReLUs' two-sided term
def test_the_two_sided_term_is_the_scaled_square_of_the_mean_l0_gap():
    from abstopk_mini.losses import two_sided_l0

    for mean, target in ((40.0, 32.0), (20.0, 32.0), (32.0, 32.0), (3.0, 6.0)):
        assert two_sided_l0(torch.tensor(mean), target).item() == pytest.approx(2 / target * (mean - target) ** 2)


@pytest.mark.parametrize("activation", ["jumprelu", "absjumprelu"])
def test_the_two_sided_term_lowers_theta_when_too_sparse_and_raises_it_when_too_dense(activation):
    """d/dθ of the term: 4/t·(L̄ − t)·dL̄/dθ with dL̄/dθ < 0 (the STE). Gradient descent on θ raises it
    when L̄ > t and lowers it when L̄ < t; the one-sided λ·L̄ only ever raises it."""
    from abstopk_mini.forward import TrainOutput

    sae = SAE(fresh(activation, d_sae=8, bandwidth=0.5))
    u = torch.linspace(-1.5, 1.5, 64).reshape(8, 8)
    with torch.no_grad():
        sae.act.threshold.fill_(0.5)  # rows within ε/2 of θ carry the STE gradient
    out = TrainOutput(u.new_zeros(8, 16), u, u, u.new_zeros(8, 16))
    l0 = (sae.act(u) != 0).sum(-1).double().mean().item()
    grads = {}
    for name, target in (("too dense", l0 / 2), ("too sparse", l0 * 2), ("one-sided", None)):
        sae.act.threshold.grad = None
        sae.act.penalty_term(out, target).backward()
        grads[name] = sae.act.threshold.grad.sum().item()
    assert grads["too dense"] < 0 < grads["too sparse"], grads
    assert grads["one-sided"] < 0


def test_the_jumprelu_holds_its_coefficient_and_relu_steers_its_own():
    x = data(3000)
    _, jr = train_sae(fresh("jumprelu", k=6), x, n_tokens=60 * 128, batch_size=128, progress=False, lr=1e-3)
    _, relu = train_sae(fresh("relu", k=6), x, n_tokens=60 * 128, batch_size=128, progress=False, lr=1e-3)
    assert set(jr["coef"]) == {TrainConfig().l0_coefficient}
    assert len(set(relu["coef"])) > 1


@pytest.mark.parametrize("start_l0", [18, 2])
def test_a_jumprelu_reaches_its_target_from_either_side(start_l0):
    """Start θ off the target (the quantiles of a target 3x too dense, or 3x too sparse); the two-sided
    term brings the final L0 within the tolerance. From too sparse it is slow: Adam moves θ by about
    lr per step whatever the gradient's size (the same run with 200 steps ends at L0 2.2)."""
    x = data(4000)
    cfg = fresh("jumprelu", k=6, bandwidth=0.2)
    sae = init_from_sample(cfg, x, TrainConfig(target_l0=start_l0))
    _, hist = train_sae(cfg, x, sae=sae, n_tokens=800 * 128, batch_size=128, progress=False, lr=3e-3,
                        target_l0=6, l0_coefficient=2.0)
    assert hist["l0"][0] == pytest.approx(start_l0, rel=0.3)
    assert abs(hist["l0_off_target"]) < L0_TOLERANCE, hist["l0"][::20]


def test_the_aim_moves_by_the_error_and_stays_in_its_range():
    from abstopk_mini.sparsity import AIM_RANGE, next_aim

    assert next_aim(32.0, 26.0, 32, 0.01) == pytest.approx(32.06)  # too sparse: aim higher
    assert next_aim(32.0, 40.0, 32, 0.01) == pytest.approx(31.92)
    assert next_aim(32.0, 26.0, 32, 0.0) == 32.0
    assert next_aim(32.0, 0.0, 32, 100.0) == 32 * AIM_RANGE and next_aim(32.0, 1e4, 32, 100.0) == 32 / AIM_RANGE


@pytest.mark.parametrize("rate", [-0.1, float("nan"), float("inf")])
def test_a_bad_integral_rate_is_refused(rate):
    with pytest.raises(ValueError, match="l0_integral_rate"):
        TrainConfig(l0_integral_rate=rate)


def test_the_integral_term_removes_the_offset_of_a_weak_pull():
    """A weak two-sided pull (λ₀ = 0.1) on the toy data, where the reconstruction drives L0 up, ends ~47 %
    over its target after 800 steps; the same run with the integral term (rate 0.05) lowers the aim and
    ends within the tolerance (measured −3 %)."""
    x = data(4000)
    cfg = fresh("jumprelu", k=6, bandwidth=0.2)
    ends = {}
    for rate in (0.0, 0.05):
        sae = init_from_sample(cfg, x, TrainConfig(target_l0=6))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OffTargetL0Warning)
            _, hist = train_sae(cfg, x, sae=sae, n_tokens=800 * 128, batch_size=128, progress=False, lr=3e-3,
                                target_l0=6, l0_coefficient=0.1, l0_integral_rate=rate)
        ends[rate] = (hist["l0_off_target"], hist["l0_aim"])
    assert ends[0.0][1] == 6.0 and ends[0.05][1] != 6.0
    assert abs(ends[0.05][0]) < L0_TOLERANCE < ends[0.0][0], ends


# --------------------------------------------------------------------------- the record
def test_l0_off_target():
    assert l0_off_target(167, 32) == pytest.approx(167 / 32 - 1)
    assert l0_off_target(None, 32) is None and l0_off_target(30, None) is None


@pytest.mark.parametrize("final,warned", [(32 * (1 + L0_TOLERANCE) + 0.01, True), (32 * (1 + L0_TOLERANCE) - 0.01, False),
                                          (32 * (1 - L0_TOLERANCE) - 0.01, True), (32, False)])
def test_the_off_target_warning_starts_at_the_tolerance(final, warned):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_final_l0("jumprelu", final, 32, 0, 100)
    assert bool(caught) == warned


def test_a_trained_penalty_sae_records_its_target_and_how_far_it_ended_from_it():
    x = data(3000)
    sae, hist = train_sae(fresh("relu", k=6), x, n_tokens=60 * 128, batch_size=128, progress=False, lr=1e-3)
    assert hist["target_l0"] == 6
    assert hist["l0_off_target"] == pytest.approx(hist["final_l0"] / 6 - 1)
    assert isinstance(hist["coef_saturated_steps"], int)
    _, topk = train_sae(fresh("topk", k=6), x, n_tokens=20 * 128, batch_size=128, progress=False)
    assert topk["target_l0"] is None and topk["l0_off_target"] is None


# --------------------------------------------------------------------------- the store
def test_the_store_keys_every_sae_by_the_optimiser_and_penalty_saes_by_their_recipe(tmp_path, monkeypatch):
    """An SAE stored before gradient clipping became the default (or, for the penalty families, before their
    recipe) is not served: its key differs; the new key holds OPTIMISER_RECIPE and the penalty's recipe."""
    from abstopk_mini.runs import store
    from abstopk_mini.train_config import OPTIMISER_RECIPE

    monkeypatch.setattr("abstopk_mini.lm.shards.read_manifest", lambda _: {"content_sha256": "abc"})
    kw = {"n_tokens": 10, "batch_size": 2, "seed": 0}
    for activation, carries in (("topk", False), ("abstopk", False), ("relu", True), ("jumprelu", True)):
        cfg = fresh(activation, k=4)
        ident = {"acts": "abc", "cfg": cfg.key_dict() | {"device": None}, "train": kw}
        unclipped = store.content_key(ident | ({"sparsity_recipe": sparsity.recipe_key(cfg.spec)} if carries else {}))
        new = store.content_key(ident | {"optimiser": OPTIMISER_RECIPE}
                                | ({"sparsity_recipe": sparsity.recipe_key(cfg.spec)} if carries else {}))
        got = store.sae_dir(tmp_path, cfg, kw, root=tmp_path).name
        assert got.endswith(new) and not got.endswith(unclipped), (activation, got)


def test_the_reproduce_table_marks_an_off_target_row_and_only_that_one():
    from abstopk_mini.runs.reproduce import _l0_cell

    off = {"l0": 24.3, "target_l0": 32, "l0_off_target": 24.3 / 32 - 1}
    near = {"l0": 32.3, "target_l0": 32, "l0_off_target": 32.3 / 32 - 1}
    topk = {"l0": 32.0, "target_l0": None, "l0_off_target": None}
    assert _l0_cell(off) == "24.3 ⚠ (target 32, -24 %)"
    assert _l0_cell(near) == "32.3" and _l0_cell(topk) == "32"
