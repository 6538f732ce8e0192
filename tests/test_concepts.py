"""Concept pairs, templates, word activations, and the axis metrics (planted axes with known answers)."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

import abstopk_mini as am
from abstopk_mini import concepts as C

# --------------------------------------------------------------------------- data


def _questions_section(header):
    """Independent reading of questions-words.txt: the set of (a, b) and (c, d) of a section."""
    lines = (am.lm.corpus.gensim_data_dir() / "questions-words.txt").read_text().splitlines()
    i = lines.index(header) + 1
    pairs = set()
    while i < len(lines) and not lines[i].startswith(":"):
        a, b, c, d = lines[i].split()
        pairs |= {(a, b), (c, d)}
        i += 1
    return pairs


def test_builtin_pair_sets_match_the_file():
    family = C.load_pairs("family")
    everything = _questions_section(": family")
    assert set(family) == everything - {("he", "she"), ("his", "her")}
    assert len(family) == len(set(family)) == 21 and family[0] == ("boy", "girl")
    assert ("king", "queen") in family and ("he", "she") not in family
    assert set(C.load_pairs("family", include_pronouns=True)) == everything
    opposite = C.load_pairs("opposite")
    assert set(opposite) == _questions_section(": gram2-opposite") and len(opposite) == 29


def test_pairs_file_reads_and_names_bad_lines(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("# my pairs\nking queen\n\n  actor   actress \nking queen\n")
    assert C.load_pairs(good) == [("king", "queen"), ("actor", "actress")]

    bad = tmp_path / "bad.txt"
    bad.write_text("king queen\n# comment\nactor actress waiter\nman woman\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3:.*'actor actress waiter'"):
        C.load_pairs(bad)
    bad.write_text("king queen\nman man\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: pair \('man', 'man'\) has the same word"):
        C.read_pairs_file(bad)
    bad.write_text("king queen\nman woman\nqueen prince\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: pair .*'queen' on side a"):
        C.read_pairs_file(bad)
    bad.write_text("king queen\n")
    with pytest.raises(ValueError, match="at least 2"):
        C.read_pairs_file(bad)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        C.load_pairs(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="pair 1"):
        C.load_pairs([("a", "b"), ("c",)])


def test_split_is_seeded_disjoint_and_complete():
    pairs = C.load_pairs("family")
    train, test = C.split_pairs(pairs, 0.5, seed=0)
    assert C.split_pairs(pairs, 0.5, seed=0) == (train, test)
    assert len(test) == round(21 * 0.5) and not set(train) & set(test) and set(train) | set(test) == set(pairs)
    assert train == [p for p in pairs if p in train]  # input order kept
    assert C.split_pairs(pairs, 0.5, seed=1) != (train, test)
    assert len(C.split_pairs(pairs[:2], 0.9)[0]) == 1  # at least one pair on each side
    with pytest.raises(ValueError, match="test_frac"):
        C.split_pairs(pairs, 1.0)


def test_templates_are_validated():
    assert C.check_templates(["a {} b"]) == ("a {} b",)
    for bad in (["ok {}", "two {} {}"], ["ok {}", "none"]):
        with pytest.raises(ValueError, match=r"templates\[1\]"):
            C.check_templates(bad)
    with pytest.raises(TypeError, match="wrap it"):
        C.check_templates("I saw the {}.")
    for t in C.NOUN_TEMPLATES + C.ADJECTIVE_TEMPLATES:
        words = set(t.lower().replace(".", "").replace(",", "").split())
        assert not words & {"he", "she", "his", "her", "him", "man", "woman"}, t  # no gendered context


def test_sentiment_sentences():
    texts, labels = C.load_sentiment()
    assert len(texts) == 200 and sum(labels) == 100
    assert not any(t.startswith("__label__") for t in texts)
    assert any("—" in t for t in texts) and any("clichés" in t for t in texts)  # cp1252 decoded


# --------------------------------------------------------------------------- metrics, by hand and brute force


def test_sign_accuracy_zero_conventions():
    v_a = torch.tensor([1.0, 0.0, -1.0, 2.0])
    v_b = torch.tensor([-1.0, 0.0, 0.0, -3.0])
    # a: right, coin, wrong, right; b: right, coin, coin, right
    assert C.sign_accuracy(v_a, v_b).item() == pytest.approx(((1 + 0.5 + 0 + 1) / 4 + (1 + 0.5 + 0.5 + 1) / 4) / 2)
    assert C.sign_accuracy(v_a, v_b, zero="wrong").item() == pytest.approx((2 / 4 + 2 / 4) / 2)
    assert C.sign_accuracy(v_a, v_b, orientation=-1).item() == pytest.approx(1 - 0.6875)


def test_best_latent_threshold_vs_sign_rule():
    z_a = torch.tensor([[1.0, 1.0], [2.0, 1.0]])   # column 0: a one-sided detector of side a
    z_b = torch.tensor([[0.0, -1.0], [0.0, -2.0]])  # column 1: bidirectional
    assert C.best_latent(z_a, z_b) == {"latent": 0, "orientation": 1, "threshold": 0.5, "train_accuracy": 1.0}
    assert C.best_latent(z_a, z_b, "sign") == {"latent": 1, "orientation": 1, "threshold": None, "train_accuracy": 1.0}
    assert C.best_latent(-z_a, -z_b, "sign")["orientation"] == -1
    with pytest.raises(ValueError, match="rule"):
        C.best_latent(z_a, z_b, "vote")


def test_threshold_scores_match_brute_force():
    g = torch.Generator().manual_seed(0)
    v_a = torch.randint(-3, 4, (7, 6), generator=g).double()  # many ties
    v_b = torch.randint(-3, 4, (9, 6), generator=g).double()
    v_a[:, 5] = 0.0  # a dead column
    v_b[:, 5] = 0.0
    acc, orient, thr = C.threshold_scores(v_a, v_b)

    def bal(col, o, t):
        return (((o * (v_a[:, col] - t)) > 0).double().mean() + ((o * (v_b[:, col] - t)) < 0).double().mean()).item() / 2

    for col in range(6):
        values = sorted(set(torch.cat([v_a[:, col], v_b[:, col]]).tolist()))
        cuts = [values[0] - 1] + [(x + y) / 2 for x, y in zip(values, values[1:])] + [values[-1] + 1]
        best = max(bal(col, o, t) for o in (1, -1) for t in cuts)
        assert acc[col].item() == pytest.approx(best)
        assert bal(col, int(orient[col]), thr[col].item()) == pytest.approx(best)  # the returned rule achieves it
    assert acc[5].item() == 0.5


def _planted(seed=0, d=16, n_train=10, n_test=8, T=3, noise=0.1):
    """Two sides at ±c·g (c in [1, 2]) plus noise; returns g and the four sample tensors."""
    g_ = torch.Generator().manual_seed(seed)
    g = torch.randn(d, generator=g_)
    g /= g.norm()

    def side(n, s):
        c = 1 + torch.rand(n, T, 1, generator=g_)
        return noise * torch.randn(n, T, d, generator=g_) + s * c * g

    return g, side(n_train, 1), side(n_train, -1), side(n_test, 1), side(n_test, -1)


def _sae_with_rows(activation, rows, d_sae=8, k=1, seed=0):
    """An SAE whose first decoder rows are ``rows``, the others random orthonormal rows orthogonal
    to them; W_enc = W_dec.T and zero biases, so u = x W_dec.T."""
    d = rows[0].shape[0]
    R = torch.stack(rows)
    Q, _ = torch.linalg.qr(R.T)  # basis of the rows' span (they may be dependent: g and -g)
    M = torch.randn(d, d_sae - len(rows), generator=torch.Generator().manual_seed(seed))
    M = torch.linalg.qr(M - Q @ (Q.T @ M))[0]
    W = torch.cat([R, M.T])
    sae = am.SAE(am.SAEConfig(d_in=d, d_sae=d_sae, activation=activation, k=k, device="cpu"))
    with torch.no_grad():
        sae.W_dec.copy_(W)
        sae.W_enc.copy_(W.T)
    return sae


def test_planted_signed_axis_abstopk_latent_separates_by_sign():
    g, a_tr, b_tr, a_te, b_te = _planted()
    sae = _sae_with_rows("abstopk", [g])
    neutral = 0.1 * torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(5))
    r = C.evaluate_axis(sae, a_tr, b_tr, a_te, b_te, neutral_acts=neutral)
    assert r.best_latent == 0 and r.orientation == 1 and r.sign_orientation == 1
    assert r.test_accuracy == r.sign_accuracy == r.sign_accuracy_strict == 1.0
    assert r.threshold_accuracy == r.preact_sign_accuracy == r.dim_test_accuracy == 1.0
    assert r.coverage_a == r.coverage_b == 1.0 and r.bidirectional_share == 1.0 and r.bidirectional
    assert r.mean_z_a > 1 and r.mean_z_b < -1
    assert r.sign_latent["latent"] == 0 and r.sign_latent["bidirectional"]
    assert r.cos_to_dim > 0.99
    assert torch.dot(C.dim_direction(a_tr, b_tr), g.double()).item() > 0.99
    # positions: train means are ±1 by construction, test means near them, neutral near 0
    assert r.test_position_a == pytest.approx(1.0, abs=0.2) and r.test_position_b == pytest.approx(-1.0, abs=0.2)
    assert all(abs(p) < 0.3 for p in r.neutral_positions) and len(r.neutral_z) == 4
    assert (r.n_train_a, r.n_test_b) == (30, 24)
    json.dumps(r.to_dict())


def test_nonnegative_pair_of_rows_needs_two_latents():
    """TopK with rows g and −g: latent 0 is a one-sided side-a detector (sign rule 0.75, strict 0.5,
    threshold 1.0, not bidirectional); the two-latent rule z_0 > z_1 gets 1.0."""
    g, a_tr, b_tr, a_te, b_te = _planted(seed=1)
    sae = _sae_with_rows("topk", [g, -g])
    r = C.evaluate_axis(sae, a_tr, b_tr, a_te, b_te)
    assert r.best_latent == 0 and r.threshold_accuracy == 1.0
    assert r.coverage_a == 1.0 and r.coverage_b == 0.0
    assert r.sign_accuracy == 0.75 and r.sign_accuracy_strict == 0.5 and r.sign_accuracy_vote == 0.75
    assert not r.bidirectional and r.bidirectional_share == 0.0
    assert r.preact_sign_accuracy == 1.0  # before the top-k, u_0 = c·(g·g) keeps the sign
    assert set(r.best_pair) == {0, 1} and r.best_pair_accuracy == r.best_pair_accuracy_strict == 1.0
    assert r.best_pair == (0, 1)  # "a iff z_0 > z_1": latent 0 is the a-detector
    assert r.cos_to_dim > 0.99 and r.dim_test_accuracy == 1.0


def test_one_sided_abstopk_detector_like_the_first_trial():
    """An AbsTopK latent that is negative on side b and zero on side a (side a is coded by another
    latent h with a larger |u|): threshold accuracy 1.0 but sign accuracy exactly 0.75."""
    g, a_tr, b_tr, a_te, b_te = _planted(seed=2, noise=0.0)
    h = torch.linalg.qr(torch.stack([g, torch.randn(16, generator=torch.Generator().manual_seed(3))], 1))[0][:, 1]
    shift = lambda x: x + 3.0 * h  # noqa: E731  side a: |u_h| = 3 > |u_g| = c <= 2, so k=1 keeps h
    sae = _sae_with_rows("abstopk", [g, h])
    r = C.evaluate_axis(sae, shift(a_tr), b_tr, shift(a_te), b_te)
    assert r.best_latent == 0 and r.threshold_accuracy == 1.0  # latent g: 0 on a, -c on b
    assert r.coverage_a == 0.0 and r.coverage_b == 1.0 and r.mean_z_b < -1
    assert r.sign_accuracy == 0.75 and r.sign_accuracy_strict == 0.5 and not r.bidirectional
    assert r.preact_sign_accuracy == 1.0 and r.mean_u_a > 1  # the encoder still sees +c on side a
    assert r.dim_test_accuracy == 1.0


def test_relative_accuracy_pairs_and_auc():
    s_a = torch.tensor([[3.0], [1.0], [2.0]])
    s_b = torch.tensor([[2.0], [0.0], [2.0]])
    assert C.relative_accuracy(s_a, s_b) == pytest.approx((1 + 1 + 0.5) / 3)  # row-aligned pairs
    # unpaired: the ROC AUC over all 9 combinations = Mann-Whitney U / (n_a n_b), ties 0.5
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(s_a.flatten().numpy(), s_b.flatten().numpy()).statistic
    assert C.relative_accuracy(s_a, s_b, paired=False) == pytest.approx(u / 9) == pytest.approx(6 / 9)


def test_words_vary_more_than_the_gap_absolute_vs_relative():
    """Each pair is (w + g, w - g) with a word offset w much larger than g: DiM orders every pair
    (relative accuracy 1) while a fixed threshold misclassifies many words (absolute < 1)."""
    gen = torch.Generator().manual_seed(7)
    g = torch.zeros(8)
    g[0] = 1.0
    def pairs(n):
        w = 5.0 * torch.randn(n, 1, 1, generator=gen) * g + 0.05 * torch.randn(n, 2, 8, generator=gen)
        return w + 0.5 * g, w - 0.5 * g
    (a_tr, b_tr), (a_te, b_te) = pairs(30), pairs(30)
    r = C.evaluate_axis(_sae_with_rows("abstopk", [g], k=1), a_tr, b_tr, a_te, b_te)
    assert r.dim_relative_accuracy == 1.0 and r.relative_accuracy == 1.0
    assert r.dim_test_accuracy < 0.8 and r.threshold_accuracy < 0.8


def test_unpaired_sides_and_shape_errors():
    g, a_tr, b_tr, a_te, b_te = _planted(seed=4)
    sae = _sae_with_rows("abstopk", [g])
    r = C.evaluate_axis(sae, a_tr[:, 0], b_tr[:7, 0], a_te[:5, 0], b_te[:, 0], paired=False)
    assert r.test_accuracy == 1.0 and r.bidirectional and (r.n_train_b, r.n_test_a) == (7, 5)
    with pytest.raises(ValueError, match="paired=False"):
        C.evaluate_axis(sae, a_tr, b_tr[:7], a_te, b_te)


def test_best_pair_brute_force():
    g = torch.Generator().manual_seed(6)
    z_a = torch.relu(torch.randn(20, 10, generator=g))
    z_b = torch.relu(torch.randn(20, 10, generator=g))
    z_a[:, 3] += 1.0
    z_b[:, 7] += 1.0
    i, j, acc = C.best_pair(z_a, z_b, n_candidates=10)  # all latents are candidates
    scores = {}
    for p, q in itertools.permutations(range(10), 2):
        scores[p, q] = C.sign_accuracy(z_a[:, p] - z_a[:, q], z_b[:, p] - z_b[:, q]).item()
    assert acc == pytest.approx(max(scores.values())) and scores[i, j] == pytest.approx(acc)


def test_sign_summary_counts_bidirectional_latents():
    sae = _sae_with_rows("abstopk", [torch.eye(4)[i] for i in range(4)], d_sae=4, k=4)
    x = torch.tensor([[1.0, 1, -1, 0], [-1, 1, -1, 0], [1, 1, -1, 0]])
    s = C.sign_summary(sae, x)  # latent 0: +,−,+ (bidirectional), 1: +, 2: −, 3: dead
    assert s["alive_fraction"] == 0.75 and s["n_bidirectional"] == 1 and s["bidirectional_fraction"] == pytest.approx(1 / 3)
    assert s["bidirectional_fraction"] == pytest.approx(am.metrics.bidirectional_fraction(sae.encode(x)))


# --------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_locate_word_reports_merges(gemma):
    tok = gemma.tokenizer
    ids, inside, issues = C.locate_word(tok, "I saw the {} at the market.", "king")
    assert tok.convert_ids_to_tokens([ids[inside[-1]]]) == ["▁king"] and issues == []
    ids, inside, issues = C.locate_word(tok, "The {} was there.", "stepdaughter")
    assert len(inside) == 2 and issues == []
    ids, inside, issues = C.locate_word(tok, "I saw {}s.", "king")  # 'kings' is one token
    assert [i.kind for i in issues] == ["merges_after"] and "' kings'" in issues[0].detail


@pytest.mark.slow
def test_word_activations_read_the_last_token(gemma):
    templates = ["I saw the {} at the market.", "The {} was there."]
    wa = C.word_activations(gemma, ["king", "stepdaughter"], 3, templates)
    assert wa.acts.shape == (2, 2, 640) and wa.n_tokens.tolist() == [[1, 1], [2, 2]] and wa.issues == []
    texts = [t.replace("{}", w) for w in wa.words for t in templates]
    ref = am.lm.activations.token_activations(gemma, texts, 3)  # independent path: every token
    for n, last in enumerate(["▁king", "▁king", "daughter", "daughter"]):
        rows = [i for i in range(len(ref)) if ref.doc[i] == n and ref.tokens[i] == last]
        assert len(rows) == 1
        torch.testing.assert_close(wa.acts.reshape(4, 640)[n], ref.acts[rows[0]], rtol=1e-4, atol=1e-4)
    sent = C.sentence_activations(gemma, texts[:2], 3, pool="last")
    torch.testing.assert_close(sent[1, 0], ref.acts[(ref.doc == 1).nonzero().max()], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_run_concepts_end_to_end(gemma, tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("king queen\nman woman\nboy girl\nfather mother\nuncle aunt\n")
    sae = am.SAE(am.SAEConfig(d_in=640, d_sae=64, activation="abstopk", k=4, hook_layer=2, device="cpu"))
    templates = ["I saw the {} at the market.", "My {}ly friend came."]  # 'manly' is one token
    kw = dict(templates=templates, neutral_words=["person"], test_frac=0.5, seed=0)
    report = C.run_concepts(sae, gemma, pairs, token_acts=torch.randn(50, 640), **kw)
    json.dumps(report)
    assert report["layer"] == 2 and (len(report["train_pairs"]), len(report["test_pairs"])) == (3, 2)
    merged = {i["word"] for i in report["tokenization_issues"] if i["kind"] == "merges_after"}
    assert merged == {"man"} and report["dropped_pairs"] == []
    for key in ("best_latent", "test_accuracy", "dim_test_accuracy", "threshold_accuracy", "coverage_a",
                "bidirectional", "cos_to_dim", "best_pair", "neutral_positions", "sign_summary"):
        assert key in report
    dropped = C.run_concepts(sae, gemma, pairs, mismatch="drop", **kw)
    assert dropped["dropped_pairs"] == [["man", "woman"]]
    assert len(dropped["train_pairs"] + dropped["test_pairs"]) == 4
    with pytest.raises(ValueError, match="'man' in 'My {}ly friend came.'"):
        C.run_concepts(sae, gemma, pairs, mismatch="raise", **kw)
    # explicit test pairs: train on all of `pairs`, test on the file; shared words are refused
    held = tmp_path / "held.txt"
    held.write_text("son daughter\nqueen king\n")  # queen is on side b in `pairs`
    with pytest.raises(ValueError, match="'queen' on side a"):
        C.run_concepts(sae, gemma, pairs, test_pairs=held, templates=templates[:1])
    held.write_text("son daughter\nking queen\n")
    with pytest.raises(ValueError, match="share words.*king"):
        C.run_concepts(sae, gemma, pairs, test_pairs=held, templates=templates[:1])
    held.write_text("son daughter\nnephew niece\n")
    r = C.run_concepts(sae, gemma, pairs, test_pairs=held, templates=templates[:1], neutral_words=[])
    assert r["test_pairs"] == [["son", "daughter"], ["nephew", "niece"]] and len(r["train_pairs"]) == 5
    assert r["n_test_a"] == 2 and r["neutral_positions"] is None
