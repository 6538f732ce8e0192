"""Natural-text occurrences, the all-latent scan, top contexts and the CLI's natural / scan sections.

References are independent of the code under test: hand counts, the tokenizer's own
``char_to_token``, a forward pass of each chunk, ``torch.topk`` and hand-built SAEs whose answer is
known (latent 0 is +5 on male words and −5 on female ones).
"""

import json
import re

import pytest
import torch

import abstopk_mini as am
from abstopk_mini import concepts as C
from abstopk_mini.lm.activations import TokenActivations
from abstopk_mini.lm.hooks import residual_stream
from abstopk_mini.cli import main as cli_main

PAIRS = [("he", "she"), ("his", "her"), ("king", "queen")]
TEXTS = ["He said that she would come. Her king, his queen; the heat rose.",
         "Hers is not a word we read. The KING met the Queen, and he's late. Theme, shed, hISs.",
         "A boy and a girl. " * 12 + "He and she."]


# ----------------------------------------------------------------------------- words and occurrences
def test_count_words_matches_a_hand_count():
    texts = ["He said she's HER sister; hers, heat, the-he. Mr. X and mrs Y", "he he_x he2 (he)"]
    # he: "He", "the-he" (a hyphen is not a letter), "he", "(he)"; not "heat", "he_x", "he2"
    assert C.count_words(texts, ["he", "she", "her", "mr", "mrs", "sister", "Queen"]) == {
        "he": 4, "she": 1, "her": 1, "mr": 1, "mrs": 1, "sister": 1, "queen": 0}
    with pytest.raises(TypeError, match="wrap it"):
        C.count_words("he said", ["he"])


def test_gender_pairs_map_her_to_the_female_side():
    lex = C.gender_lexicon()
    assert ("his", "her") in C.GENDER_PAIRS and ("him", "her") in C.GENDER_PAIRS
    assert "her" in lex["female"] and "her" not in lex["male"] and not lex["male"] & lex["female"]
    assert len(C.GENDER_PAIRS) == 18


def _expected(tokenizer, texts, context_length):
    """(word, doc, chunk, position) of every occurrence via the tokenizer's own char_to_token."""
    body = context_length - 1
    out = []
    for d, text in enumerate(texts):
        enc = tokenizer(text, add_special_tokens=False)
        for m in re.finditer(r"(?<![A-Za-z0-9_])(he|she|his|her|king|queen)(?![A-Za-z0-9_])", text, re.I):
            last = enc.char_to_token(m.end() - 1)
            out.append((m.group(1).lower(), d, last // body, 1 + last % body))
    return out


@pytest.mark.parametrize("context_length", [128, 12])
def test_find_occurrences_positions_and_activations_are_exact(tiny_gpt2, context_length):
    tok = tiny_gpt2.tokenizer
    occ = C.find_occurrences(tiny_gpt2, TEXTS, PAIRS, layer=1, context_length=context_length)
    expected = _expected(tok, TEXTS, context_length)
    got = sorted(zip(occ.word, occ.doc.tolist(), occ.pos.tolist()))
    assert got == sorted((w, d, p) for w, d, _, p in expected)
    assert occ.counts == {"he": 3, "his": 1, "king": 2, "she": 2, "her": 1, "queen": 2}
    assert occ.side.tolist() == [1 if w in ("he", "his", "king") else -1 for w in occ.word]
    assert occ.n_docs == 3 and occ.n_tokens == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS)
    # the activation of each occurrence is the residual stream of its chunk at its position
    for i, (w, d, p) in enumerate(zip(occ.word, occ.doc.tolist(), occ.pos.tolist())):
        c = next(c for w2, d2, c, p2 in expected if (w2, d2, p2) == (w, d, p))
        ids = tok(TEXTS[d], add_special_tokens=False)["input_ids"][c * (context_length - 1):(c + 1) * (context_length - 1)]
        x = residual_stream(tiny_gpt2, torch.tensor([[tok.bos_token_id] + ids]), 1)[0, p]
        torch.testing.assert_close(occ.acts[i], x.float(), rtol=1e-5, atol=1e-5)
        chunk = [tok.bos_token_id] + ids
        assert occ.window[i, 4] == chunk[p]  # the focal token
        assert occ.window[i, 3] == (chunk[p - 1] if p >= 2 else -1)  # BOS is not a neighbour
        assert f"[[{w}]]" in occ.context[i].lower()


def test_find_occurrences_caps_per_word_but_counts_all(tiny_gpt2):
    pairs = [("boy", "girl")]
    occ = C.find_occurrences(tiny_gpt2, TEXTS, pairs, layer=0, max_per_word=5, seed=3)
    assert occ.counts == {"boy": 12, "girl": 12} and occ.word.count("boy") == 5 and occ.word.count("girl") == 5
    again = C.find_occurrences(tiny_gpt2, TEXTS, pairs, layer=0, max_per_word=5, seed=3)
    assert torch.equal(again.pos, occ.pos)  # seeded
    # the token budget stops the scan: only the first text's tokens are read
    first = len(tiny_gpt2.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"])
    short = C.find_occurrences(tiny_gpt2, TEXTS, PAIRS, layer=0, max_tokens=first)
    assert short.n_tokens == first and short.n_docs == 1 and set(short.doc.tolist()) == {0}
    # multi-token words are reported (the tiny tokenizer spells "boy" in pieces)
    assert occ.issues["boy"]["multi_token"] == 12 and occ.tokens["boy"][-1] != "Ġboy"


def test_split_occurrences_is_by_document(tiny_gpt2):
    occ = C.find_occurrences(tiny_gpt2, TEXTS, PAIRS, layer=0)
    train, test = C.split_occurrences(occ, 0.5, seed=0)
    assert len(train) + len(test) == len(occ)
    assert not set(train.doc.tolist()) & set(test.doc.tolist())
    with pytest.raises(ValueError, match="test_frac"):
        C.split_occurrences(occ, 1.0)


# ----------------------------------------------------------------------------- the scan
def _fake_occurrences(n_docs=8, per_word=3, d=8, seed=0, pairs=(("he", "she"), ("his", "her"), ("him", "her"))):
    """x = 5·side·e_0 + 3·[female]·e_1 + noise (|noise| < 0.5): latent 0 carries the sign."""
    gen = torch.Generator().manual_seed(seed)
    words = list(dict.fromkeys(w for p in pairs for w in p))
    male = {a for a, _ in pairs}
    rows = [(w, doc) for doc in range(n_docs) for w in words for _ in range(per_word)]
    side = torch.tensor([1 if w in male else -1 for w, _ in rows])
    acts = 0.1 * torch.rand(len(rows), d, generator=gen)
    acts[:, 0] += 5.0 * side
    acts[:, 1] += 3.0 * (side == -1)
    n = len(rows)
    return C.Occurrences(acts=acts, side=side, doc=torch.tensor([doc for _, doc in rows]), pos=torch.ones(n, dtype=torch.long),
                         window=torch.full((n, 9), -1), word=[w for w, _ in rows], context=[w for w, _ in rows],
                         pairs=list(pairs), layer=0)


def _identity_sae(activation, d=8, k=2):
    sae = am.SAE(am.SAEConfig(d_in=d, d_sae=d, activation=activation, k=k, device="cpu"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_scan_finds_the_signed_latent_with_share_one():
    train, test = C.split_occurrences(_fake_occurrences(), 0.5, seed=1)
    scan = C.scan_latents(_identity_sae("abstopk"), train, test)
    assert int(scan.order[0]) == 0 and int(scan.orientation[0]) == 1 and scan.signed
    for share in (scan.pair_share_train, scan.pair_share_test, scan.occurrence_share_train, scan.occurrence_share_test):
        assert float(share[0]) == 1.0
    assert scan.n_pairs_test == 3 and scan.note == ""
    summary = scan.summary(n_top=3)
    assert summary["top"][0]["latent"] == 0 and summary["top"][0]["test_pair_share"] == 1.0 and len(summary["top"]) == 3
    # reference for one other latent: latent 1 is +3 on female words only (AbsTopK keeps it, k = 2)
    assert float(scan.pair_share_test[1]) == 0.0 and int(scan.orientation[1]) == -1
    assert float(scan.occurrence_share_test[1]) == 0.5


def test_scan_of_a_topk_sae_is_zero_and_its_best_pair_is_one():
    train, test = C.split_occurrences(_fake_occurrences(), 0.5, seed=1)
    scan = C.scan_latents(_identity_sae("topk"), train, test)
    assert not scan.signed and "non-negative" in scan.note
    assert float(scan.pair_share_train.max()) == 0.0 and float(scan.pair_share_test.max()) == 0.0
    assert float(scan.occurrence_share_test.max()) <= 0.5
    assert scan.best_pair["latents"] == [0, 1]  # latent 0 fires on male words, latent 1 on female
    assert scan.best_pair["test_pair_share"] == 1.0 and scan.best_pair["test_occurrence_share"] == 1.0


def test_sign_shares_against_a_hand_count():
    occ = _fake_occurrences(n_docs=1, per_word=2, pairs=(("he", "she"), ("his", "her")))
    # columns: [male +, female −] | [all +] | [he +1 / his −1, she −1 / her +1]
    sign = {"he": [1, 1, 1], "his": [1, 1, -1], "she": [-1, 1, -1], "her": [-1, 1, 1]}
    signs = torch.tensor([sign[w] for w in occ.word], dtype=torch.float64)
    pair_share, occ_share, n_pairs = C.sign_shares(signs, occ)
    assert n_pairs == 2
    assert pair_share.tolist() == [1.0, 0.0, 0.5] and occ_share.tolist() == [1.0, 0.5, 0.5]


# ----------------------------------------------------------------------------- top contexts
class _Vocab:
    """A tokenizer stub: token i decodes to VOCAB[i]."""

    VOCAB = [" he", " she", " the", " a", " of", " his", " her", " cat", " ran", " and", " king",  # whole words
             "he", " s", "r"]  # pieces

    def decode(self, ids):
        return "".join(self.VOCAB[i] for i in ids)


def _token_data(n=3000, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 11, (n,), generator=gen)  # whole words only
    doc, pos = torch.arange(n) // 100, torch.arange(n) % 100 + 1
    return TokenActivations(torch.randn(n, d, generator=gen), ids, doc, pos, [], 0, "blocks.0.hook_resid_post")


def test_token_windows_against_a_loop():
    data = _token_data(n=250)
    perm = torch.randperm(250, generator=torch.Generator().manual_seed(1))  # any row order
    win = C.token_windows(data.token_ids[perm], data.doc[perm], data.pos[perm], 2)
    for r, i in enumerate(perm.tolist()):
        want = [int(data.token_ids[i + o]) if 0 <= i + o < 250 and data.doc[i + o] == data.doc[i] else -1
                for o in range(-2, 3)]
        assert win[r].tolist() == want


@pytest.mark.parametrize("activation", ["abstopk", "topk"])
def test_top_contexts_order_is_torch_topk(activation):
    data = _token_data()
    sae = am.SAE(am.SAEConfig(d_in=8, d_sae=16, activation=activation, k=4, device="cpu"))
    u, z = C.encode_samples(sae, data.acts)
    j = int((z != 0).sum(0).argmax())
    tc = C.top_contexts(sae, data, j, _Vocab(), n=20, n_null=5)
    assert [c["row"] for c in tc.positive] == torch.topk(z[:, j], 20).indices.tolist()
    other = z[:, j] if activation == "abstopk" else u[:, j]
    assert [c["row"] for c in tc.negative] == torch.topk(-other, 20).indices.tolist()
    assert tc.negative_source == ("z" if activation == "abstopk" else "u")
    # the shares are the flags of the listed rows; a flag is a lexicon word within ±3 tokens
    lex = C.gender_lexicon()
    for c in tc.positive:
        r = c["row"]
        near = {_Vocab.VOCAB[int(data.token_ids[q])].strip() for q in range(r - 3, r + 4)
                if 0 <= q < len(data) and data.doc[q] == data.doc[r]}
        assert c["male"] == bool(near & lex["male"]) and c["female"] == bool(near & lex["female"])
    assert tc.shares["positive"]["male"] == sum(c["male"] for c in tc.positive) / 20


def test_a_word_cut_at_the_window_edge_is_completed_not_shortened():
    from abstopk_mini.concepts.contexts import _lexicon_flags

    tok, lex = _Vocab(), C.gender_lexicon()
    S, HE, THE, PIECE_HE, R, HER = 12, 0, 2, 11, 13, 6
    window = torch.tensor([[S, PIECE_HE] + [THE] * 7,        # " s|he the ...": "she" reaches into ±3
                           [THE] * 7 + [HE, R],              # "... the he|r": "her" reaches into ±3
                           [HER] + [THE] * 8])               # "her" only in the extra token: not counted
    flags = _lexicon_flags(window, tok, lex, core=3)
    assert flags["female"].tolist() == [True, True, False] and flags["male"].tolist() == [False, False, False]
    # without the extra token on each side the cut pieces read as "he"
    flags = _lexicon_flags(window[:, 1:8], tok, lex, core=3)
    assert flags["male"].tolist() == [True, True, False]


def test_the_null_interval_holds_the_expected_share_of_a_random_latent():
    data = _token_data(n=6000, seed=2)
    sae = am.SAE(am.SAEConfig(d_in=8, d_sae=16, activation="abstopk", k=4, device="cpu"))
    z = C.encode_samples(sae, data.acts)[1]
    j = int((z != 0).sum(0).argmax())
    tc = C.top_contexts(sae, data, j, _Vocab(), n=100, n_null=200, seed=0)
    # tokens are drawn independently of the activations: a random latent's expected share is the base rate
    for side in ("positive", "negative"):
        for kind in ("male", "female", "gendered"):
            null = tc.null[side][kind]
            assert null["low"] <= tc.base_rate[kind] <= null["high"], (side, kind, null, tc.base_rate[kind])
            assert null["low"] <= null["mean"] <= null["high"]


# ----------------------------------------------------------------------------- end to end
def test_run_natural_on_the_tiny_model(tiny_gpt2):
    texts = [f"He met her and {w} said she was there." for w in ("his", "the", "a", "her")] * 2
    sae = am.SAE(am.SAEConfig(d_in=32, d_sae=48, activation="abstopk", k=4, device="cpu", hook_layer=1))
    out = C.run_natural(sae, tiny_gpt2, texts, train_texts=texts[:2], count_also=["met"], max_tokens=None, n_top=4)
    nat, scan = out["natural"], out["scan"]
    assert nat["word_counts"] == C.count_words(texts, [w for p in C.GENDER_PAIRS for w in p])
    assert nat["train_text_word_counts"]["met"] == 2 and nat["train_text_word_counts"]["he"] == 2
    assert nat["n_train"] + nat["n_test"] == nat["n_occurrences"] == len(re.findall(r"\b(he|her|his|she)\b", " ".join(texts), re.I))
    assert nat["best_latent"] == scan["top"][0]["latent"] and len(scan["top"]) == 4
    assert 0.0 <= nat["sign_accuracy"] <= 1.0 and 0.0 <= nat["dim_test_accuracy"] <= 1.0
    he = next(p for p in nat["pairs"] if p["pair"] == ["he", "she"])
    assert he["count_a"] == 8 and he["count_b"] == 8 and he["train_a"] + he["test_a"] == 8
    # chosen on other text: every held-out occurrence is tested, the train part is that text's
    other = [f"She saw him and {w} knew he was late." for w in ("his", "her", "the")]
    out = C.run_natural(sae, tiny_gpt2, texts, train_texts=other, max_tokens=None, choose_on="train_text", n_top=4)
    nat = out["natural"]
    assert nat["choose_on"] == "train_text" and nat["n_test"] == nat["n_occurrences"]
    assert nat["n_train"] == len(re.findall(r"\b(she|him|his|her|he)\b", " ".join(other), re.I))
    with pytest.raises(ValueError, match="train_texts"):
        C.run_natural(sae, tiny_gpt2, texts, choose_on="train_text")
    with pytest.raises(ValueError, match="choose_on"):
        C.run_natural(sae, tiny_gpt2, texts, choose_on="train")
    # too little text: the sections say why instead of failing
    out = C.run_natural(sae, tiny_gpt2, texts[:1], max_tokens=None)
    assert "2 are needed" in out["natural"]["skipped"] and out["scan"] == {"skipped": out["natural"]["skipped"]}


def _api_sae(path, layer=1):
    x = torch.randn(512, 32, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=32, d_sae=64, activation="abstopk", k=4, device="cpu", hook_layer=layer)
    sae, _ = am.train_sae(cfg, x, n_tokens=512, batch_size=128, progress=False)
    sae.save(path)
    return path


def test_cli_concepts_adds_natural_and_scan_sections(tiny_gpt2_dir, tmp_path, capsys):
    sae = str(_api_sae(tmp_path / "sae"))
    test_file = tmp_path / "test_pairs.txt"
    test_file.write_text("bull cow\nrooster hen\n")
    base = ["concepts", "--sae", sae, "--model", str(tiny_gpt2_dir), "--test-pairs", str(test_file), "--json"]
    assert cli_main(base + ["--natural-tokens", "0"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["natural"] is None and off["scan"] is None
    assert cli_main(base + ["--natural-sources", "lee", "--natural-tokens", "20000", "--scan-top", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(off) == set(report)  # the same keys, the old ones unchanged
    assert {"best_latent", "test_accuracy", "dim_test_accuracy", "test_pairs", "natural", "scan"} <= set(report)
    nat = report["natural"]
    assert nat["sources"] == ["lee"] and nat["n_tokens"] <= 20000 and nat["choose_on"] == "train_text"
    assert {"word_counts", "train_text_word_counts", "tokenization", "tokenization_issues"} <= set(nat)
    assert {"bull", "cow", "he", "she"} <= set(nat["train_text_word_counts"])
    assert "skipped" not in nat  # the held-out lee documents hold he / she in both parts
    assert {"best_latent", "sign_accuracy", "pair_share", "dim_test_accuracy", "pairs", "n_test"} <= set(nat)
    assert len(report["scan"]["top"]) == 3 and {"top_by_test", "best_pair", "note"} <= set(report["scan"])
    for bad, flag in ((["--natural-tokens", "-1"], "--natural-tokens"), (["--scan-top", "0"], "--scan-top"),
                      (["--natural-sources", "nowhere"], "--natural-sources")):
        assert cli_main(base + bad) == 2
        assert flag in capsys.readouterr().err
