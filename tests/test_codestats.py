"""The single measurement functions: sign counts (codestats), the bidirectional rule, FVU,
evaluate_sae and the table formatter, each against an independent brute-force reference."""

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini import codestats, losses, metrics, tables
from abstopk_mini.evaluate import evaluate_sae


def _sae(activation="abstopk", d_in=8, d_sae=24, k=3, dtype="float32"):
    return am.SAE(am.SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation, k=k, device="cpu", seed=5, dtype=dtype)).eval()


def _brute_counts(z: np.ndarray):
    """Count signs element by element (no vectorised sums)."""
    n_pos = [0] * z.shape[1]
    n_neg = [0] * z.shape[1]
    for row in z:
        for j, v in enumerate(row):
            n_pos[j] += v > 0
            n_neg[j] += v < 0
    return np.array(n_pos), np.array(n_neg)


def _brute_bidirectional(n_pos, n_neg, min_share):
    out = []
    for p, q in zip(n_pos, n_neg):
        n = p + q
        out.append(n > 0 and p / n >= min_share and q / n >= min_share)
    return out


@pytest.mark.parametrize("activation", ["abstopk", "topk", "relu", "jumprelu"])
def test_code_stats_streamed_equal_dense_counts(activation):
    sae = _sae(activation)
    x = torch.randn(301, 8, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        z = sae.encode(x)
    n_pos, n_neg = _brute_counts(z.numpy())
    # a tensor in batches that do not divide N, and an iterable of unequal shards
    for st in (codestats.code_stats(sae, x, batch_size=64),
               codestats.code_stats(sae, [x[:10], x[10:200], x[200:]], batch_size=50),
               codestats.count_codes(z)):
        assert st.n_rows == 301
        assert st.n_pos.tolist() == n_pos.tolist() and st.n_neg.tolist() == n_neg.tolist()
        assert st.n_fire.tolist() == (n_pos + n_neg).tolist()
        np.testing.assert_array_equal(st.rate.numpy(), (n_pos + n_neg) / 301)
        assert st.l0 == pytest.approx((z != 0).sum().item() / 301, rel=1e-12)
        assert st.dead_fraction() == np.mean((n_pos + n_neg) == 0)
        assert st.dense_fraction() == np.mean((n_pos + n_neg) / 301 > 0.1)
        total = (n_pos + n_neg).sum()
        assert st.negative_share() == (n_neg.sum() / total if total else 0.0)
        bidir = _brute_bidirectional(n_pos, n_neg, 0.1)
        assert st.bidirectional().tolist() == bidir
        alive = int(((n_pos + n_neg) > 0).sum())
        assert st.bidirectional_fraction() == pytest.approx(sum(bidir) / alive if alive else 0.0, rel=1e-12)
    if activation in ("topk", "relu", "jumprelu"):
        assert n_neg.sum() == 0
    else:
        assert n_neg.sum() > 0


def test_code_stats_keeps_training_mode_and_checks_input():
    sae = _sae().train()
    codestats.code_stats(sae, torch.randn(20, 8))
    assert sae.training
    with pytest.raises(ValueError, match="batch_size"):
        codestats.code_stats(sae, torch.randn(20, 8), batch_size=0)
    with pytest.raises(TypeError, match="iterable"):
        codestats.code_stats(sae, 3)
    with pytest.raises(ValueError, match="d_sae=24"):
        codestats.CodeStats.zeros(24).add(torch.zeros(2, 5))


def test_bidirectional_rule_on_hand_built_codes():
    # latent 0: 9 positive, 1 negative (10 % negative); 1: 5 / 5; 2: positive only; 3: dead;
    # 4: 1 positive, 3 negative (25 % positive)
    cols = [[1.0] * 9 + [-1.0], [1.0, -1.0] * 5, [2.0] * 10, [0.0] * 10, [0.5, -1, -1, -1] + [0.0] * 6]
    z = torch.tensor(cols).T
    n_pos, n_neg = metrics.count_signs(z)
    assert n_pos.tolist() == [9, 5, 10, 0, 1] and n_neg.tolist() == [1, 5, 0, 0, 3]
    assert metrics.bidirectional_mask(n_pos, n_neg, 0.1).tolist() == [True, True, False, False, True]
    assert metrics.bidirectional_mask(n_pos, n_neg, 0.2).tolist() == [False, True, False, False, True]
    assert metrics.bidirectional_mask(n_pos, n_neg, 0.3).tolist() == [False, True, False, False, False]
    for share in (0.1, 0.2, 0.3):
        want = _brute_bidirectional(n_pos.tolist(), n_neg.tolist(), share)
        assert metrics.sign_stats(z, share)["bidirectional"].tolist() == want
        assert codestats.count_codes(z).bidirectional(share).tolist() == want
        assert metrics.bidirectional_fraction(z, share) == pytest.approx(sum(want) / 4, rel=1e-12)
    assert metrics.alive_share(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 0.0


def test_fvu_against_numpy_and_every_caller():
    g = np.random.default_rng(0)
    x = g.normal(size=(200, 6)) * np.array([1, 2, 3, 0.5, 1, 4]) + 3.0
    x_hat = x + g.normal(size=x.shape) * 0.3
    ref = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    xt, xht = torch.from_numpy(x), torch.from_numpy(x_hat)
    assert metrics.fvu(xt, xht) == pytest.approx(ref, rel=1e-12)
    assert losses.batch_fvu(xt, xht).item() == pytest.approx(ref, rel=1e-12)  # float64 in, float64 out
    assert losses.batch_fvu(xt.float(), xht.float()).item() == pytest.approx(ref, rel=1e-5)  # float32 sums


@pytest.mark.parametrize("activation", ["abstopk", "topk"])
def test_evaluate_sae_equals_the_unstreamed_metrics(activation):
    sae = _sae(activation, dtype="float64")
    x = torch.randn(257, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 1.0
    ev = evaluate_sae(sae, x, batch_size=50)
    with torch.no_grad():
        z = sae.encode(x)
        x_hat = sae.decode(z)
    xn, xhn = x.numpy(), x_hat.numpy()
    assert ev["fvu"] == pytest.approx(((xn - xhn) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum(), rel=1e-12)
    n_pos, n_neg = _brute_counts(z.numpy())
    n = n_pos + n_neg
    assert ev["l0"] == n.sum() / 257
    assert ev["dead_frac"] == np.mean(n == 0) and ev["dense_frac"] == np.mean(n / 257 > 0.1)
    assert ev["negative_share"] == pytest.approx(n_neg.sum() / n.sum(), rel=1e-12)
    bidir = _brute_bidirectional(n_pos, n_neg, 0.1)
    assert ev["bidirectional_frac"] == pytest.approx(sum(bidir) / max(1, int((n > 0).sum())), rel=1e-12)
    assert ev["antipodal_pairs"] == metrics.antipodal_pairs(sae.W_dec.detach())
    with pytest.raises(ValueError, match="non-empty tensor"):
        evaluate_sae(sae, x[:0])


def test_format_table_text_and_markdown():
    rows = [{"name": "a", "v": 0.5, "n": 3, "s": None}, {"name": "bbbb", "v": 12.25, "n": 10}]
    text = tables.format_table(rows, ["name", ("v", "value"), "n", "s"], formats={"v": ".1f"}, align={"name": "<"})
    assert text.splitlines() == ["name  value   n  s",
                                 "a       0.5   3  -",
                                 "bbbb   12.2  10  -"]
    md = tables.format_table(rows, ["name", "v"], style="markdown", digits=2)
    assert md.splitlines() == ["| name | v |", "|---|---|", "| a | 0.50 |", "| bbbb | 12.25 |"]
    assert tables.format_table([], ["name"], style="markdown") == "| name |\n|---|"
    assert tables.format_table([], empty="(no rows)") == "(no rows)"
    with pytest.raises(ValueError, match="style"):
        tables.format_table(rows, style="html")
