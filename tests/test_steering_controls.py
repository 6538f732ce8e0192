"""Steering controls: random directions at matched norm and cosine, the controls dict, shifts and intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import abstopk_mini as am
from abstopk_mini.lm import steering as St
from abstopk_mini.lm import steering_controls as SC

PROMPTS = ["The king and the", "A man and a", "He said that", "The queen walked through the"]
PAIRS = [("woman", "man"), ("queen", "king")]  # single tokens of the tiny tokenizer (" he" is not)
HEAD = ("woman", "man")


def _sae(d_in: int, activation: str, layer: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return am.SAE(am.SAEConfig(d_in=d_in, d_sae=64, activation=activation, k=8, device="cpu", seed=seed,
                               hook_layer=layer, input_scale=0.25))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- directions
@pytest.mark.parametrize("d, norm, cosine", [(2, 1.0, 0.3), (32, 0.7, 0.0), (640, 3.5, -0.25), (640, 12.0, 0.999),
                                             (64, 2.0, 1.0), (64, 2.0, -1.0)])
def test_random_direction_with_cosine_has_exactly_the_norm_and_cosine(d, norm, cosine):
    ref = torch.randn(d, generator=_gen(1), dtype=torch.float64) * 5
    v = SC.random_direction_with_cosine(ref, norm, cosine, seed=3)
    assert v.dtype == torch.float64 and v.shape == (d,)
    assert abs(v.norm().item() - norm) <= 1e-13 * norm
    assert abs((v @ ref / (v.norm() * ref.norm())).item() - cosine) <= 1e-13
    # an independent reference: numpy, the projector (I − û ûᵀ) on the same seeded Gaussian draw
    r = torch.randn(d, generator=_gen(3), dtype=torch.float64).numpy()
    u = ref.numpy() / np.linalg.norm(ref.numpy())
    w = (np.eye(d) - np.outer(u, u)) @ r
    want = norm * (cosine * u + math.sqrt(1 - cosine**2) * w / np.linalg.norm(w))
    np.testing.assert_allclose(v.numpy(), want, rtol=0, atol=1e-12 * norm)
    assert torch.equal(SC.random_direction_with_cosine(ref, norm, cosine, seed=3), v)  # the seed reproduces
    if abs(cosine) < 1:
        assert not torch.allclose(SC.random_direction_with_cosine(ref, norm, cosine, seed=4), v)


def test_random_direction_norm_and_seed():
    v = SC.random_direction(640, 2.5, seed=7)
    assert v.shape == (640,) and abs(v.norm().item() - 2.5) <= 1e-13 * 2.5
    assert torch.equal(SC.random_direction(640, 2.5, seed=7), v)
    assert not torch.allclose(SC.random_direction(640, 2.5, seed=8), v)
    r = torch.randn(640, generator=_gen(7), dtype=torch.float64)
    torch.testing.assert_close(v, 2.5 * r / r.norm(), rtol=0, atol=1e-14)
    assert SC.random_direction(640, 2.5, 7, dtype=torch.float32).dtype == torch.float32


def test_direction_errors_name_the_argument():
    ref = torch.randn(16, dtype=torch.float64)
    with pytest.raises(ValueError, match="cosine must be a number in"):
        SC.random_direction_with_cosine(ref, 1.0, 1.5, 0)
    with pytest.raises(ValueError, match="cosine must be a number in"):
        SC.random_direction_with_cosine(ref, 1.0, float("nan"), 0)
    with pytest.raises(ValueError, match="norm must be a finite number > 0"):
        SC.random_direction_with_cosine(ref, float("inf"), 0.5, 0)
    with pytest.raises(ValueError, match="norm must be a finite number > 0"):
        SC.random_direction(16, 0.0, 0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        SC.random_direction(16, 1.0, -1)
    with pytest.raises(ValueError, match="reference must be finite and non-zero"):
        SC.random_direction_with_cosine(torch.zeros(16), 1.0, 0.5, 0)
    with pytest.raises(ValueError, match="reference must be a 1-D tensor"):
        SC.random_direction_with_cosine(torch.ones(2, 8), 1.0, 0.5, 0)
    with pytest.raises(ValueError, match="d must be a positive int"):
        SC.random_direction(0, 1.0, 0)


# --------------------------------------------------------------------------- intervals
def test_mean_interval_against_scipy_and_a_direct_bootstrap():
    x = torch.randn(3, 5, 20, generator=_gen(0), dtype=torch.float64)
    mean, low, high = SC.mean_interval(x)
    lo, hi = stats.t.interval(0.95, 19, loc=x.mean(-1).numpy(), scale=stats.sem(x.numpy(), axis=-1))
    np.testing.assert_allclose(low.numpy(), lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(high.numpy(), hi, rtol=0, atol=1e-12)
    assert ((low < mean) & (mean < high)).all()
    mean_b, low_b, high_b = SC.mean_interval(x, method="bootstrap", n_boot=500, seed=4)
    idx = torch.randint(20, (500, 20), generator=_gen(4))  # the same resamples, averaged by gathering
    means = x.numpy()[..., idx.numpy()].mean(-1)
    np.testing.assert_allclose(low_b.numpy(), np.quantile(means, 0.025, axis=-1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(high_b.numpy(), np.quantile(means, 0.975, axis=-1), rtol=0, atol=1e-12)
    assert torch.equal(SC.mean_interval(x, method="bootstrap", n_boot=500, seed=4)[1], low_b)
    assert ((low_b <= mean_b) & (mean_b <= high_b)).all()
    one = SC.mean_interval(x[..., :1])
    assert torch.isnan(one[1]).all() and torch.isnan(one[2]).all()  # t needs two prompts
    with pytest.raises(ValueError, match="method \\(interval\\) must be"):
        SC.mean_interval(x, method="normal")


# --------------------------------------------------------------------------- the controls
def test_standard_controls_are_at_matched_norm_and_cosine():
    sae_abs, sae_top = _sae(32, "abstopk", seed=0), _sae(32, "topk", seed=1)
    i, j = 3, 7
    d_i = St.decoder_direction(sae_abs, i).double()
    dim = torch.randn(32, generator=_gen(5))
    methods = SC.standard_controls(sae_abs, i, sae_top, j, dim, n_random=2, seed=10)
    assert list(methods) == ["abstopk_clamp", "topk_add", "dim", "random_s10", "random_s11",
                             "random_cos_s12", "random_cos_s13"]
    rho = d_i.norm().item()
    o = methods["abstopk_clamp"].info["orientation"]
    assert o == (1 if (d_i @ dim.double()) >= 0 else -1)
    cos_i = (o * d_i @ dim.double() / (rho * dim.double().norm())).item()
    for name, m in methods.items():
        v = m.direction
        assert abs(v.norm().item() - rho) <= 1e-12 * rho, name
        assert abs(m.info["norm"] - rho) <= 1e-12 * rho, name
        cos = (v @ dim.double() / (v.norm() * dim.double().norm())).item()
        assert abs(cos - m.info["cos_dim"]) <= 1e-12, name
        if name.startswith("random_cos") or name == "abstopk_clamp":
            assert abs(cos - cos_i) <= 1e-12, name
    assert methods["dim"].info["cos_dim"] == pytest.approx(1.0, abs=1e-12)
    d_j = St.decoder_direction(sae_top, j).double()
    torch.testing.assert_close(methods["topk_add"].direction, rho * d_j / d_j.norm(), rtol=0, atol=1e-12)
    # what the interventions do to residual rows
    x = torch.randn(10, 32, generator=_gen(2)) * 4
    for c in (-2.0, 1.5):
        torch.testing.assert_close(methods["abstopk_clamp"](c)(x), St.clamp_latent(sae_abs, i, o * c)(x))
        torch.testing.assert_close(methods["topk_add"](c)(x), x + (c * rho * d_j / d_j.norm()).float())
        assert methods["dim"](c).layer == 1
    # the orientation follows DiM's sign: +c moves towards DiM for the clamp too
    for sign in (1, -1):
        along = SC.standard_controls(sae_abs, i, sae_top, j, sign * d_i.float(), n_random=0)
        assert along["abstopk_clamp"].info["orientation"] == sign
    assert list(SC.standard_controls(sae_abs, i, sae_top, j, dim, n_random=0)) == ["abstopk_clamp", "topk_add", "dim"]


def test_standard_controls_errors():
    sae_abs, sae_top = _sae(32, "abstopk"), _sae(32, "topk", seed=1)
    with pytest.raises(ValueError, match="dims differ.*len\\(dim\\)=31"):
        SC.standard_controls(sae_abs, 3, sae_top, 7, torch.randn(31))
    with pytest.raises(ValueError, match="dims differ.*sae_topk.cfg.d_in=16"):
        SC.standard_controls(sae_abs, 3, _sae(16, "topk"), 7, torch.randn(32))
    with pytest.raises(ValueError, match="sae_topk: layer=1 but the SAE was trained on layer 0"):
        SC.standard_controls(sae_abs, 3, _sae(32, "topk", layer=0), 7, torch.randn(32))
    with pytest.raises(ValueError, match="dim must be finite and non-zero"):
        SC.standard_controls(sae_abs, 3, sae_top, 7, torch.zeros(32))
    with pytest.raises(ValueError, match="orientation must be"):
        SC.standard_controls(sae_abs, 3, sae_top, 7, torch.randn(32), orientation=0)
    with pytest.raises(ValueError, match="n_random must be"):
        SC.standard_controls(sae_abs, 3, sae_top, 7, torch.randn(32), n_random=-1)


# --------------------------------------------------------------------------- on the tiny model
def test_zero_direction_gives_zero_shift(tiny_gpt2):
    zero = torch.zeros(tiny_gpt2.info.d_model)
    r = SC.steering_controls(tiny_gpt2, layer=1, methods={"zero": lambda c: St.add_direction(zero, c, 1)},
                             values=[-3.0, 3.0], prompts=PROMPTS, pairs=PAIRS, headline=HEAD)
    assert torch.equal(r.per_prompt, torch.zeros(1, 2, len(PROMPTS), dtype=torch.float64))
    assert torch.equal(r.shift, torch.zeros(1, 2, dtype=torch.float64))
    assert torch.equal(r.low, r.shift) and torch.equal(r.high, r.shift)
    assert torch.equal(r.headline_shift, r.shift)


def test_plus_and_minus_v_shift_opposite_ways_like_logit_diff_curve(tiny_gpt2):
    loaded, L, eps = tiny_gpt2, 0, 1e-3
    v = torch.randn(loaded.info.d_model, generator=_gen(0))
    make = lambda c: St.add_direction(v, c, L)  # noqa: E731
    r = SC.steering_controls(loaded, layer=L, methods={"v": make}, values=[-eps, eps], prompts=PROMPTS,
                             pairs=PAIRS, headline=HEAD)
    # the reference: the existing curve, its value at 0 being the unedited model (adding 0 changes nothing)
    curve = St.logit_diff_curve(loaded, make, [-eps, 0.0, eps], prompts=PROMPTS, pairs=PAIRS)
    want = curve.per_prompt[[0, 2]] - curve.per_prompt[1]  # [2, P]
    torch.testing.assert_close(r.per_prompt[0], want, rtol=0, atol=1e-6)
    torch.testing.assert_close(r.shift[0], want.mean(1), rtol=0, atol=1e-6)
    assert r.baseline == pytest.approx(curve.baseline, abs=1e-12)
    # first order: opposite signs, equal sizes up to the second-order term
    minus, plus = r.per_prompt[0]
    assert (minus * plus < 0).all()
    # (the tiny model's residual has norm ~0.1, so eps ||v|| ~ 0.006 is small: the asymmetry is a few %)
    assert ((minus + plus).abs() < 0.1 * (plus - minus).abs()).all()
    # the headline pair alone, from the public per-prompt log-odds
    k = curve.pairs.index(HEAD)
    head = St.prompt_log_odds(loaded, make(eps), prompts=PROMPTS, pairs=PAIRS)[:, k] - \
        St.prompt_log_odds(loaded, prompts=PROMPTS, pairs=PAIRS)[:, k]
    torch.testing.assert_close(r.headline_per_prompt[0, 1], head, rtol=0, atol=1e-12)
    assert r.headline == HEAD and r.baseline_headline == pytest.approx(curve.baseline_per_pair[k].item(), abs=1e-12)


def test_interval_contains_the_mean_and_is_a_point_for_one_prompt_repeated(tiny_gpt2):
    loaded = tiny_gpt2
    v = torch.randn(loaded.info.d_model, generator=_gen(1))
    methods = {"v": lambda c: St.add_direction(v, c, 1)}
    for interval in ("t", "bootstrap"):
        r = SC.steering_controls(loaded, layer=1, methods=methods, values=[-1.0, 0.5, 2.0], prompts=PROMPTS,
                                 pairs=PAIRS, headline=HEAD, interval=interval, n_boot=2000, seed=3)
        assert ((r.low <= r.shift) & (r.shift <= r.high) & (r.low < r.high)).all(), interval
        assert ((r.headline_low <= r.headline_shift) & (r.headline_shift <= r.headline_high)).all()
        same = SC.steering_controls(loaded, layer=1, methods=methods, values=[-1.0, 2.0], prompts=[PROMPTS[1]] * 3,
                                    pairs=PAIRS, headline=HEAD, interval=interval, n_boot=2000, seed=3)
        assert (same.per_prompt != 0).all()
        # the three copies are rows of one float32 batch; a kernel set may round rows differently
        # (2.4e-8 measured with ATEN_CPU_CAPABILITY=default): float32 eps x log-probs of ~10 -> 1e-6
        torch.testing.assert_close(same.low, same.shift, rtol=0, atol=1e-6)
        torch.testing.assert_close(same.high, same.shift, rtol=0, atol=1e-6)
    one = SC.steering_controls(loaded, layer=1, methods=methods, values=[1.0], prompts=PROMPTS[:1], pairs=PAIRS,
                               headline=HEAD)
    assert one.to_dict()["low"] == [[None]]  # t needs two prompts: no interval, not a fake one
    assert "-" in one.table().splitlines()[1]


def test_standard_controls_end_to_end_result_and_table(tiny_gpt2):
    loaded = tiny_gpt2
    d = loaded.info.d_model
    methods = SC.standard_controls(_sae(d, "abstopk"), 3, _sae(d, "topk", seed=1), 7,
                                   torch.randn(d, generator=_gen(5)), n_random=1)
    values = [-2.0, 2.0]
    r = SC.steering_controls(loaded, layer=1, methods=methods, values=values, prompts=PROMPTS[:3], pairs=PAIRS,
                             headline=HEAD)
    assert r.methods == list(methods) and r.values == values
    assert r.shift.shape == (5, 2) and r.per_prompt.shape == (5, 2, 3) and r.headline_shift.shape == (5, 2)
    assert r.labels[0][1] == methods["abstopk_clamp"](2.0).label and r.info["dim"]["cos_dim"] == pytest.approx(1.0)
    d_out = json.loads(json.dumps(r.to_dict()))
    assert d_out["methods"] == r.methods and d_out["interval"] == "t" and d_out["n_boot"] is None
    assert d_out["shift"] == r.shift.tolist()  # floats survive JSON exactly
    text = r.table()
    lines = text.splitlines()
    assert len(lines) == 1 + 5 * 2 and "woman-man shift" in lines[0] and "95 % (t)" in lines[0]
    assert lines[1].startswith("abstopk_clamp") and f"{r.shift[0, 0].item():.3f}" in lines[1]
    md = SC.format_controls(r, style="markdown")
    assert md.splitlines()[1].startswith("|---|") and len(md.splitlines()) == 12
    # a tokenizer that splits the headline pair: no headline columns, the pair listed as skipped
    r2 = SC.steering_controls(loaded, layer=1, methods={"dim": methods["dim"]}, values=[1.0], prompts=PROMPTS[:2],
                              pairs=PAIRS + [("she", "he")], headline=("she", "he"))
    assert r2.headline is None and r2.headline_shift is None and r2.skipped[0][:2] == ("she", "he")
    assert "shift" in r2.table() and "she-he" not in r2.table()


def test_steering_controls_errors_name_the_argument(tiny_gpt2):
    loaded = tiny_gpt2
    v = torch.randn(loaded.info.d_model)
    ok = {"v": lambda c: St.add_direction(v, c, 1)}
    kw = dict(layer=1, methods=ok, values=[1.0], prompts=PROMPTS, pairs=PAIRS, headline=HEAD)
    with pytest.raises(ValueError, match="prompts is empty"):
        SC.steering_controls(loaded, **kw | {"prompts": []})
    with pytest.raises(TypeError, match="prompts must be a list of strings"):
        SC.steering_controls(loaded, **kw | {"prompts": "The king"})
    for bad in ([], [1.0, float("nan")], [float("inf")], ["x"]):
        with pytest.raises(ValueError, match="values must be a non-empty list of finite numbers"):
            SC.steering_controls(loaded, **kw | {"values": bad})
    with pytest.raises(ValueError, match="methods must be a non-empty dict"):
        SC.steering_controls(loaded, **kw | {"methods": {}})
    with pytest.raises(ValueError, match="all controls must edit the same layer"):
        SC.steering_controls(loaded, **kw | {"layer": 0})
    with pytest.raises(TypeError, match="methods\\['v'\\]\\(1.0\\) returned NoneType"):
        SC.steering_controls(loaded, **kw | {"methods": {"v": lambda c: None}})
    wrong = SC.standard_controls(_sae(16, "abstopk"), 3, _sae(16, "topk", seed=1), 7, torch.randn(16), n_random=0)
    with pytest.raises(ValueError, match="methods\\['abstopk_clamp'\\] moves along a direction of shape \\(16,\\)"):
        SC.steering_controls(loaded, **kw | {"methods": wrong})
    with pytest.raises(ValueError, match="headline must be one of pairs"):
        SC.steering_controls(loaded, **kw | {"headline": ("girl", "boy")})
    with pytest.raises(ValueError, match="interval must be 't' or 'bootstrap'"):
        SC.steering_controls(loaded, **kw | {"interval": "normal"})
    with pytest.raises(ValueError, match="layer must be an int in \\[0, n_layers=2\\)"):
        SC.steering_controls(loaded, **kw | {"layer": 5})
    with pytest.raises(ValueError, match="no pair"):
        SC.steering_controls(loaded, **kw | {"pairs": [("she", "he")], "headline": None})
