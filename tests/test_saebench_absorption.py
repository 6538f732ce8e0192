"""Feature absorption (abstopk_mini.saebench.first_letter / absorption) against SAEBench's implementation.

The reference is ``sae_bench.evals.absorption`` (sae-bench 0.6.0, installed with ``--no-deps`` by the
README's command). Its calculator runs a TransformerLens model on prompts; here a stand-in model
returns residuals we chose at the word's position, so both implementations score the same tensors.
Without sae-bench these tests skip (CI installs it).
"""

from __future__ import annotations

import random

import pytest
import torch

from abstopk_mini.saebench import absorption as A
from abstopk_mini.saebench import first_letter as FL


def _reference(module: str):
    pytest.importorskip("sklearn")
    return pytest.importorskip(module)


# ----------------------------------------------------------------------------- words and prompts
def test_alpha_tokens_are_saebench_words(tiny_gpt2):
    vocab = _reference("sae_bench.evals.absorption.vocab")
    tok = tiny_gpt2.tokenizer
    ours = FL.alpha_tokens(tok)
    assert sorted(ours) == sorted(vocab.get_alpha_tokens(tok))  # SAEBench's order is the dict's, ours token ids'
    assert ours == FL.alpha_tokens(tok)
    assert ours and all(w.strip().isalpha() and w.strip().isascii() for w in ours)


def test_prompt_is_saebench_prompt():
    prompting = _reference("sae_bench.evals.absorption.prompting")
    words = [" cat", "Dog", " apple", " zebra", "Moon", " river", " stone", "Tree", " ink", " jam", " kite", " lamp"]
    for seed in range(5):
        random.seed(seed)
        ref = prompting.create_icl_prompt(" cat", words, base_template=FL.TEMPLATE, max_icl_examples=10,
                                          prepend_separator_to_first_example=True)
        assert FL.icl_prompt(" cat", words, random.Random(seed)) == ref.base
        assert FL.first_letter(" cat") == ref.answer == " C"
    assert FL.letter_index("Zebra") == 25


# ----------------------------------------------------------------------------- the absorption scores
class _Stub:
    """What SAEBench's calculator asks of a model and an SAE, over residuals we chose: a prompt's
    word (its last line, less the template) picks its row of ``x``."""

    def __init__(self, words, x, W_dec):
        self.row = {w: i for i, w in enumerate(words)}
        self.x, self.W_dec, self.device = x, W_dec, "cpu"
        self.dtype = torch.float32

    def to_tokens(self, text):  # every prompt "tokenises" to the same length
        return torch.zeros(1, 12, dtype=torch.long)

    def run_with_cache(self, prompts, names_filter):
        acts = torch.zeros(len(prompts), 12, self.x.shape[1])
        for i, p in enumerate(prompts):
            word = p.split("\n")[-1].removesuffix(" has the first letter:")
            acts[i, FL.WORD_POSITION] = self.x[self.row[word]]
        return None, {names_filter[0]: acts}

    def encode(self, x):
        return torch.relu(x @ self.W_dec.T)  # a tied, non-negative code


def _case(seed: int, n: int = 40, d: int = 16, F: int = 24):
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.nn.functional.normalize(torch.randn(F, d, generator=g), dim=1)
    probe = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g) + 1.5 * probe / probe.norm()  # most words project positively on the probe
    return W_dec, probe, x


@pytest.mark.parametrize("seed", range(4))
def test_absorption_scores_equal_saebench_calculator(seed):
    calc_mod = _reference("sae_bench.evals.absorption.feature_absorption_calculator")
    W_dec, probe, x = _case(seed)
    words = [f"w{i}" for i in range(len(x))]
    stub = _Stub(words, x, W_dec)
    main = [int((torch.relu(x @ W_dec.T) * (W_dec @ probe)).sum(0).argmax())]  # a latent aligned with the probe
    calc = calc_mod.FeatureAbsorptionCalculator(model=stub, icl_word_list=words, max_icl_examples=3,
                                                base_template=FL.TEMPLATE, word_token_pos=FL.WORD_POSITION,
                                                batch_size=7)
    random.seed(seed)
    ref = calc.calculate_absorption(stub, words, probe, main, layer=0, show_progress=False).word_results
    fraction, full = A.absorption_scores(x, stub.encode(x), W_dec, probe, main)
    torch.testing.assert_close(fraction, torch.tensor([r.absorption_fraction for r in ref], dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)  # fp32 projections of 16 terms, divided
    assert full.tolist() == [r.is_full_absorption for r in ref]
    assert 0 < fraction.gt(0).sum() < len(x)  # the case has both absorbed and unabsorbed words


def test_absorption_is_zero_when_main_latent_explains_the_projection():
    """Hand case: one main latent along the probe carries all of P -> fraction 0; when it is
    silent and another aligned latent carries it -> fraction 1 and full absorption."""
    W_dec = torch.eye(3)
    probe = torch.tensor([1.0, 0.0, 0.0])
    x = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    codes_main = torch.tensor([[2.0, 0.0, 0.0]])
    W2 = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.436, 0.0], [0.0, 0.0, 1.0]])
    codes_absorbed = torch.tensor([[0.0, 2.0, 0.0]])
    f, full = A.absorption_scores(x[:1], codes_main, W_dec, probe, [0])
    assert f.tolist() == [0.0] and full.tolist() == [False]
    f, full = A.absorption_scores(x[:1], codes_absorbed, W2, probe, [0])
    assert f.tolist() == [1.0] and full.tolist() == [True]


def test_split_view_keeps_reconstruction_and_sign():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 6, generator=g)
    W = torch.randn(6, 4, generator=g)
    z2, W2 = A.split_view(z, W)
    assert z2.shape == (5, 12) and (z2 >= 0).all()
    torch.testing.assert_close(z2 @ W2, z @ W, rtol=1e-6, atol=1e-6)  # 12 fp32 products summed
    assert torch.equal(z2[:, 6:] > 0, z < 0)  # latent j's negative side is latent 6 + j


# ----------------------------------------------------------------------------- splits, probe, aggregate
def test_feature_splits_equal_saebench():
    ksp = _reference("sae_bench.evals.absorption.k_sparse_probing")
    import numpy as np
    import pandas as pd

    g = torch.Generator().manual_seed(1)
    rows, sweep = [], {k: [] for k in range(1, 11)}
    for i, letter in enumerate(FL.LETTERS):
        f1 = torch.rand(10, generator=g).mul(0.1).cumsum(0).clamp(max=1).tolist()  # rising F1 with random jumps
        row = {"letter": letter}
        for k in range(1, 11):
            feats = list(range(100 * i, 100 * i + k))
            row[f"f1_sparse_sae_{k}"], row[f"sparse_sae_k_{k}_feats"] = f1[k - 1], np.array(feats)
            sweep[k].append((feats, f1[k - 1]))
        rows.append(row)
    df = pd.DataFrame(rows)
    ksp.add_feature_splits_to_metrics_df(df, 10, 0.03)
    ours = FL.main_latents(sweep)
    assert [m["main"] for m in ours] == df["split_feats"].tolist()
    assert len({m["k"] for m in ours}) > 1  # the case splits letters into different numbers of latents


def test_letter_probe_learns_what_saebench_probe_learns():
    probing = _reference("sae_bench.evals.absorption.probing")
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(26, 64, generator=g) * 3
    y = torch.arange(26).repeat(20)
    x = centers[y] + torch.randn(len(y), 64, generator=g)
    W, b = FL.train_probe(x, y, epochs=10, seed=0)
    torch.manual_seed(0)
    ref = probing.train_multi_probe(x, torch.nn.functional.one_hot(y, 26), num_epochs=10, batch_size=64, lr=1e-2,
                                    weight_decay=1e-4, show_progress=False, device=torch.device("cpu"))
    with torch.no_grad():
        ours_pred, ref_pred = (x @ W.T + b).argmax(1), ref(x).argmax(1)
    assert (ours_pred == y).float().mean() > 0.95 and (ref_pred == y).float().mean() > 0.95
    assert (ours_pred == ref_pred).float().mean() > 0.95  # the same classifier, up to the random start and order


def test_aggregate_means_over_qualifying_letters_only():
    rows = [{"letter": FL.LETTERS[i], "probe_f1": 0.9 if i < 21 else 0.5, "fractions": [0.0, 1.0] if i % 2 else [0.5],
             "full": [False, True] if i % 2 else [False], "n_split": 1 + i % 3} for i in range(26)]
    out = A.aggregate(rows)
    kept = rows[:21]
    assert out["n_letters"] == 21
    assert out["mean_absorption_fraction"] == pytest.approx(0.5)
    assert out["mean_full_absorption"] == pytest.approx(sum(0.5 if i % 2 else 0.0 for i in range(21)) / 21)
    assert out["mean_num_split_features"] == pytest.approx(sum(r["n_split"] for r in kept) / 21)
    few = A.aggregate([r | {"probe_f1": 0.5} if i >= 19 else r for i, r in enumerate(rows)])
    assert few["n_letters"] == 19 and few["mean_absorption_fraction"] is None  # SAEBench reports nothing below 20 letters


# ----------------------------------------------------------------------------- codes in the residual stream's units
@pytest.mark.parametrize("kw", [dict(input_scale=0.2), dict(input_scale=0.5, input_unit_norm=True), dict()])
def test_raw_codes_times_cosines_give_the_decoded_projection(kw):
    """SAEBench's s_j = a_j cos(p̂, W_dec[j]) must add up to the reconstruction's own projection on p̂
    (decode(z) − decode(0))·p̂, whatever the SAE's input scale, standardisation or row norms."""
    from abstopk_mini.sae import SAE, SAEConfig
    from abstopk_mini.saebench.evaluate import raw_codes

    g = torch.Generator().manual_seed(7)
    sae = SAE(SAEConfig(d_in=16, d_sae=40, activation="abstopk", k=5, seed=1, **kw))
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(40, 1, generator=g) * 3 + 0.2)  # rows of unequal norms, as a folded SAELens file has
        sae.b_dec.copy_(torch.randn(16, generator=g))
    x = 4 * torch.randn(9, 16, generator=g) + 2
    p = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    a = raw_codes(sae, x)
    cos = torch.nn.functional.cosine_similarity(p[None], sae.W_dec.detach(), dim=-1)
    with torch.no_grad():
        z = sae.encode(x)
        stats = sae.input_stats(x)
        decoded = (sae.decode(z, stats) - sae.decode(torch.zeros_like(z), stats)) @ p
    torch.testing.assert_close((a * cos).sum(1), decoded, rtol=1e-4, atol=1e-4)  # fp32 sums over 40 latents
    assert torch.equal(a != 0, z != 0) and torch.equal(a > 0, z > 0)  # a rescales each code, sign and support kept


def test_split_view_of_a_non_negative_code_trains_the_same_sparse_probe():
    """The L1 probe starts from zeros, so the silent negative sides of a TopK code keep weight 0 and the
    letters' main latents are the same in both views."""
    g = torch.Generator().manual_seed(3)
    y = torch.arange(26).repeat(12)
    z = torch.relu(torch.randn(len(y), 40, generator=g))
    z[torch.arange(len(y)), y] += 2.0  # latent ℓ fires on letter ℓ
    W_dec = torch.randn(40, 8, generator=g)
    w1 = FL.sparse_probe_weights(z, y)
    w2 = FL.sparse_probe_weights(A.split_view(z, W_dec)[0], y)
    assert torch.equal(w2[:, 40:], torch.zeros(26, 40))
    torch.testing.assert_close(w2[:, :40], w1, rtol=1e-4, atol=1e-5)  # the same steps; fp32 sums over more zeros
    assert torch.equal(w1.argmax(1), torch.arange(26))  # each letter's own latent, found
