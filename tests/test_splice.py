"""Splicing a reconstruction into the model: exactness, positions, references for CE and KL."""

from __future__ import annotations

import math

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.lm import hooks as H
from abstopk_mini.lm import splice as S

TEXTS = ["The king and the queen walked through the garden.",
         "A man and a woman read books.",
         "He said that she would come back tomorrow morning, and she did."]


def _random_sae(d_in: int, layer: int | None, seed: int = 0, activation: str = "abstopk", k: int = 8):
    torch.manual_seed(seed)
    sae = am.SAE(am.SAEConfig(d_in=d_in, d_sae=64, activation=activation, k=k, device="cpu", seed=seed,
                              hook_layer=layer, input_scale=0.5))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1)
        sae.b_enc.normal_(0, 0.1)
    return sae


def _logits(loaded, ids, mask=None):
    with torch.inference_mode():
        return loaded.model(input_ids=ids, attention_mask=mask, use_cache=False).logits


# --------------------------------------------------------------------------- exactness
def test_identity_recovers_everything(tiny_gpt2):
    res = S.evaluate(tiny_gpt2, lambda x: x, TEXTS, layer=0, batch_size=2)
    assert res.ce_sae == res.ce_orig
    assert res.kl_sae == 0.0 and res.fvu == 0.0
    assert res.loss_recovered_zero == pytest.approx(1.0, abs=1e-6)
    assert res.loss_recovered_mean == pytest.approx(1.0, abs=1e-6)
    assert abs(res.ce_zero - res.ce_orig) > 1e-3 and abs(res.ce_mean - res.ce_orig) > 1e-3  # ratios well defined


def test_zero_reconstruction_equals_zero_ablation(tiny_gpt2):
    res = S.evaluate(tiny_gpt2, torch.zeros_like, TEXTS, layer=1)
    assert res.ce_sae == res.ce_zero
    assert res.loss_recovered_zero == 0.0
    assert res.kl_sae > 0 and res.fvu > 1  # zero reconstructs worse than the mean


def test_mean_reconstruction_equals_mean_ablation(tiny_gpt2):
    mean = torch.randn(tiny_gpt2.info.d_model, generator=torch.Generator().manual_seed(1))
    res = S.evaluate(tiny_gpt2, lambda x: mean.expand_as(x), TEXTS, layer=0, mean=mean)
    assert res.ce_sae == res.ce_mean and res.loss_recovered_mean == 0.0


# --------------------------------------------------------------------------- references
def test_ce_orig_matches_transformers_loss_without_bos_skipping(tiny_gpt2):
    """skip_bos=False scores every next-token prediction: the loss transformers computes."""
    for text in TEXTS:
        ids, mask = H.pad(H.encode(tiny_gpt2.tokenizer, [text], 128, prepend_bos=True), 0)
        with torch.inference_mode():
            ref = tiny_gpt2.model(input_ids=ids, labels=ids).loss.item()
        res = S.evaluate(tiny_gpt2, lambda x: x, [text], layer=0, skip_bos=False)
        assert res.n_tokens == ids.shape[1] - 1
        assert res.ce_orig == pytest.approx(ref, rel=1e-5)


def test_padding_and_batching_do_not_change_the_numbers(tiny_gpt2):
    sae = _random_sae(tiny_gpt2.info.d_model, 0)
    one = S.evaluate(tiny_gpt2, sae, TEXTS, batch_size=1)
    three = S.evaluate(tiny_gpt2, sae, TEXTS, batch_size=3)
    lengths = [len(s) for s in H.encode(tiny_gpt2.tokenizer, TEXTS, 128, prepend_bos=True)]
    assert len(set(lengths)) > 1  # the batch of 3 is really padded
    assert one.n_tokens == three.n_tokens == sum(n - 2 for n in lengths)  # BOS prediction not scored
    for key in ("ce_orig", "ce_sae", "ce_zero", "ce_mean", "kl_sae", "fvu"):
        assert getattr(three, key) == pytest.approx(getattr(one, key), rel=1e-5, abs=1e-7), key


def test_last_layer_splice_matches_a_hand_computed_reference(tiny_gpt2):
    """Splicing after the last block: logits = lm_head(ln_f(f(x))), computed by hand from the
    truncated forward, with BOS left as it is; CE, KL, FVU and the mean all checked."""
    loaded, L = tiny_gpt2, tiny_gpt2.info.n_layers - 1
    sae = _random_sae(loaded.info.d_model, L, seed=3)
    seqs = H.encode(loaded.tokenizer, TEXTS, 128, prepend_bos=True)
    res = S.evaluate(loaded, sae, TEXTS, batch_size=2)
    assert res.layer == L
    xs = [H.residual_stream(loaded, torch.tensor([s]), L)[0] for s in seqs]  # each [T, d]
    mean = torch.cat([x[1:] for x in xs]).double().mean(0).float()
    head = lambda h: loaded.model.lm_head(loaded.model.transformer.ln_f(h)).log_softmax(-1)  # noqa: E731
    ce = {"orig": 0.0, "sae": 0.0, "zero": 0.0, "mean": 0.0}
    kl, n = 0.0, 0
    with torch.no_grad():
        for s, x in zip(seqs, xs):
            targets = torch.tensor(s[2:])
            lp = {}
            for name, f in [("orig", lambda v: v), ("sae", sae), ("zero", torch.zeros_like),
                            ("mean", lambda v: mean.expand_as(v))]:
                h = torch.cat([x[:1], f(x[1:])])  # BOS row untouched
                lp[name] = head(h)[1:-1]  # predictions from positions 1..T-2
                ce[name] -= lp[name].gather(1, targets[:, None]).sum().item()
            kl += (lp["orig"].exp() * (lp["orig"] - lp["sae"])).sum().item()
            n += len(targets)
    x_all = torch.cat([x[1:] for x in xs])
    assert res.n_tokens == n
    for name in ce:
        assert getattr(res, f"ce_{name}") == pytest.approx(ce[name] / n, rel=1e-5), name
    assert res.kl_sae == pytest.approx(kl / n, rel=1e-4)
    assert res.fvu == pytest.approx(am.metrics.fvu(x_all, sae(x_all).detach()), rel=1e-6)
    want = (ce["zero"] - ce["sae"]) / (ce["zero"] - ce["orig"])
    assert res.loss_recovered_zero == pytest.approx(want, rel=1e-5)


def test_loss_recovered_formula():
    assert S.loss_recovered(5.0, 3.0, 1.0) == 0.5
    assert S.loss_recovered(5.0, 5.0, 1.0) == 0.0 and S.loss_recovered(5.0, 1.0, 1.0) == 1.0
    assert math.isnan(S.loss_recovered(2.0, 2.0, 2.0))


# --------------------------------------------------------------------------- the hook
def test_hook_edits_only_non_bos_real_positions_and_is_removed(tiny_gpt2):
    loaded = tiny_gpt2
    ids, mask = H.pad(H.encode(loaded.tokenizer, TEXTS[:2], 128, prepend_bos=True), loaded.info.pad_token_id)
    before = _logits(loaded, ids, mask)
    x = H.residual_stream(loaded, ids, 0, mask)
    with S.splice_residual(loaded, 0, lambda v: v + 1.0):
        x_edit = H.residual_stream(loaded, ids, 0, mask)  # a later hook on the block sees the edit
    edited = S.edit_mask(ids, mask, tuple(ids.shape), loaded.info.bos_token_id)
    assert not edited[:, 0].any() and (edited == (mask.bool() & (ids != loaded.info.bos_token_id))).all()
    torch.testing.assert_close(x_edit[edited], x[edited] + 1.0)
    assert torch.equal(x_edit[~edited], x[~edited])  # BOS and pads as they were
    with S.splice_residual(loaded, 0, lambda v: v + 1.0, skip_bos=False):
        x_all = H.residual_stream(loaded, ids, 0, mask)
    torch.testing.assert_close(x_all[:, 0], x[:, 0] + 1.0)
    with pytest.raises(RuntimeError, match="boom"):
        with S.splice_residual(loaded, 1, torch.zeros_like):
            raise RuntimeError("boom")
    assert torch.equal(_logits(loaded, ids, mask), before)  # no hook left behind


def test_bad_reconstruction_shape_is_reported(tiny_gpt2):
    ids = torch.tensor([H.encode(tiny_gpt2.tokenizer, TEXTS[:1], 128, prepend_bos=True)[0]])
    with pytest.raises(ValueError, match="fn returned shape"):
        with S.splice_residual(tiny_gpt2, 0, lambda v: v[:, :3]):
            _logits(tiny_gpt2, ids)


def test_max_tokens_scores_exactly_that_many(tiny_gpt2):
    res = S.evaluate(tiny_gpt2, lambda x: x, TEXTS, layer=0, max_tokens=13)
    assert res.n_tokens == 13
    docs = [am.lm.corpus.Document(t, "test") for t in TEXTS]
    assert S.evaluate(tiny_gpt2, lambda x: x, docs, layer=0, context_length=16).n_tokens > 0


def test_bad_arguments(tiny_gpt2):
    sae = _random_sae(tiny_gpt2.info.d_model, 1)
    with pytest.raises(ValueError, match="trained on layer 1"):
        S.evaluate(tiny_gpt2, sae, TEXTS, layer=0)
    with pytest.raises(ValueError, match="pass layer=L"):
        S.evaluate(tiny_gpt2, lambda x: x, TEXTS)
    with pytest.raises(ValueError, match="d_in=48"):
        S.evaluate(tiny_gpt2, _random_sae(48, 0), TEXTS)
    with pytest.raises(TypeError, match="wrap it"):
        S.evaluate(tiny_gpt2, sae, "one text")
    with pytest.raises(TypeError, match="am.SAE or a callable"):
        S.evaluate(tiny_gpt2, "sae", TEXTS, layer=0)
    with pytest.raises(ValueError, match="mean must be a tensor of shape"):
        S.evaluate(tiny_gpt2, sae, TEXTS, mean=torch.zeros(3))


# --------------------------------------------------------------------------- Gemma
@pytest.mark.slow
def test_gemma_identity_and_zero_splice(gemma):
    texts = ["The capital of France is Paris, and the capital of Italy is Rome.",
             "She gave him the book yesterday."]
    res = S.evaluate(gemma, lambda x: x, texts, layer=6, batch_size=2)
    assert res.ce_sae == res.ce_orig and res.kl_sae == 0.0
    assert res.loss_recovered_zero == pytest.approx(1.0, abs=1e-6)
    assert res.ce_orig < 5.0 < res.ce_zero  # the model knows these; deleting layer 6's output hurts
    assert res.n_tokens == sum(len(gemma.tokenizer(t, add_special_tokens=False)["input_ids"]) - 1 for t in texts)


def test_evaluate_many_equals_evaluate_one_by_one(tiny_gpt2):
    import abstopk_mini as am

    texts = ["The king and the queen walked through the garden.", "A man and a woman read books in the library."]
    fns = {"identity": lambda x: x, "half": lambda x: 0.5 * x, "zero": torch.zeros_like}
    many = am.lm.splice.evaluate_many(tiny_gpt2, fns, texts, layer=1)
    for name, fn in fns.items():
        one = am.lm.splice.evaluate(tiny_gpt2, fn, texts, layer=1)
        assert many[name].to_dict() == pytest.approx(one.to_dict(), rel=1e-9, abs=1e-12)
    assert many["identity"].loss_recovered_zero == 1.0 and many["zero"].loss_recovered_zero == 0.0
