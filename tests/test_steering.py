"""Steering: clamping a latent, adding a direction, the female-vs-male log-odds curve, generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini.lm import hooks as H
from abstopk_mini.lm import steering as St

TEXTS = ["The king and the queen walked through the garden.", "A man and a woman read books."]
PROMPTS = ["The king and the", "A man and a", "He said that", "The queen walked through the"]


def _sae(d_in: int, layer: int | None, activation: str = "abstopk", seed: int = 0):
    torch.manual_seed(seed)
    sae = am.SAE(am.SAEConfig(d_in=d_in, d_sae=64, activation=activation, k=8, device="cpu", seed=seed,
                              hook_layer=layer, input_scale=0.25))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1)
    return sae


def _batch(loaded, texts):
    return H.pad(H.encode(loaded.tokenizer, texts, 128, prepend_bos=True), loaded.info.pad_token_id)


def _logits(loaded, ids, mask=None):
    with torch.inference_mode():
        return loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits


# --------------------------------------------------------------------------- clamp / add
def test_clamp_moves_x_along_the_decoder_row_by_c_minus_z():
    sae = _sae(16, 0)
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0)) * 4
    z = sae.encode(x).detach()
    latent = int((z != 0).sum(0).argmax())  # fires on some rows and not on others
    assert 0 < (z[:, latent] != 0).sum() < len(x)
    d_i = sae.W_dec[latent].detach() / sae.cfg.input_scale
    for c in (-3.0, 0.0, 2.5):
        x_new = St.clamp_latent(sae, latent, c)(x)
        torch.testing.assert_close(x_new - x, (c - z[:, latent])[:, None] * d_i, rtol=1e-5, atol=1e-5)
    for row in range(5):  # the latent's own value: nothing changes, bit for bit
        # (its value on the same 1-row input the clamp encodes: z[row] comes from a 50-row matmul,
        # which may round differently, so only this value makes value - z_i exactly 0)
        value = sae.encode(x[row:row + 1])[0, latent].item()
        own = St.clamp_latent(sae, latent, value)(x[row:row + 1])
        assert torch.equal(own, x[row:row + 1])
    torch.testing.assert_close(St.decoder_direction(sae, latent), d_i)


def _clamped_at_block_0(loaded, sae, latent, c):
    """The residual after block 0 without and with latent ``latent`` clamped to ``c``, and the
    edited (non-BOS, real) positions."""
    ids, mask = _batch(loaded, TEXTS)
    x = H.residual_stream(loaded, ids, 0, mask)
    with St.clamp_latent(sae, latent, c).attach(loaded):
        x_new = H.residual_stream(loaded, ids, 0, mask)
    return x, x_new, mask.bool() & (ids != loaded.info.bos_token_id)


def test_clamp_inside_the_model(tiny_gpt2):
    """Attached to block 0, the residual becomes x + (c − z_i(x)) d_i at the non-BOS positions."""
    loaded = tiny_gpt2
    sae = _sae(loaded.info.d_model, 0, seed=1)
    latent, c = 5, -7.0
    x, x_new, edit = _clamped_at_block_0(loaded, sae, latent, c)
    z_i = sae.encode(x[edit]).detach()[:, latent]
    d_i = St.decoder_direction(sae, latent)
    torch.testing.assert_close(x_new[edit], x[edit] + (c - z_i)[:, None] * d_i, rtol=1e-5, atol=1e-5)
    assert torch.equal(x_new[~edit], x[~edit])


def test_zero_addition_and_detaching_change_nothing(tiny_gpt2):
    loaded = tiny_gpt2
    ids, mask = _batch(loaded, TEXTS)
    before = _logits(loaded, ids, mask)
    v = torch.randn(loaded.info.d_model, generator=torch.Generator().manual_seed(0))
    with St.add_direction(v, 0.0, 1).attach(loaded):
        assert torch.equal(_logits(loaded, ids, mask), before)
    with St.add_direction(v, 3.0, 1).attach(loaded):
        assert not torch.allclose(_logits(loaded, ids, mask), before)
    assert torch.equal(_logits(loaded, ids, mask), before)  # the hook is gone after the block


def test_match_norm():
    sae = _sae(16, 0)
    u = torch.randn(16, generator=torch.Generator().manual_seed(2)) * 9
    v = St.match_norm(u, sae, 3)
    assert v.norm().item() == pytest.approx(St.decoder_direction(sae, 3).norm().item(), rel=1e-6)
    assert torch.nn.functional.cosine_similarity(u, v, dim=0).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="zero or non-finite norm"):
        St.match_norm(torch.zeros(16), sae, 3)


# --------------------------------------------------------------------------- standardising SAEs
# Reference by hand in numpy float64 (SAE in float64): x~ = (x − μ)/(σ + ε) with σ the unbiased std,
# u = (s x~ − b_dec) W_enc, z = the k largest |u|; tolerance 1e-12 relative (a few O(d) reductions).
def _standardising_sae(d_in: int, seed: int = 0, dtype: str = "float64"):
    sae = am.SAE(am.SAEConfig(d_in=d_in, d_sae=64, activation="abstopk", k=8, device="cpu", seed=seed, dtype=dtype,
                              hook_layer=0, input_scale=1.3, input_unit_norm=True, use_b_enc=False))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    return sae


def _tokens(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Rows with their own offset and spread, so σ(x) differs from token to token."""
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 4 * torch.rand(n, 1, generator=g, dtype=torch.float64)) * torch.randn(n, d, generator=g, dtype=torch.float64) \
        + torch.randn(n, 1, generator=g, dtype=torch.float64)


def _by_hand(sae, X: np.ndarray):
    """(μ, σ, z) of the rows X by hand.  shape: X [n, d] -> [n, 1], [n, 1], [n, d_sae]"""
    mu, sd = X.mean(1, keepdims=True), X.std(1, ddof=1, keepdims=True)
    s = sae.cfg.input_scale
    U = (s * (X - mu) / (sd + 1e-5) - sae.b_dec.detach().numpy()) @ sae.W_enc.detach().numpy()
    Z = np.zeros_like(U)
    for r, row in enumerate(U):
        top = np.argsort(-np.abs(row))[:sae.cfg.k]
        Z[r, top] = row[top]
    return mu, sd, Z


def test_clamp_on_a_standardising_sae_moves_each_token_by_its_own_sigma():
    sae = _standardising_sae(16)
    x = _tokens(60, 16)
    X = x.numpy()
    mu, sd, Z = _by_hand(sae, X)
    latent = int((Z != 0).sum(0).argmax())
    assert 0 < (Z[:, latent] != 0).sum() < len(X)
    s, Wd, bd = sae.cfg.input_scale, sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy()
    decode = lambda Z: sd * (Z @ Wd + bd) / s + mu  # noqa: E731  the SAE's map back to the raw space
    for c in (-3.0, 0.0, 2.5):
        got = St.clamp_latent(sae, latent, c)(x).numpy()
        np.testing.assert_allclose(got, X + (c - Z[:, [latent]]) * sd * Wd[latent] / s, rtol=1e-12, atol=1e-11)
        # the move is exactly the change of the SAE's reconstruction when z_i is set to c in the code space
        Zc = Z.copy()
        Zc[:, latent] = c
        np.testing.assert_allclose(got - X, decode(Zc) - decode(Z), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(St.decoder_direction(sae, latent, x).numpy(), sd * Wd[latent] / s, rtol=1e-12, atol=0)
    np.testing.assert_allclose(St.mean_decoder_direction(sae, latent, x).numpy(), sd.mean() * Wd[latent] / s,
                               rtol=1e-12, atol=0)
    u = torch.randn(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = St.match_norm(u, sae, latent, x)
    assert v.norm().item() == pytest.approx(sd.mean() * np.linalg.norm(Wd[latent]) / s, rel=1e-12)
    assert torch.nn.functional.cosine_similarity(u, v, dim=0).item() == pytest.approx(1.0, abs=1e-12)
    for call in (lambda: St.decoder_direction(sae, latent), lambda: St.mean_decoder_direction(sae, latent),
                 lambda: St.match_norm(u, sae, latent)):
        with pytest.raises(ValueError, match=r"x=None.*input_unit_norm=True.*Pass x="):
            call()
    with pytest.raises(ValueError, match=r"x must be a non-empty tensor of activation rows \[\.\.\., d_in=16\]"):
        St.decoder_direction(sae, latent, torch.zeros(3, 15))


def test_decoder_direction_with_rows_on_an_ordinary_sae_is_d_i_at_every_row():
    sae = _sae(16, 0)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(4))
    d_i = St.decoder_direction(sae, 3)
    assert torch.equal(d_i, sae.W_dec[3].detach() / sae.cfg.input_scale)
    assert torch.equal(St.decoder_direction(sae, 3, x), d_i.expand(2, 5, 16))
    assert torch.equal(St.mean_decoder_direction(sae, 3, x), d_i) and torch.equal(St.mean_decoder_direction(sae, 3), d_i)
    assert torch.equal(St.match_norm(x[0, 0], sae, 3, x), St.match_norm(x[0, 0], sae, 3))


def test_clamp_with_a_standardising_sae_inside_the_model(tiny_gpt2):
    """float32 residual, float64 SAE: x' = x + (c − z_i(x)) σ(x) W_dec[i]/s at the non-BOS positions."""
    loaded = tiny_gpt2
    sae = _standardising_sae(loaded.info.d_model, seed=1)
    latent, c = 5, -7.0
    x, x_new, edit = _clamped_at_block_0(loaded, sae, latent, c)
    X = x[edit].double().numpy()
    _, sd, Z = _by_hand(sae, X)
    ref = X + (c - Z[:, [latent]]) * sd * sae.W_dec[latent].detach().numpy() / sae.cfg.input_scale
    np.testing.assert_allclose(x_new[edit].numpy(), ref, rtol=1e-5, atol=1e-5)  # the result is cast to float32
    assert torch.equal(x_new[~edit], x[~edit])


# --------------------------------------------------------------------------- the curve
def test_unembedding_direction_moves_the_log_odds_monotonically(tiny_gpt2):
    """Adding c (W_U[woman] − W_U[man]) after the last block: the final LayerNorm projects the
    residual onto the sphere, so the logit difference is ‖ṽ‖ x cos(ṽ, x̃ + c ṽ) (ṽ, x̃ centred;
    γ = 1, β = 0 at init): strictly increasing in c for every prompt."""
    loaded = tiny_gpt2
    pairs = [("woman", "man"), ("she", "he")]
    used, skipped = St.token_pairs(loaded.tokenizer, pairs)
    assert [(u[0], u[1]) for u in used] == [("woman", "man")]
    assert skipped[0][:2] == ("she", "he") and "' he' -> 2 tokens" in skipped[0][2]
    W_U = loaded.model.lm_head.weight.detach()
    v = W_U[used[0][2]] - W_U[used[0][3]]
    values = [-4.0, -2.0, -0.5, 0.0, 0.5, 2.0, 4.0]
    L = loaded.info.n_layers - 1
    curve = St.logit_diff_curve(loaded, lambda c: St.add_direction(v, c, L), values, prompts=PROMPTS, pairs=pairs)
    assert curve.pairs == [("woman", "man")] and len(curve.skipped) == 1
    assert curve.per_prompt.shape == (len(values), len(PROMPTS)) and curve.per_pair.shape == (len(values), 1)
    assert (curve.per_prompt.diff(dim=0) > 0).all()
    assert curve.log_odds[values.index(0.0)].item() == pytest.approx(curve.baseline, abs=1e-12)
    # an independent reference for one point: logits of the last prompt token by hand
    ids = torch.tensor([H.encode(loaded.tokenizer, PROMPTS[:1], 128, prepend_bos=True)[0]])
    x = H.residual_stream(loaded, ids, L)[0, -1] + 2.0 * v
    logits = loaded.model.lm_head(loaded.model.transformer.ln_f(x)).detach()
    assert curve.per_prompt[values.index(2.0), 0].item() == pytest.approx(
        (logits[used[0][2]] - logits[used[0][3]]).item(), rel=1e-5)
    assert isinstance(curve.to_dict()["log_odds"], list)


def test_curve_argument_errors(tiny_gpt2):
    make = lambda c: St.add_direction(torch.zeros(tiny_gpt2.info.d_model), c, 0)  # noqa: E731
    with pytest.raises(ValueError, match="no pair"):
        St.logit_diff_curve(tiny_gpt2, make, [0.0], pairs=[("she", "he")])
    with pytest.raises(ValueError, match="values is empty"):
        St.logit_diff_curve(tiny_gpt2, make, [])
    with pytest.raises(TypeError, match="must return an Intervention"):
        St.logit_diff_curve(tiny_gpt2, lambda c: None, [1.0], pairs=[("woman", "man")])
    with pytest.raises(ValueError, match="latent must be an int"):
        St.clamp_latent(_sae(32, 0), 64, 1.0)
    with pytest.raises(ValueError, match="trained on layer 0"):
        St.clamp_latent(_sae(32, 0), 1, 1.0, layer=1)


# --------------------------------------------------------------------------- generation
def test_generate_with_matches_transformers_greedy(tiny_gpt2):
    loaded = tiny_gpt2
    prompt = "The king and"
    ids = torch.tensor([H.encode(loaded.tokenizer, [prompt], 128, prepend_bos=True)[0]])
    with torch.inference_mode():
        ref = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                    pad_token_id=loaded.info.pad_token_id)
    want = loaded.tokenizer.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
    assert St.generate_with(loaded, prompt, max_new_tokens=6) == want
    v = torch.randn(loaded.info.d_model, generator=torch.Generator().manual_seed(0))
    assert St.generate_with(loaded, prompt, St.add_direction(v, 0.0, 0), max_new_tokens=6) == want
    push = St.add_direction(v, 50.0, 1)
    steered = St.generate_with(loaded, prompt, push, max_new_tokens=6)
    assert steered != want  # a large push changes the greedy path of this model
    with push.attach(loaded), torch.inference_mode():  # with a KV cache only new positions reach the hook
        cached = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                       do_sample=False, pad_token_id=loaded.info.pad_token_id)
    assert loaded.tokenizer.decode(cached[0, ids.shape[1]:], skip_special_tokens=True) == steered


# --------------------------------------------------------------------------- Gemma
@pytest.mark.slow
def test_gemma_pairs_and_steering_end_to_end(gemma):
    used, skipped = St.token_pairs(gemma.tokenizer)
    assert skipped == [] and len(used) == len(St.DEFAULT_PAIRS)  # every default word is one Gemma token
    W_U = gemma.model.get_output_embeddings().weight.detach()
    she, he = used[0][2], used[0][3]
    v = W_U[she] - W_U[he]
    L = 10
    x = H.residual_stream(gemma, torch.tensor([[2] + gemma.tokenizer("The doctor said that",
                                                                   add_special_tokens=False)["input_ids"]]), L)
    r = x[0, 1:].norm(dim=-1).mean().item() / v.norm().item()  # a push the size of the residual itself
    curve = St.logit_diff_curve(gemma, lambda c: St.add_direction(v, c, L), [-r, r],
                                prompts=St.DEFAULT_PROMPTS[:3], pairs=[("she", "he")])
    assert curve.log_odds[0] < curve.baseline < curve.log_odds[1]
    plain = St.generate_with(gemma, "The doctor said that", max_new_tokens=3)
    assert St.generate_with(gemma, "The doctor said that", St.add_direction(v, 0.0, L), max_new_tokens=3) == plain
    assert len(plain) > 0
