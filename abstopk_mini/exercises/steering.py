r"""Checks of chapter 8's exercises: the clamp of one latent, the matched-norm control, the log-odds.

**The clamp** (:func:`check_clamp_edit`). Setting latent :math:`i` of an SAE to :math:`c` edits each
row of the residual stream by

.. math:: x' = x + (c - z_i(x))\, d_i, \qquad d_i = W_{dec}[i] / s,

with :math:`z_i(x)` the latent's code (after the top-k: zero where it was not picked) and :math:`s`
the input scale; everything else in :math:`x`, the SAE's error term :math:`x - \hat x` included,
stays (:func:`abstopk_mini.lm.steering.clamp_latent`, whose hook leaves the BOS position alone).
The reference is numpy: :math:`u = (s x - b_{dec}) W_{enc} + b_{enc}`, the k largest :math:`|u_j|`
by a sort, then the formula.

**The matched norm** (:func:`check_match_norm`). :math:`v = \lVert d_i\rVert\, u / \lVert u\rVert`:
the DiM direction :math:`u` at the length of the latent's decoder row in raw units, so that adding
:math:`c\,v` moves :math:`x` as far as setting the latent from 0 to :math:`c`
(:func:`abstopk_mini.lm.steering.match_norm`).

**The log-odds** (:func:`check_log_odds`). For prompt :math:`p` and pair :math:`k`,
:math:`\log p(f_k) - \log p(m_k)` of the next token after the prompt's last real token
(``attention_mask[p].sum() - 1`` in a right-padded batch); the softmax normaliser cancels, so it
equals :math:`\ell_{f_k} - \ell_{m_k}` of the logits there. Checked against
:func:`abstopk_mini.lm.steering.prompt_log_odds`'s computation (``_prompt_log_odds``, which runs the
LM head at those positions only) on a tiny random Gemma-3, and a numpy log-softmax.

The SAE of the first two checks is random, float64, with an input scale :math:`s = 0.37`, non-zero
biases, decoder rows of unequal norms and an encoder that is not the decoder's transpose, so that
each usual mistake gives a different answer.
"""

from __future__ import annotations

import numpy as np
import torch

from .harness import PackageDisagrees, call, call_tensor, passed, reader_name

__all__ = ["check_clamp_edit", "check_match_norm", "check_log_odds", "clamp_reference", "steering_sae"]

_SCALE = 0.37


def steering_sae(seed: int = 7, d_in: int = 12, d_sae: int = 24, k: int = 4):
    """A random AbsTopK ``am.SAE`` (float64, eval mode) whose parts all differ: input scale 0.37,
    non-zero b_enc and b_dec, decoder rows of norms in [0.5, 2], W_enc not W_decᵀ."""
    from ..sae import SAE, SAEConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, activation="abstopk", k=k, input_scale=_SCALE,
                            dtype="float64")).eval()
        with torch.no_grad():
            sae.W_dec.mul_(torch.empty(d_sae, 1, dtype=torch.float64).uniform_(0.5, 2.0))
            sae.W_enc.copy_(sae.W_dec.T * 0.8 + 0.3 * torch.randn(d_in, d_sae, dtype=torch.float64))
            sae.b_enc.normal_(0.0, 0.2)
            sae.b_dec.normal_(0.0, 0.5)
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


def _numpy_weights(sae):
    return [getattr(sae, n).detach().double().numpy() for n in ("W_enc", "b_enc", "W_dec", "b_dec")]


def clamp_reference(sae, latent: int, value: float, x: np.ndarray) -> np.ndarray:
    """x + (c − z_i(x)) W_dec[i] / s in numpy, z by sorting |u| (AbsTopK: the k largest |u_j| keep
    their sign).  shape: x [n, d_in] -> [n, d_in]"""
    W_enc, b_enc, W_dec, b_dec = _numpy_weights(sae)
    s, k = sae.cfg.input_scale, sae.cfg.k
    u = (s * x - b_dec) @ W_enc + b_enc
    z_i = np.zeros(len(x))
    for n in range(len(x)):
        top = np.argsort(-np.abs(u[n]), kind="stable")[:k]
        z_i[n] = u[n, latent] if latent in top else 0.0
    return x + (value - z_i)[:, None] * W_dec[latent] / s


def _clamp_inputs(sae):
    """Rows x [48, d_in] and three (latent, value) clamps on latents that fire on some rows only."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, sae.cfg.d_in, generator=g, dtype=torch.float64) * 1.5 / _SCALE
    with torch.no_grad():
        fires = (sae.encode(x) != 0).sum(0)
    some = [int(i) for i in torch.argsort(fires, descending=True, stable=True) if 0 < fires[i] < len(x) // 2]
    return x, [(some[0], -2.5), (some[1], 0.0), (some[2], 1.5)]


def _clamp_mistakes(sae, latent: int, value: float, x: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    s = sae.cfg.input_scale
    with torch.no_grad():
        z = sae.encode(x)
        u = sae.pre_acts(x)
        W_dec, W_enc = sae.W_dec, sae.W_enc
        z_i = z[:, latent]
        z_c = z.clone()
        z_c[:, latent] = value
        d_i = W_dec[latent] / s
        c_minus = (value - z_i)[:, None]
        return [
            (sae.decode(z_c), "you returned the SAE's reconstruction with the latent clamped: that replaces x by x̂ "
             "and drops the SAE's error term x − x̂; keep x and add only the change, x + (c − z_i) d_i"),
            (z_c @ W_dec / s, "you returned z' W_dec / s: the decoder bias b_dec is missing and the SAE's error term "
             "x − x̂ is dropped; keep x and add only the change, x + (c − z_i) d_i"),
            (x + value * d_i, "you added c·d_i whatever the latent's current value; a clamp sets the latent to c, so "
             "subtract its current code: x + (c − z_i(x)) d_i"),
            (x - c_minus * d_i, "the sign of the edit is flipped: x' = x + (c − z_i(x)) d_i moves the latent from z_i "
             "to c"),
            (x + c_minus * W_dec[latent], "the input scale is ignored: in raw units d_i = W_dec[i] / s, with "
             "s = sae.cfg.input_scale"),
            (x + c_minus * W_dec[latent] * s, "you multiplied W_dec[i] by the input scale s; the SAE works on s·x, "
             "so one unit of the latent moves the raw x by W_dec[i] / s (divide)"),
            (x + (value - u[:, latent])[:, None] * d_i, "z_i(x) must be the latent's code after the top-k "
             "(sae.encode(x)[:, i], zero where it was not picked), not its pre-activation u_i"),
            (x + c_minus * W_enc[:, latent] / s, "the edit must move x along the latent's decoder row W_dec[i], not "
             "its encoder column W_enc[:, i]"),
        ]


def check_clamp_edit(fn) -> None:
    r"""``fn(sae, latent, value, x)``: the rows x with latent ``latent`` clamped to ``value``,
    :math:`x' = x + (c - z_i(x))\, W_{dec}[i]/s`.  shape: x [n, d_in] -> x' [n, d_in]"""
    __tracebackhide__ = True
    from ..lm import steering

    sae = steering_sae()
    x, clamps = _clamp_inputs(sae)
    name = reader_name(fn)
    for latent, value in clamps:
        want = steering.clamp_latent(sae, latent, value, layer=0)(x.clone())
        ref = clamp_reference(sae, latent, value, x.numpy())
        if not np.allclose(want.numpy(), ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max()):
            raise PackageDisagrees(f"clamping latent {latent} to {value}: am.lm.steering.clamp_latent's edit and the "
                                   "numpy x + (c − z_i) d_i differ — a bug in abstopk_mini, not in your code; please "
                                   "report it")
        x_in = x.clone()
        got = _returned(name, "x", x, x_in, call_tensor(fn, sae, latent, value, x_in, what="clamp_edit"), want,
                        "[n, d_in], one edited row per row of x")
        close = lambda a: torch.allclose(got, a.double(), rtol=1e-9, atol=1e-9 * float(want.abs().max()))  # noqa: E731
        if close(want):
            continue
        for wrong, why in _clamp_mistakes(sae, latent, value, x):
            if close(wrong):
                raise AssertionError(why)
        diff = (got - want).abs()
        row = int(diff.max(1).values.argmax())
        raise AssertionError(f"clamping latent {latent} to {value:g}: your x' differs from x + (c − z_i(x)) d_i "
                             f"(max |diff| {float(diff.max()):.3g}, in row {row})")
    passed(fn, "the clamp", f"on {len(x)} rows and 3 clamps (to −2.5, 0 and 1.5) of latents that fire on some rows of a "
           "random AbsTopK SAE, equals am.lm.steering.clamp_latent's edit and a numpy x + (c − z_i(x)) W_dec[i] / s")


def _returned(name: str, arg: str, original: torch.Tensor, given: torch.Tensor, got: torch.Tensor, want: torch.Tensor,
              shape_words: str) -> torch.Tensor:
    """``got`` in float64, once the reader's function left its input ``given`` as ``original`` and
    returned ``want``'s shape; else the AssertionError saying which."""
    if not torch.equal(given, original):
        raise AssertionError(f"{name} changed its input {arg} in place; return a new tensor and leave {arg} as it is")
    if got.shape != want.shape:
        raise AssertionError(f"{name} returned shape {tuple(got.shape)}; expected {tuple(want.shape)} = {shape_words}")
    return got.detach().double()


# ----------------------------------------------------------------------------- the matched norm
def check_match_norm(fn) -> None:
    r"""``fn(direction, sae, latent)``: ``direction`` rescaled to the norm of the latent's decoder row
    in raw units, :math:`\lVert W_{dec}[i]\rVert / s`.  shape: direction [d_in] -> v [d_in]"""
    __tracebackhide__ = True
    from ..lm import steering

    sae = steering_sae()
    s = sae.cfg.input_scale
    g = torch.Generator().manual_seed(4)
    name = reader_name(fn)
    W_enc, _, W_dec, _ = _numpy_weights(sae)
    for latent in (5, 0, 17):
        u = torch.randn(sae.cfg.d_in, generator=g, dtype=torch.float64) * 7.0
        want = steering.match_norm(u, sae, latent)
        un = u.numpy()
        ref = un / np.linalg.norm(un) * np.linalg.norm(W_dec[latent]) / s
        if not np.allclose(want.numpy(), ref, rtol=1e-12, atol=1e-14):
            raise PackageDisagrees("the matched norm: am.lm.steering.match_norm and the numpy ‖W_dec[i]‖/s · u/‖u‖ "
                                   "differ — a bug in abstopk_mini, not in your code; please report it")
        u_in = u.clone()
        got = _returned(name, "direction", u, u_in, call_tensor(fn, u_in, sae, latent, what="match_norm"), want,
                        "[d_in], one vector")
        close = lambda a: torch.allclose(got, torch.as_tensor(a, dtype=torch.float64), rtol=1e-9, atol=1e-12)  # noqa: E731
        if close(want):
            continue
        unit = un / np.linalg.norm(un)
        d_norm = np.linalg.norm(W_dec[latent])
        for wrong, why in (
            (un * d_norm / s, "v is not normalised: divide the direction by its own norm before giving it the decoder "
             "row's length, v = ‖d_i‖ u / ‖u‖"),
            (unit, "v has norm 1; it must have the norm of the latent's decoder row in raw units, ‖W_dec[i]‖ / s"),
            (unit * np.linalg.norm(W_enc[:, latent]) / s, "you used the norm of the encoder column W_enc[:, i]; the "
             "length to match is that of the decoder row W_dec[i] (divided by s): the move the latent makes"),
            (unit * d_norm, "the input scale is ignored: the decoder row in raw units is W_dec[i] / s, so ‖d_i‖ = "
             "‖W_dec[i]‖ / s"),
            (unit * d_norm * s, "you multiplied by the input scale s; divide: ‖d_i‖ = ‖W_dec[i]‖ / s"),
            (-ref, "the sign is flipped: v keeps the direction u, only its length changes"),
            (W_dec[latent] / s, "you returned the decoder row d_i itself; v must point along the DiM direction u, with "
             "only its length taken from d_i"),
        ):
            if close(wrong):
                raise AssertionError(why)
        raise AssertionError(f"for latent {latent} your v differs from ‖W_dec[i]‖/s · u/‖u‖ (norms: yours "
                             f"{float(got.norm()):.6g}, expected {float(want.norm()):.6g}; cosine with u "
                             f"{float(got @ u / (got.norm() * u.norm() + 1e-300)):.4f}, expected 1)")
    passed(fn, "the matched norm", "on 3 latents of a random SAE (input scale 0.37, decoder rows of unequal norms) "
           "equals am.lm.steering.match_norm and a numpy ‖W_dec[i]‖/s · u/‖u‖")


# ----------------------------------------------------------------------------- the log-odds
def _log_odds_reference(logits: np.ndarray, mask: np.ndarray, fem: np.ndarray, male: np.ndarray) -> np.ndarray:
    """log-softmax at each prompt's last real position, then log p(f) − log p(m).  -> [P, K]"""
    out = np.zeros((len(logits), len(fem)))
    for p in range(len(logits)):
        row = logits[p, int(mask[p].sum()) - 1].astype(np.float64)
        lp = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        out[p] = lp[fem] - lp[male]
    return out


def check_log_odds(fn) -> None:
    r"""``fn(logits, attention_mask, female_ids, male_ids)``: :math:`\log p(f_k) - \log p(m_k)` of the
    next token after each prompt of a right-padded batch.
    shape: logits [P, T, vocab], attention_mask [P, T], female_ids [K], male_ids [K] -> [P, K]"""
    __tracebackhide__ = True
    from ..lm import hooks, steering
    from .tiny import BOS, tiny_gemma3

    loaded = tiny_gemma3()
    g = torch.Generator().manual_seed(8)
    lengths = (6, 11, 4, 9)
    seqs = [[BOS] + torch.randint(3, loaded.info.vocab_size, (n - 1,), generator=g).tolist() for n in lengths]
    ids, mask = hooks.pad(seqs, loaded.info.pad_token_id)
    # padded one column beyond the longest prompt (as with a tokenizer's pad_to_multiple_of)
    ids = torch.cat([ids, torch.full((len(seqs), 1), loaded.info.pad_token_id)], 1)
    mask = torch.cat([mask, torch.zeros(len(seqs), 1, dtype=mask.dtype)], 1)
    pairs = torch.randperm(loaded.info.vocab_size - 3, generator=g)[:10] + 3
    fem, male = pairs[:5], pairs[5:]
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    logits = logits.clone()
    want = steering._prompt_log_odds(loaded, seqs, fem, male).double()
    ref = torch.from_numpy(_log_odds_reference(logits.numpy(), mask.numpy(), fem.numpy(), male.numpy()))
    scale = float(logits.abs().max())
    tol = dict(rtol=0.0, atol=1e-5 * scale)
    if not torch.allclose(want, ref, **tol):
        raise PackageDisagrees("the log-odds: am.lm.steering's _prompt_log_odds and a numpy log-softmax at each "
                               "prompt's last token differ — a bug in abstopk_mini, not in your code; please report it")
    P, K = len(seqs), len(fem)
    name = reader_name(fn)
    args = (logits.clone(), mask.clone(), fem.clone(), male.clone())
    got = call_tensor(fn, *args, what="log_odds")
    if got.shape != want.shape:
        shapes = {(P,): "you averaged over the pairs: return one number per prompt and pair, [P, K] (the curve "
                        "averages later)",
                  (K,): "you averaged over the prompts: return one number per prompt and pair, [P, K]",
                  (K, P): "your result is transposed: [P, K], one row per prompt, one column per pair",
                  (P, ids.shape[1], K): "you kept every position: read the logits at each prompt's last real token "
                                        "only, attention_mask[p].sum() − 1"}
        raise AssertionError(shapes.get(tuple(got.shape), f"{name} returned shape {tuple(got.shape)}; expected "
                                                          f"{(P, K)} = [P prompts, K pairs]"))
    got = got.detach().double()
    if torch.allclose(got, want, **tol):
        passed(fn, "the log-odds", f"on {P} right-padded prompts of a tiny random Gemma-3 and {K} token pairs equals "
               "am.lm.steering.prompt_log_odds's computation and a numpy log-softmax at each prompt's last token")
        return
    rows = torch.arange(P)
    last = mask.sum(1) - 1
    lp = torch.log_softmax(logits.double(), -1)

    def at(pos, table=lp):
        sel = table[rows, pos]
        return sel[:, fem] - sel[:, male]

    probs = lp.exp()[rows, last]
    for wrong, why in (
        (at(torch.full((P,), ids.shape[1] - 1)), "you read the logits at the last column, logits[:, -1]: in a "
         "right-padded batch that is a pad position for every prompt shorter than the batch; read position "
         "attention_mask[p].sum() − 1, the prompt's last real token"),
        (at(last + 1), "you read the position after each prompt's last token (attention_mask.sum(1), a pad); the last "
         "real token is at attention_mask.sum(1) − 1"),
        (at(torch.zeros(P, dtype=torch.long)), "you read the prediction after BOS (position 0); read each prompt's "
         "last real token, attention_mask[p].sum() − 1"),
        (-want, "the sign is flipped: the log-odds is log p(female) − log p(male)"),
        (probs[:, fem] - probs[:, male], "you subtracted probabilities; the log-odds is log p(f) − log p(m), a "
         "difference of log-probabilities (the logits' difference, since the normaliser cancels)"),
        (at(last, torch.log_softmax(logits.double(), 1)), "the log-softmax is over the positions (dim=1); normalise "
         "over the vocabulary, dim=-1 (or skip it: the normaliser cancels in log p(f) − log p(m))"),
    ):
        if torch.allclose(got, wrong.double(), **tol):
            raise AssertionError(why)
    diff = (got - want).abs()
    p, k = np.unravel_index(int(diff.argmax()), tuple(diff.shape))
    raise AssertionError(f"your log-odds differ from log p(f) − log p(m) at the last real token (max |diff| "
                         f"{float(diff.max()):.3g}, at prompt {p}, pair {k})")
