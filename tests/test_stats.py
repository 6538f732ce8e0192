"""Activation and code statistics: checked against numpy/scipy and hand-computed references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

import abstopk_mini as am
from abstopk_mini.lm import activations as A
from abstopk_mini.lm import hooks as H
from abstopk_mini.lm import corpus as C
from abstopk_mini.lm import models as M
from abstopk_mini.lm import stats as S

TEXTS = ["The king and the queen walked.", "A woman read books in the library and a man read too.",
         "Sparse autoencoders."]


def _x(n=500, d=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, d) + torch.arange(d)


# --------------------------------------------------------------------------- reading every layer
def test_residual_streams_equal_the_single_layer_reader(tiny_gpt2):
    seqs = H.encode(tiny_gpt2.tokenizer, TEXTS, 64, prepend_bos=True)
    ids, mask = H.pad(seqs, tiny_gpt2.info.pad_token_id)
    xs = H.residual_streams(tiny_gpt2, ids, [1, 0], mask)
    assert sorted(xs) == [0, 1]
    for layer in (0, 1):
        ref = H.residual_stream(tiny_gpt2, ids, layer, mask)
        assert torch.equal(xs[layer], ref)
        assert not xs[layer].is_inference()


def test_residual_streams_stop_after_the_deepest_layer(tiny_gpt2):
    blocks = M.get_blocks(tiny_gpt2)
    calls = [0] * len(blocks)
    handles = [b.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1)) for i, b in enumerate(blocks)]
    try:
        ids, mask = H.pad(H.encode(tiny_gpt2.tokenizer, TEXTS[:1], 64, True), tiny_gpt2.info.pad_token_id)
        H.residual_streams(tiny_gpt2, ids, [0], mask)
    finally:
        for h in handles:
            h.remove()
    assert calls == [1, 0]


def test_layer_activations_keep_and_mark_bos_and_drop_pads(tiny_gpt2):
    la = S.layer_activations(tiny_gpt2, TEXTS, batch_size=2)
    lengths = [len(s) for s in H.encode(tiny_gpt2.tokenizer, TEXTS, 128, True)]
    assert len(la) == sum(lengths) and la.layers == [0, 1]
    assert int(la.is_bos.sum()) == len(TEXTS)
    assert (la.pos[la.is_bos] == 0).all() and (la.token_ids[la.is_bos] == tiny_gpt2.info.bos_token_id).all()
    for layer in la.layers:  # the non-BOS rows are exactly what token_activations returns
        ref = A.token_activations(tiny_gpt2, TEXTS, layer, batch_size=3)
        torch.testing.assert_close(la.acts[layer][~la.is_bos], ref.acts, rtol=1e-5, atol=1e-6)
        assert torch.equal(la.token_ids[~la.is_bos], ref.token_ids)


def test_layer_arguments_are_checked(tiny_gpt2):
    with pytest.raises(TypeError, match="wrap it"):
        S.layer_activations(tiny_gpt2, TEXTS, layers=1)
    with pytest.raises(ValueError, match="empty"):
        S.layer_activations(tiny_gpt2, TEXTS, layers=[])
    with pytest.raises(ValueError, match="n_layers = 2"):
        S.layer_activations(tiny_gpt2, TEXTS, layers=[0, 2])
    with pytest.raises(TypeError, match="LoadedModel"):
        S.layer_activations(tiny_gpt2.model, TEXTS)


# --------------------------------------------------------------------------- one set of activations
def test_norm_quantiles_match_numpy():
    x = _x()
    qs = (0.0, 0.01, 0.3, 0.5, 0.99, 1.0)
    got = S.norm_quantiles(x, qs)
    ref = np.quantile(np.linalg.norm(x.numpy(), axis=1), qs)
    assert list(got) == list(qs)
    np.testing.assert_allclose(list(got.values()), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="fractions"):
        S.norm_quantiles(x, (0.5, 1.5))


def test_mean_share_closed_form():
    mu = torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64)  # ‖μ‖² = 25
    v = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)  # ‖v‖² = 5 and 4
    x = torch.cat([mu + v, mu - v])  # mean exactly μ; mean ‖x‖² = 25 + (5 + 4) / 2
    assert S.mean_share(x) == pytest.approx(25 / (25 + 4.5), rel=1e-12)
    assert S.mean_share(torch.cat([v, -v])) == pytest.approx(0.0, abs=1e-15)


def test_excess_kurtosis_matches_scipy_and_flags_constant_columns():
    x = _x()
    x[:, 3] = x[:, 3] ** 3  # a heavy-tailed column
    got = S.excess_kurtosis(x)
    ref = scipy.stats.kurtosis(x.numpy(), axis=0, fisher=True, bias=True)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    assert got[3] > 3 * got[0].abs()
    x[:, 2] = 7.0
    assert torch.isnan(S.excess_kurtosis(x)[2])


def test_top_dim_share_by_hand():
    x = torch.tensor([[3.0, 1.0, 0.0], [1.0, -1.0, 2.0]])  # mean squares 5, 1, 2 -> total 8
    assert S.top_dim_share(x, 1) == pytest.approx(5 / 8)
    assert S.top_dim_share(x, 2) == pytest.approx(7 / 8)
    assert S.top_dim_share(x, 3) == pytest.approx(1.0)
    # centred: variances (1, 1, 1) of the columns -> the top one holds a third
    assert S.top_dim_share(x, 1, centered=True) == pytest.approx(1 / 3)
    y = torch.tensor([[10.0, 0.0], [10.0, 2.0], [10.0, -2.0]])  # column 0: large mean, no variance
    assert S.top_dim_share(y, 1) == pytest.approx(100 / (100 + 8 / 3))
    assert S.top_dim_share(y, 1, centered=True) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n must be an int"):
        S.top_dim_share(x, 4)


def test_participation_ratio_matches_eigenvalues_and_limits():
    x = _x(d=9)
    c = x.numpy() - x.numpy().mean(0)
    lam = np.linalg.eigvalsh(c.T @ c / len(c))
    assert S.participation_ratio(x) == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-10)
    line = torch.linspace(-1, 1, 50, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    assert S.participation_ratio(line + 5) == pytest.approx(1.0, rel=1e-10)
    eye = torch.eye(6, dtype=torch.float64)
    assert S.participation_ratio(torch.cat([eye, -eye])) == pytest.approx(6.0, rel=1e-12)  # isotropic


def test_activation_summary_and_bad_input():
    x = _x()
    s = S.activation_summary(x)
    assert s["n"] == 500 and s["norm_q01"] <= s["norm_median"] <= s["norm_q99"]
    assert s["mean_norm"] == pytest.approx(float(x.mean(0).norm()))
    assert s["kurtosis_max"] == pytest.approx(float(S.excess_kurtosis(x).max()))
    assert s["top_dim"] == 6 and s["top_var_dim"] == 6  # the last column has the largest mean and spread
    assert s["top_var_share"] == pytest.approx(S.top_dim_share(x, 1, centered=True))
    with pytest.raises(ValueError, match=r"2-D \[N, d\]"):
        S.mean_share(torch.zeros(4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        S.mean_share(np.zeros((3, 2)))


def test_layer_table_separates_bos(tiny_gpt2):
    la = S.layer_activations(tiny_gpt2, TEXTS)
    rows = S.layer_table(la)
    assert [r["layer"] for r in rows] == [0, 1]
    for row in rows:
        x = la.acts[row["layer"]]
        assert row["n"] == int((~la.is_bos).sum())
        assert row["bos_norm"] == pytest.approx(float(x[la.is_bos].double().norm(dim=1).mean()))
        assert row["norm_median"] == pytest.approx(float(x[~la.is_bos].double().norm(dim=1).quantile(0.5)))
        assert row["bos_ratio"] == pytest.approx(row["bos_norm"] / row["norm_median"])


def test_group_mean_brute_force():
    g = torch.Generator().manual_seed(1)
    pos = torch.randint(0, 6, (200,), generator=g)
    pos[pos == 4] = 5  # group 4 never occurs
    values = torch.randn(200, generator=g)
    mean, count = S.group_mean(values, pos, 7)
    for p in range(7):
        sel = values[pos == p]
        assert count[p] == len(sel)
        if len(sel):
            assert mean[p].item() == pytest.approx(sel.double().mean().item(), rel=1e-12)
        else:
            assert torch.isnan(mean[p])
    assert len(S.group_mean(values, pos)[0]) == 6
    short, n_short = S.group_mean(values, pos, 3)  # groups >= n are left out
    assert torch.equal(short, mean[:3]) and torch.equal(n_short, count[:3])
    with pytest.raises(ValueError, match="same length"):
        S.group_mean(values, pos[:10])
    with pytest.raises(ValueError, match="negative"):
        S.group_mean(values[:2], torch.tensor([0, -1]))


def test_harvest_columns_match_the_shards(tiny_gpt2, tmp_path):
    docs = C.lee_docs()[:6]
    A.harvest(tiny_gpt2, docs, 1, 700, tmp_path, context_length=32, shard_tokens=256, text_source="lee[:6]",
              progress=False)
    cols = S.harvest_columns(tmp_path)
    x = A.load_activations(tmp_path)
    assert set(cols) == {"norm", "token_ids", "position", "doc_index", "chunk_index"}
    torch.testing.assert_close(cols["norm"], x.norm(dim=1))
    assert len(cols["position"]) == 700 and cols["position"].min() >= 1  # BOS (position 0) is not harvested
    assert len(S.harvest_columns(tmp_path, max_shards=1)["norm"]) == 256


def test_corpus_table_counts_tokens(tiny_gpt2):
    docs = C.lee_docs()[:5] + C.newsgroup_docs()[:3]
    train, held = docs[:6], docs[6:]
    rows = S.corpus_table(tiny_gpt2.tokenizer, train, held)
    assert [r["source"] for r in rows] == ["lee", "newsgroups", "total"]
    n = lambda d: len(tiny_gpt2.tokenizer(d.text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert rows[0]["train_docs"] == 5 and rows[0]["train_tokens"] == sum(n(d) for d in docs[:5])
    assert rows[1]["train_docs"] == 1 and rows[1]["heldout_docs"] == 2
    assert rows[1]["heldout_tokens"] == sum(n(d) for d in held)
    assert rows[2]["train_tokens"] == rows[0]["train_tokens"] + rows[1]["train_tokens"]


# --------------------------------------------------------------------------- SAE codes
@pytest.mark.parametrize("activation", ["abstopk", "topk", "relu"])
def test_firing_stats_match_dense_codes(activation):
    cfg = am.SAEConfig(d_in=8, d_sae=32, activation=activation, k=3, device="cpu", seed=2)
    sae = am.SAE(cfg).eval()
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = sae.encode(x)
    st = S.firing_stats(sae, x, batch_size=64)
    assert torch.equal(st["n_fire"], am.metrics.firing_counts(z))
    assert torch.equal(st["n_neg"], (z < 0).sum(0))
    torch.testing.assert_close(st["rate"], (z != 0).double().mean(0))
    assert int(st["n_tokens"]) == 300
    if activation == "topk":
        assert st["n_neg"].sum() == 0 and st["n_fire"].sum() == 3 * 300
    with pytest.raises(ValueError, match="d_in=8"):
        S.firing_stats(sae, torch.zeros(4, 5))
