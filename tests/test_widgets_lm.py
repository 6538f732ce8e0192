"""Widgets of chapter 7 (abstopk_mini.chapters.widgets_lm): they build, react to their controls, and draw
the same data as the plain functions of abstopk_mini.chapters.plots_concepts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402

import abstopk_mini as am  # noqa: E402
from abstopk_mini.chapters import plots_concepts as pc  # noqa: E402
from abstopk_mini.chapters import widgets_lm as wl  # noqa: E402
from test_plots_concepts import NEUTRAL, PAIRS, _sae, _word_acts  # noqa: E402

pytest.importorskip("ipywidgets")


def test_latent_candidates_name_each_latent_once():
    report = {"best_latent": 7, "sign_latent": {"latent": 7}, "best_pair": (3, 7)}
    assert wl.latent_candidates(report, extra=[3, 11]) == [
        ("7 (best by threshold, best by sign, pair rule, side b)", 7), ("3 (pair rule, side a)", 3), ("11", 11)]


def test_latent_widget_redraws_for_the_picked_latent():
    wa, sae = _word_acts(), _sae()
    box = wl.latent_widget(sae, wa, PAIRS, 5, candidates=[("5 (best)", 5), ("9", 9)], neutral_words=NEUTRAL)
    controls, status, out, text_box, highlight = box.children
    pick, index = controls.children
    assert box.state["codes"]["latent"] == 5 and status.value.startswith("latent 5:")
    assert highlight.value == "" and text_box.layout.display == "none"  # no model: no sentence

    pick.value = 9  # the dropdown moves the index box too, and redraws once
    assert index.value == 9 and box.state["codes"]["latent"] == 9
    expected = pc.pair_codes(sae, wa, PAIRS, 9, NEUTRAL)
    torch.testing.assert_close(box.state["codes"]["z_b"], expected["z_b"])
    za = expected["z_a"]
    assert f"{100 * float((za != 0).double().mean()):.0f}% of male" in status.value

    index.value = 17  # any latent: added to the dropdown
    assert pick.value == 17 and ("17", 17) in list(pick.options) and box.state["codes"]["latent"] == 17
    with pytest.raises(ValueError, match="latent must be an int"):
        wl.latent_widget(sae, wa, PAIRS, 99)


def test_latent_widget_highlights_an_editable_sentence(tiny_gpt2):
    loaded = tiny_gpt2
    words = ["king", "queen", "man", "woman"]
    wa = am.concepts.words.word_activations(loaded, words, 1, ["I saw the {} today."])
    sae = am.SAE(am.SAEConfig(d_in=loaded.info.d_model, d_sae=40, activation="abstopk", k=5, device="cpu", hook_layer=1))
    box = wl.latent_widget(sae, wa, [("king", "queen"), ("man", "woman")], 3, model=loaded, text="The king walked.",
                           orientation=-1)
    _, _, _, text_box, highlight = box.children
    tv = pc.token_values(sae, pc.text_tokens(loaded, "The king walked.", 1), 3)
    title = "latent 3 on each token (indigo: male side, pink: female side)"
    assert highlight.value == pc.highlight_html(tv["tokens"], -tv["z"], title=title)
    text_box.value = "A man and a woman."
    assert box.state["tokens"]["text"] == "A man and a woman." and "woman" in highlight.value


def test_pair_widget_shows_the_latents_that_separate_the_pair():
    wa = _word_acts()
    saes = {"AbsTopK": _sae(), "TopK": _sae("topk", seed=1)}
    box = wl.pair_widget(saes, wa, PAIRS, ("king", "queen"), top=5)
    pick, status, out = box.children
    assert box.state["results"]["TopK"]["pair"] == ("king", "queen")
    pick.value = ("boy", "girl")
    for name, sae in saes.items():
        expected = pc.pair_differences(sae, wa, ("boy", "girl"), 5)
        assert box.state["results"][name]["latents"] == expected["latents"]
        assert f"{name}: latent {expected['latents'][0]} separates most" in status.value
    with pytest.raises(ValueError, match="is not one of the pairs"):
        wl.pair_widget(saes, wa, PAIRS, ("prince", "princess"))
    with pytest.raises(ValueError, match="saes is empty"):
        wl.pair_widget({}, wa, PAIRS)
