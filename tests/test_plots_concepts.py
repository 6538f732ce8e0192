"""Data functions and figures of abstopk_mini.chapters.plots_concepts, against per-sample brute force and
the package's own axis metrics (evaluate_axis)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import abstopk_mini as am  # noqa: E402
from abstopk_mini.chapters import plots_concepts as pc  # noqa: E402
from abstopk_mini.chapters import style  # noqa: E402
from abstopk_mini.concepts.words import WordActivations, evaluate_axis  # noqa: E402

PAIRS = [("king", "queen"), ("man", "woman"), ("boy", "girl"), ("uncle", "aunt"), ("son", "daughter")]
NEUTRAL = ["person", "child"]
D, T = 12, 4


def _word_acts(seed: int = 0) -> WordActivations:
    """Planted axis g: side a = +g, side b = −g, plus a per-word offset and per-template noise."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(D, generator=gen)
    words = [w for p in PAIRS for w in p] + NEUTRAL
    sign = {w: (1.0 if i % 2 == 0 else -1.0) for i, w in enumerate(words[:2 * len(PAIRS)])}
    acts = torch.stack([torch.randn(D, generator=gen) * 0.5 + sign.get(w, 0.0) * g + 0.3 * torch.randn(T, D, generator=gen)
                        for w in words])
    return WordActivations(acts.float(), words, tuple(f"t{i} {{}}" for i in range(T)), torch.ones(len(words), T),
                           [], layer=0)


def _sae(activation: str = "abstopk", d_sae: int = 24, k: int = 4, seed: int = 0):
    sae = am.SAE(am.SAEConfig(d_in=D, d_sae=d_sae, activation=activation, k=k, device="cpu", seed=seed, hook_layer=0))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + 1))
    return sae.eval()


def _check_labelled(fig):
    for ax in fig.axes:
        assert ax.get_xlabel(), f"panel {ax.get_title()!r} has no x label"
    assert any(ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)


# --------------------------------------------------------------------------- one latent, all pairs
def test_pair_codes_match_each_sample_encoded_alone():
    wa, sae = _word_acts(), _sae()
    latent = 5
    out = pc.pair_codes(sae, wa, PAIRS, latent, NEUTRAL + ["not-a-word"])
    assert out["neutral_words"] == NEUTRAL and out["z_a"].shape == (len(PAIRS), T) and out["z_n"].shape == (2, T)
    for i, (a, b) in enumerate(PAIRS):
        for t in range(T):
            for word, key in ((a, "a"), (b, "b")):
                x = wa.acts[wa.words.index(word), t][None]
                with torch.no_grad():
                    assert out[f"z_{key}"][i, t] == pytest.approx(float(sae.encode(x)[0, latent]), abs=1e-6)
                    assert out[f"u_{key}"][i, t] == pytest.approx(float(sae.pre_acts(x)[0, latent]), abs=1e-5)
    with pytest.raises(ValueError, match="latent must be an int"):
        pc.pair_codes(sae, wa, PAIRS, 24)
    with pytest.raises(ValueError, match=r"\['prince'\]"):
        pc.pair_codes(sae, wa, PAIRS + [("prince", "queen")], 0)
    _check_labelled(pc.latent_pair_figure(out, test_pairs=PAIRS[:2]))
    _check_labelled(pc.latent_pair_figure(pc.pair_codes(sae, wa, PAIRS, latent), preact=False))


def test_pair_differences_rank_latents_by_the_mean_code_gap():
    wa, sae = _word_acts(), _sae()
    out = pc.pair_differences(sae, wa, ("man", "woman"), top=6)
    with torch.no_grad():
        za = torch.stack([sae.encode(wa.acts[wa.words.index("man"), t]) for t in range(T)]).mean(0)
        zb = torch.stack([sae.encode(wa.acts[wa.words.index("woman"), t]) for t in range(T)]).mean(0)
    gap = (za - zb).double()
    expected = sorted(range(sae.cfg.d_sae), key=lambda j: -abs(float(gap[j])))[:6]
    assert out["latents"] == expected
    torch.testing.assert_close(out["diff"].double(), gap[expected], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["z_a"], za[expected], atol=1e-5, rtol=1e-5)
    assert out["pair"] == ("man", "woman")
    with pytest.raises(ValueError, match="top must be a positive int"):
        pc.pair_differences(sae, wa, ("man", "woman"), top=0)
    _check_labelled(pc.pair_difference_figure({"AbsTopK": out, "TopK": pc.pair_differences(_sae("topk"), wa, ("man", "woman"))}))


# --------------------------------------------------------------------------- per word vs per pair
def test_dim_positions_agree_with_evaluate_axis():
    wa, sae = _word_acts(), _sae()
    train, test = PAIRS[:3], PAIRS[3:]
    side = lambda ps, k: wa.acts[wa.index([p[k] for p in ps])]  # noqa: E731
    axis = evaluate_axis(sae, side(train, 0), side(train, 1), side(test, 0), side(test, 1),
                         neutral_acts=wa.acts[wa.index(NEUTRAL)])
    pos = pc.dim_positions(wa, train, PAIRS, NEUTRAL)
    n = len(train)
    # closed form: train side a averages +1 and side b −1 on the normalised axis
    assert float(pos["pos_a"][:n].mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(pos["pos_b"][:n].mean()) == pytest.approx(-1.0, abs=1e-5)
    assert float(pos["pos_a"][n:].mean()) == pytest.approx(axis.test_position_a, abs=1e-5)
    assert float(pos["pos_b"][n:].mean()) == pytest.approx(axis.test_position_b, abs=1e-5)
    assert pos["pos_n"].mean(1).tolist() == pytest.approx(axis.neutral_positions, abs=1e-5)
    accuracy = ((pos["pos_a"][n:] > 0).double().mean() + (pos["pos_b"][n:] < 0).double().mean()) / 2
    assert float(accuracy) == pytest.approx(axis.dim_test_accuracy)
    assert float((pos["pos_a"][n:] > pos["pos_b"][n:]).double().mean()) == pytest.approx(axis.dim_relative_accuracy)
    assert float(pos["direction"].norm()) == pytest.approx(1.0, abs=1e-6)

    # the threshold rule of the best latent, read off latent_positions, gives evaluate_axis' accuracy
    codes = pc.pair_codes(sae, wa, PAIRS, axis.best_latent, NEUTRAL)
    lp = pc.latent_positions(codes, axis.orientation, axis.threshold)
    acc = ((lp["pos_a"][n:] > 0).double().mean() + (lp["pos_b"][n:] < 0).double().mean()) / 2
    assert float(acc) == pytest.approx(axis.threshold_accuracy)
    _check_labelled(pc.dumbbell_figure({"DiM": pos, "latent": lp}, test_pairs=test))


# --------------------------------------------------------------------------- all latents
def test_decoder_cosines_and_sign_counts():
    sae = _sae()
    direction = torch.randn(D, generator=torch.Generator().manual_seed(3))
    cos = pc.decoder_cosines(sae, direction)
    ref = torch.nn.functional.cosine_similarity(sae.W_dec.detach(), direction[None], dim=1)
    torch.testing.assert_close(cos, ref, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="13 entries"):
        pc.decoder_cosines(sae, torch.ones(13))
    _check_labelled(pc.cosine_histogram({"AbsTopK": cos}, {"AbsTopK": [(2, "latent 2")]}))

    x = torch.randn(300, D, generator=torch.Generator().manual_seed(4)) * 2
    n_pos, n_neg = pc.sign_counts(sae, x, batch_size=64)  # five batches, the last one short
    with torch.no_grad():
        stats = am.metrics.sign_stats(sae.encode(x))
    assert torch.equal(n_pos, stats["n_pos"]) and torch.equal(n_neg, stats["n_neg"])
    assert int(n_neg.sum()) > 0
    topk_counts = pc.sign_counts(_sae("topk"), x)
    assert int(topk_counts[1].sum()) == 0  # a nonnegative code is never negative
    _check_labelled(pc.negative_share_figure({"AbsTopK": (n_pos, n_neg), "TopK": topk_counts}))


# --------------------------------------------------------------------------- tokens
def test_highlight_html_colours_by_sign_and_escapes_text():
    out = pc.highlight_html(["<b>", " he", " she", " &"], torch.tensor([0.0, 2.0, -1.0, 0.5]), title="latent <7>")
    assert "&lt;b&gt;" in out and "<b>" not in out and "latent &lt;7&gt;" in out and "&amp;" in out
    spans = out.split("<span")[1:]
    assert "background" not in spans[0]  # zero: no colour
    a, b = (style.rgb(c) for c in style.SIDE_LIGHT)  # side a (indigo), side b (pink)
    assert f"rgba({a},0.850)" in spans[1]  # the largest |v| is fully coloured, side a's colour for v > 0
    assert f"rgba({b},0.425)" in spans[2]  # half of vmax, side b's colour for v < 0
    assert 'title="+2"' in spans[1] and 'title="-1"' in spans[2]
    assert "&nbsp;he" in spans[1]  # leading spaces survive
    with pytest.raises(ValueError, match="same length"):
        pc.highlight_html(["a"], [1.0, 2.0])


def test_token_values_are_the_sae_on_the_residual_stream(tiny_gpt2):
    loaded = tiny_gpt2
    sae = am.SAE(am.SAEConfig(d_in=loaded.info.d_model, d_sae=40, activation="abstopk", k=5, device="cpu", hook_layer=1))
    text = "The king and the queen walked."
    tokens = pc.text_tokens(loaded, text, 1)
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    x = am.lm.hooks.residual_stream(loaded, torch.tensor([[loaded.tokenizer.bos_token_id] + ids]), 1)[0, 1:]
    tv = pc.token_values(sae, tokens, 7)
    with torch.no_grad():
        torch.testing.assert_close(tv["z"], sae.encode(x)[:, 7], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tv["u"], sae.pre_acts(x)[:, 7], atol=1e-5, rtol=1e-5)
    assert "".join(tv["tokens"]) == text and len(tv["tokens"]) == len(ids)
    with pytest.raises(ValueError, match="non-empty str"):
        pc.text_tokens(loaded, "  ", 1)


# --------------------------------------------------------------------------- probing, steering, tables
def _report(best, pair, thr, rel, sign, dim, dim_rel, pair_acc):
    return {"best_latent": best, "threshold_accuracy": thr, "relative_accuracy": rel, "sign_accuracy": sign,
            "coverage_a": 0.5, "coverage_b": 0.25, "best_pair": pair, "best_pair_accuracy": pair_acc,
            "dim_test_accuracy": dim, "dim_relative_accuracy": dim_rel}


def test_probe_rows_and_figure():
    reports = {"family": {"AbsTopK": _report(3, (1, 2), 0.7, 0.8, 0.6, 0.75, 1.0, 0.65),
                          "TopK": _report(4, (5, 6), 0.6, 0.7, 0.55, 0.75, 1.0, 0.62)},
               "sentiment": {"AbsTopK": _report(8, (8, 9), 0.55, 0.6, 0.5, 0.61, 0.65, 0.58),
                             "TopK": _report(7, (1, 0), 0.52, 0.58, 0.5, 0.61, 0.65, 0.57)}}
    rows = pc.probe_rows(reports)
    assert [r["probe"] for r in rows[:5]] == ["AbsTopK latent 3", "AbsTopK pair 1 > 2", "TopK latent 4", "TopK pair 5 > 6", "DiM"]
    assert rows[4] == {"concept": "family", "probe": "DiM", "per_word": 0.75, "per_pair": 1.0, "sign": None, "coverage": None}
    assert rows[0]["coverage"] == "0.50 / 0.25" and rows[6]["per_word"] == 0.58 and len(rows) == 10
    fig = pc.probe_figure(reports)
    heights = sorted(round(p.get_height(), 3) for p in fig.axes[1].patches)
    assert heights == sorted([0.8, 0.7, 1.0, 0.6, 0.58, 0.65])  # per pair: two latents and DiM per concept
    _check_labelled(fig)
    curves = {"latent": {"multiples": [-1, 0, 1], "log_odds": [1.0, 0.0, -1.0], "baseline": 0.1},
              "DiM": {"multiples": [-1, 0, 1], "log_odds": [0.5, 0.0, -0.5]}}
    _check_labelled(pc.steering_figure(curves))


def _gender_report(best, sign_latent, shift):
    r = {"best_latent": best, "threshold_accuracy": 0.9 - shift, "sign_accuracy": 0.7 - shift,
         "sign_accuracy_strict": 0.6 - shift, "relative_accuracy": 0.8 - shift, "coverage_a": 0.5, "coverage_b": 0.25,
         "preact_sign_accuracy": 0.65, "bidirectional_share": 0.1, "cos_to_dim": 0.3, "best_pair": (1, 2),
         "best_pair_accuracy": 0.75, "best_pair_accuracy_strict": 0.7, "dim_test_accuracy": 0.95 - shift,
         "dim_relative_accuracy": 1.0}
    r["sign_latent"] = {"latent": sign_latent, "sign_accuracy": 0.55, "sign_accuracy_strict": 0.5,
                        "relative_accuracy": 0.6, "coverage_a": 0.2, "coverage_b": 0.4, "preact_sign_accuracy": 0.52,
                        "bidirectional_share": 0.3, "cos_to_dim": -0.2}
    return r


def test_gender_rows_by_hand():
    rows = pc.gender_rows({"AbsTopK": _gender_report(3, 9, 0.0), "TopK": _gender_report(4, 8, 0.1)})
    assert [(r["SAE"], r["latent"], r["chosen by"]) for r in rows] == [
        ("AbsTopK", 3, "threshold"), ("AbsTopK", 9, "sign"), ("TopK", 4, "threshold"), ("TopK", 8, "sign"),
        ("AbsTopK", "1 > 2", "pair rule"), ("TopK", "1 > 2", "pair rule"), ("-", "DiM", "mean difference")]
    assert all(tuple(r) == pc.GENDER_COLUMNS for r in rows) and set(pc.GENDER_KEY) <= set(pc.GENDER_COLUMNS)
    # the threshold row reads the report's top level, the sign row its sign_latent, per word only on the former
    assert rows[2]["per word"] == pytest.approx(0.8) and rows[2]["sign acc."] == pytest.approx(0.6)
    assert rows[1] == {"SAE": "AbsTopK", "latent": 9, "chosen by": "sign", "sign acc.": 0.55, "sign strict": 0.5,
                       "per word": None, "per pair": 0.6, "cover male": 0.2, "cover female": 0.4,
                       "pre-act sign": 0.52, "both signs": 0.3, "cos DiM": -0.2}
    assert rows[4]["sign acc."] == 0.75 and rows[4]["per pair"] is None
    assert rows[6]["per word"] == pytest.approx(0.95) and rows[6]["per pair"] == 1.0  # DiM from the first report


def test_steering_rows_and_per_pair_changes_by_hand():
    curves = {"AbsTopK latent 7 (clamp)": {"multiples": [-1, 0, 1], "log_odds": [1.0, 0.0, -1.0],
                                           "pairs": [("she", "he"), ("queen", "king")],
                                           "per_pair": [[2.0, 0.5], [0.0, 0.0], [-3.0, -0.5]], "baseline_per_pair": [0.25, -0.5]},
              "DiM": {"multiples": [-1, 0, 1], "log_odds": [0.5, 0.0, -0.5], "pairs": [("she", "he"), ("queen", "king")],
                      "per_pair": [[1.0, 1.0], [0.0, 0.0], [-1.0, -1.5]], "baseline_per_pair": [0.25, -0.5]}}
    short = {"AbsTopK latent 7 (clamp)": "AbsTopK"}
    assert pc.steering_rows(curves, short) == [
        {"method": "AbsTopK", "label": "AbsTopK latent 7 (clamp)", "m=-1": 1.0, "m=+0": 0.0, "m=+1": -1.0},
        {"method": "DiM", "label": "DiM", "m=-1": 0.5, "m=+0": 0.0, "m=+1": -0.5}]
    rows = pc.steering_pair_rows(curves, short)
    assert rows == [{"pair": "she/he", "no intervention": 0.25, "AbsTopK -1": 1.75, "AbsTopK +1": -3.25,
                     "DiM -1": 0.75, "DiM +1": -1.25},
                    {"pair": "queen/king", "no intervention": -0.5, "AbsTopK -1": 1.0, "AbsTopK +1": 0.0,
                     "DiM -1": 1.5, "DiM +1": -1.0}]
    with pytest.raises(ValueError, match=r"multiples=\[2\]: 2 is not one of"):
        pc.steering_pair_rows(curves, short, multiples=(2,))


def test_table_text_and_html():
    table = pc.Table([{"name": "a<b", "acc": 0.12345, "n": 3, "x": None}, {"name": "c", "acc": float("nan"), "n": 4, "x": 1.5}],
                     digits=2, formats={"n": "03d"})
    text = repr(table).splitlines()
    assert text[0].split() == ["name", "acc", "n", "x"] and text[1].split() == ["a<b", "0.12", "003", "-"]
    assert text[2].split() == ["c", "-", "004", "1.50"]
    assert "<td>a&lt;b</td>" in table._repr_html_() and "<th>acc</th>" in table._repr_html_()
    with pytest.raises(ValueError, match="missing"):
        pc.Table([{"a": 1}, {"b": 2}])
    with pytest.raises(ValueError, match="rows is empty"):
        pc.Table([])


def test_table_key_columns_show_first_and_the_full_table_folds():
    rows = [{"SAE": "AbsTopK", "acc": 0.5, "cover": 0.25, "n": 3}, {"SAE": "TopK", "acc": 0.75, "cover": 1.0, "n": 4}]
    page = pc.Table(rows, digits=2, key=["SAE", "acc"])._repr_html_()
    shown, folded = page.split("<details", 1)
    assert "<th>cover</th>" not in shown and "<td>0.75</td>" in shown and "<td>0.25</td>" not in shown
    assert "all 4 columns" in folded and "<th>cover</th><th>n</th>" in folded and "<td>1.00</td><td>4</td>" in folded
    assert "cover" in repr(pc.Table(rows, key=["SAE"]))  # the text view keeps every column
    assert "<details" not in pc.Table(rows, key=["SAE", "acc", "cover", "n"])._repr_html_()
    with pytest.raises(ValueError, match="subset of the columns"):
        pc.Table(rows, key=["SAE", "missing"])


def test_pair_difference_figure_passes_the_layout_check_with_long_words():
    """Chapter 7 draws it for grandfather / grandmother: the two SAEs' panels side by side made their
    titles and x labels collide (the layout check refused the figure); stacked, they fit."""
    import io

    wa, sae = _word_acts(), _sae()
    out = pc.pair_differences(sae, wa, ("man", "woman"), top=10)
    long = {name: dict(out, pair=("grandfather", "grandmother")) for name in ("AbsTopK", "TopK")}
    pc.pair_difference_figure(long).savefig(io.BytesIO(), format="png")  # raises if any text overlaps


def test_dumbbell_and_negative_share_figures_fit_the_page_with_chapter_7s_labels():
    """On chapter 7's full run both were drawn wider than the book's 6 in (three dumbbell panels with
    long pair names and a title at the right edge; two side-by-side histograms with 4-digit counts in
    their titles), so the layout check refused them."""
    import io

    g = torch.Generator().manual_seed(0)
    pairs = [("grandfather", "grandmother"), ("stepbrother", "stepsister"), ("policeman", "policewoman")] * 7

    def panel():
        return {"pairs": pairs, "pos_a": 2 * torch.randn(len(pairs), T, generator=g),
                "pos_b": 2 * torch.randn(len(pairs), T, generator=g), "pos_n": torch.randn(3, T, generator=g),
                "neutral_words": ["person", "grandparent", "teacher"]}

    fig = pc.dumbbell_figure({"Difference in Means": panel(), "AbsTopK latent 2500": panel(), "TopK latent 3858": panel()},
                             test_pairs=pairs[-3:], xlabels={"Difference in Means": "(x·d − m) / h  (train male = +1, female = −1)"})
    fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")  # raises if wider than the page or overlapping
    counts = {"AbsTopK": (torch.randint(0, 900, (3207,), generator=g), torch.randint(0, 900, (3207,), generator=g)),
              "TopK": (torch.randint(1, 900, (4096,), generator=g), torch.zeros(4096, dtype=torch.long))}
    pc.negative_share_figure(counts).savefig(io.BytesIO(), format="png", bbox_inches="tight")
    few = {"AbsTopK": (torch.randint(0, 9, (60,), generator=g), torch.randint(0, 9, (60,), generator=g)),
           "TopK": (torch.randint(1, 9, (60,), generator=g), torch.zeros(60, dtype=torch.long))}  # quick mode: < 1 decade
    pc.negative_share_figure(few).savefig(io.BytesIO(), format="png", bbox_inches="tight")
