"""Kernel-free twins of the widgets (abstopk_mini.chapters.twins): each panel holds what the live widget
draws for that option (same data, same status line), and the page switches panels with no kernel."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402

import abstopk_mini as am  # noqa: E402
from abstopk_mini.chapters import plots_concepts as pc  # noqa: E402
from abstopk_mini.chapters import twins  # noqa: E402
from test_plots_concepts import NEUTRAL, PAIRS, _sae, _word_acts  # noqa: E402


def _panels(page_html: str) -> dict:
    """{data-key: inner html} of a switcher page."""
    return dict(re.findall(r'<div class="panel" data-key="([^"]*)">(.*?)</div>(?=<div class="panel"|</div><script)',
                           page_html, flags=re.S))


def _page(out) -> str:
    return out.page.html


def test_switcher_has_one_panel_per_key_and_checks_keys():
    page = twins.switcher_html({(1, "a"): "<p>one a</p>", (2, "a"): "<p>two a</p>"},
                               [("n", [1, 2]), ("letter", ["a", "b"])], title="t", labels={"1": "one"})
    assert _panels(page) == {"1|a": "<p>one a</p>", "2|a": "<p>two a</p>"}
    assert '<option value="1">one</option>' in page and '<option value="b">b</option>' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched
    with pytest.raises(ValueError, match="does not match the controls"):
        twins.switcher_html({(3, "a"): "x"}, [("n", [1, 2]), ("letter", ["a"])], title="t")
    with pytest.raises(ValueError, match="does not match the controls"):
        twins.switcher_html({(1,): "x"}, [("n", [1, 2]), ("letter", ["a"])], title="t")
    with pytest.raises(ValueError, match="panels is empty"):
        twins.switcher_html({}, [("n", [1])], title="t")


def test_figure_html_is_a_png_of_the_figure_at_page_width():
    from PIL import Image

    fig, ax = am.chapters.style.subplots(1, 1, height=2.0, pyplot=True)
    ax.plot([0, 1], [0, 1])
    fig.suptitle("a <title>", fontsize=am.chapters.style.TITLE)  # the book's size: the layout check rejects others
    tag = twins.figure_html(fig)
    assert 'alt="a &lt;title&gt;"' in tag
    png = base64.b64decode(tag.split("base64,")[1].split('"')[0])
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "P"  # palette: the quantised copy
    assert 600 <= img.width <= 720  # 6 in at TWIN_DPI: the text column


def test_latent_twin_panels_match_the_widget_data():
    wa, sae = _word_acts(), _sae()
    out = twins.latent_twin(sae, wa, PAIRS, [("5 (best)", 5), ("9", 9)], neutral_words=NEUTRAL)
    panels = _panels(_page(out))
    assert list(panels) == ["5", "9"]
    for j in (5, 9):
        status = twins.latent_status(pc.pair_codes(sae, wa, PAIRS, j, NEUTRAL))
        assert html.escape(status) in panels[str(j)] and "<img" in panels[str(j)]
    za = pc.pair_codes(sae, wa, PAIRS, 9, NEUTRAL)["z_a"]  # the status line, computed independently
    assert f"{100 * float((za != 0).double().mean()):.0f}% of male" in panels["9"]
    assert '<option value="5">5 (best)</option>' in _page(out)
    with pytest.raises(ValueError, match="candidates is empty"):
        twins.latent_twin(sae, wa, PAIRS, [])
    with pytest.raises(ValueError, match="latent must be an int"):
        twins.latent_twin(sae, wa, PAIRS, [("99", 99)])


def test_latent_twin_highlights_each_sentence(tiny_gpt2):
    loaded = tiny_gpt2
    wa = am.concepts.words.word_activations(loaded, ["king", "queen", "man", "woman"], 1, ["I saw the {} today."])
    sae = am.SAE(am.SAEConfig(d_in=loaded.info.d_model, d_sae=40, activation="abstopk", k=5, device="cpu", hook_layer=1))
    texts = ["The king walked.", "A man and a woman."]
    out = twins.latent_twin(sae, wa, [("king", "queen"), ("man", "woman")], [("3", 3)], model=loaded, texts=texts,
                            orientation=-1)
    panel = _panels(_page(out))["3"]
    for text in texts:
        tv = pc.token_values(sae, pc.text_tokens(loaded, text, 1), 3)
        assert pc.highlight_html(tv["tokens"], -tv["z"], title="latent 3 on each token (indigo: male side, pink: "
                                 "female side)") in panel


def test_pair_twin_has_every_pair_with_the_widget_status():
    wa = _word_acts()
    saes = {"AbsTopK": _sae(), "TopK": _sae("topk", seed=1)}
    panels = _panels(_page(twins.pair_twin(saes, wa, PAIRS, top=5)))
    assert list(panels) == [f"{a}/{b}" for a, b in PAIRS]
    for a, b in PAIRS:
        results = {name: pc.pair_differences(sae, wa, (a, b), 5) for name, sae in saes.items()}
        assert html.escape(twins.pair_status(results)) in panels[f"{a}/{b}"]
    with pytest.raises(ValueError, match="saes is empty"):
        twins.pair_twin({}, wa, PAIRS)


def test_toy_twin_trains_every_grid_point_and_caps_k():
    calls = []
    out = twins.toy_twin([0.5, 1.0], [1, 3], P=4, n_active=2, n_tokens=2_000, progress=lambda d, t: calls.append((d, t)))
    panels = _panels(_page(out))
    assert list(panels) == ["0.5|1", "0.5|3", "1.0|1", "1.0|3"] and calls[-1] == (4, 4)
    assert "d_sae=2, k=2" in panels["0.5|3"] and "capped at the width from 3" in panels["0.5|3"]
    assert "d_sae=4, k=3" in panels["1.0|3"] and "capped" not in panels["1.0|3"]
    with pytest.raises(ValueError, match="widths must be"):
        twins.toy_twin([0.7], [1])
    with pytest.raises(ValueError, match="ks must be"):
        twins.toy_twin([1.0], [0])


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian chromium (apt-get install chromium)")
def test_switcher_switches_in_headless_chromium(tmp_path):
    page = twins.switcher_html({(1, "a"): "<p>P1a</p>", (2, "a"): "<p>P2a</p>", (2, "b"): "<p>P2b</p>"},
                               [("n", [1, 2]), ("letter", ["a", "b"])], title="t")
    path = tmp_path / "twin.html"
    path.write_text(page, encoding="utf-8")

    def dom(fragment: str) -> str:
        return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--dump-dom", path.as_uri() + fragment],
                              capture_output=True, text=True, timeout=120).stdout

    def shown(d: str) -> list:
        return re.findall(r'<div class="panel on" data-key="([^"]*)">', d)

    assert shown(dom("")) == ["1|a"]
    assert shown(dom("#c0=2&c1=b")) == ["2|b"]
    d = dom("#c0=1&c1=b")  # no panel for this combination: none shown, the note says so
    assert shown(d) == [] and 'id="tw-miss" class="miss" style="display: block;"' in d
