"""Toy data: exact structure of the generators, and one small end-to-end check of the headline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abstopk_mini import metrics
from abstopk_mini.sae import SAEConfig
from abstopk_mini.coding.toy import GENDER_CONCEPTS, bidirectional_data, gender_data
from abstopk_mini.train import train_sae


# --------------------------------------------------------------------------- signed axes
@pytest.mark.parametrize("n_active", [1, 2, 5])
def test_bidirectional_data_structure(n_active):
    x, z, D = bidirectional_data(3000, d=16, P=8, n_active=n_active, seed=1)
    assert x.shape == (3000, 16) and z.shape == (3000, 8) and D.shape == (16, 8)
    assert ((z != 0).sum(1) == n_active).all()
    torch.testing.assert_close(D.double().norm(dim=0), torch.ones(8, dtype=torch.float64), rtol=0, atol=1e-6)
    a = z[z != 0].abs()
    assert a.min() >= 0.5 and a.max() <= 1.5  # default amplitude range
    # noise = 0 and no bias: x = z Dᵀ exactly
    assert torch.equal(x, z @ D.T + 0.0)


@pytest.mark.parametrize("p_negative", [0.0, 0.2, 0.5, 1.0])
def test_bidirectional_data_sign_rate(p_negative):
    _, z, _ = bidirectional_data(20_000, d=8, P=8, n_active=2, p_negative=p_negative, seed=0)
    nz = z[z != 0]
    frac = (nz < 0).double().mean().item()
    # 40 000 signs: binomial std <= 0.0025; 0.015 is 6 std
    assert frac == pytest.approx(p_negative, abs=0.015)
    if 0 < p_negative < 1:  # every axis is used in both directions
        st = metrics.sign_stats(z, min_share=p_negative / 2)
        assert st["bidirectional"].all()


def test_bidirectional_data_bias_and_noise():
    x, z, D = bidirectional_data(2000, d=16, P=8, n_active=2, bias_norm=3.0, seed=2)
    offset = x - z @ D.T
    torch.testing.assert_close(offset, offset[:1].expand_as(offset), rtol=0, atol=1e-5)  # one constant b
    assert offset[0].norm().item() == pytest.approx(3.0, rel=1e-5)
    x2, z2, D2 = bidirectional_data(2000, d=16, P=8, n_active=2, noise=0.1, seed=2)
    assert torch.equal(z2, z) and torch.equal(D2, D)  # noise does not change the signal
    assert (x2 - z2 @ D2.T).std().item() == pytest.approx(0.1, rel=0.05)


def test_bidirectional_data_is_seeded_and_checks_arguments():
    a = bidirectional_data(100, d=8, P=4, n_active=2, seed=5)
    b = bidirectional_data(100, d=8, P=4, n_active=2, seed=5)
    c = bidirectional_data(100, d=8, P=4, n_active=2, seed=6)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="n_active"):
        bidirectional_data(10, d=8, P=4, n_active=5)
    with pytest.raises(ValueError, match="n_active"):
        bidirectional_data(10, d=8, P=4, n_active=0)


# --------------------------------------------------------------------------- gender toy
def test_gender_data_codes_are_exact():
    """With noise=0 each sample is exactly its base concepts plus sign·strength·g (least squares)."""
    x, words, gender, D, concepts = gender_data(600, d=32, gender_strength=1.5, noise=0.0, seed=0)
    assert concepts[-1] == "gender" and D.shape == (32, len(concepts))
    codes = np.linalg.lstsq(D.double().numpy(), x.double().numpy().T, rcond=None)[0].T  # [n, C+1]
    for i, word in enumerate(words):
        base, sign = GENDER_CONCEPTS[word]
        assert gender[i].item() == sign
        assert codes[i, -1] == pytest.approx(1.5 * sign, abs=1e-5)
        for c, name in enumerate(concepts[:-1]):
            if name in base:
                assert 0.8 - 1e-5 <= codes[i, c] <= 1.2 + 1e-5
            else:
                assert abs(codes[i, c]) < 1e-5
    assert set(words) == set(GENDER_CONCEPTS)  # every word drawn


@pytest.mark.parametrize("pair", [("man", "woman"), ("king", "queen"), ("boy", "girl"), ("father", "mother")])
def test_gender_data_male_minus_female_is_the_gender_axis(pair):
    x, words, _, D, concepts = gender_data(4000, d=32, seed=0)
    w = np.array(words)
    mean = lambda word: x[torch.from_numpy(w == word)].mean(0)
    diff = mean(pair[0]) - mean(pair[1])
    g = D[:, -1]
    assert torch.nn.functional.cosine_similarity(diff, g, dim=0).item() > 0.999  # measured 0.9999
    assert diff.norm().item() == pytest.approx(2.0, abs=0.05)  # 2·gender_strength
    # king − man is royalty, not gender (atoms are not orthogonal, so compare directions)
    royal = mean("king") - mean("man")
    assert torch.nn.functional.cosine_similarity(royal, D[:, concepts.index("royalty")], dim=0).item() > 0.99


# --------------------------------------------------------------------------- headline, end to end
@pytest.fixture(scope="module")
def headline_runs():
    """AbsTopK and TopK with d_sae = P = 8 on signed axes (d = 16, 2 active), 3 seeds.

    400 steps of 128 rows, default lr; about 0.3 s per run on one core.
    """
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = []
    for seed in (0, 1, 2):
        x, _, D = bidirectional_data(4000, d=16, P=8, n_active=2, seed=seed)
        row = {}
        for act in ("abstopk", "topk"):
            cfg = SAEConfig(d_in=16, d_sae=8, activation=act, k=2, device="cpu", seed=seed)
            sae, _ = train_sae(cfg, x, n_tokens=400 * 128, batch_size=128, progress=False, seed=seed)
            D_learned = sae.W_dec.detach().T
            cos = metrics.match_atoms(D, D_learned)[2].abs()
            with torch.no_grad():
                fvu = metrics.fvu(x, sae(x))
            row[act] = dict(
                mcc=cos.mean().item(),
                n_axes=int((cos >= 0.98).sum()),
                signed=metrics.signed_axis_recovery(D, D_learned, cfg.signed),
                fvu=fvu,
            )
        out.append(row)
    torch.set_num_threads(n_threads)
    return out


def test_abstopk_covers_both_signs_of_each_axis_with_one_latent(headline_runs):
    """AbsTopK with one latent per axis reaches the ±directions that TopK cannot.

    Measured over 12 seeds (seeds 0-11, this recipe): AbsTopK signed recovery 0.86-1.00, FVU
    0.000-0.077, 5-8 of 8 axes at |cos| >= 0.98; TopK signed recovery 0.42-0.46 (<= 0.5 by
    construction: 8 atoms for 16 directions), FVU 0.22-0.29, at most 1 axis at 0.98.
    AbsTopK reaches mcc >= 0.95 in only 3 of those 12 seeds (seeds 2, 6, 11): in the others one
    latent sits between two coherent axes and another is nearly dead — see the test below.
    """
    for row in headline_runs:
        a, t = row["abstopk"], row["topk"]
        assert a["signed"] >= 0.85
        assert t["signed"] <= 0.5
        assert a["signed"] - t["signed"] >= 0.35
        assert a["n_axes"] >= 5 and t["n_axes"] <= 2
        assert a["fvu"] < 0.1 < 0.2 < t["fvu"]


def test_abstopk_recovers_the_axes_whenever_it_reconstructs_the_data(headline_runs):
    """Identifiability: every AbsTopK run that reaches FVU < 0.01 has found the true axes (mcc >= 0.95).

    This is NOT the "every seed recovers" claim (3 of 12 seeds measured, see above); of the three
    seeds here, seed 2 converges (measured FVU 0.000, mcc 1.000), seeds 0 and 1 stall.
    """
    converged = [row["abstopk"] for row in headline_runs if row["abstopk"]["fvu"] < 0.01]
    assert len(converged) >= 1, [row["abstopk"] for row in headline_runs]
    for a in converged:
        assert a["mcc"] >= 0.95 and a["n_axes"] == 8, a
