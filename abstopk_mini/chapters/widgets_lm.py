r"""Widgets for the language-model chapters (7: bidirectional features).

``ipywidgets`` is imported only when a widget is built, so this module imports without it. Each
widget redraws with a data function and a figure function of :mod:`abstopk_mini.chapters.plots_concepts`;
a chapter calls the same two functions once for the static figure of the widget's default state
(the built book shows saved widget state only, and the widget JavaScript comes from a CDN).
Each widget has a kernel-free twin in :mod:`abstopk_mini.chapters.twins` (its options precomputed,
switched in the page), which the chapters show next to it.

* :func:`latent_widget` — pick a latent: its signed code on the two words of every pair
  (:func:`~abstopk_mini.chapters.plots_concepts.pair_codes` / ``latent_pair_figure``) and, with a model, a
  token-level highlight of an editable sentence (``text_tokens`` / ``token_values`` /
  ``highlight_html``).
* :func:`pair_widget` — pick a word pair: the latents of each SAE that separate its two words
  most (``pair_differences`` / ``pair_difference_figure``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import plots_concepts as pc
from . import style
from .checks import check_latent, check_pairs
from .twins import latent_status, pair_status

__all__ = ["show_figure", "latent_candidates", "latent_widget", "pair_widget"]


def show_figure(out, fig) -> None:
    """Replace the content of the ``ipywidgets.Output`` ``out`` with ``fig`` as a PNG and close
    ``fig`` (so the inline backend does not show it a second time below the widget)."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    png = style.Figure._repr_png_(fig)  # a plain matplotlib Figure is saved the same way
    plt.close(fig)
    with out:
        out.clear_output(wait=True)
        display(Image(png))


def latent_candidates(report: dict, extra: Sequence[int] = ()) -> list[tuple[str, int]]:
    """Dropdown options from a concept report: the threshold-best latent, the sign-best latent,
    the two latents of the best pair, then ``extra``; each once, labelled by its role."""
    roles = [(report["best_latent"], "best by threshold"), (report["sign_latent"]["latent"], "best by sign")]
    i, j = report["best_pair"]
    roles += [(i, "pair rule, side a"), (j, "pair rule, side b")] + [(int(e), "") for e in extra]
    seen, options = {}, []
    for latent, role in roles:
        if latent in seen:
            if role:
                seen[latent].append(role)
            continue
        seen[latent] = [role] if role else []
        options.append(latent)
    return [(f"{j}" + (f" ({', '.join(seen[j])})" if seen[j] else ""), j) for j in options]


def latent_widget(sae, word_acts, pairs, latent: int, *, candidates: Sequence[tuple[str, int]] | None = None,
                  neutral_words: Sequence[str] = (), sides: Sequence[str] = ("male", "female"), test_pairs=None,
                  model=None, text: str = "The king spoke to his daughter, and the queen smiled at her son.",
                  orientation: int = 1, preact: bool = True):
    """Pick a latent (dropdown of ``candidates`` or any index) → :func:`~abstopk_mini.chapters.plots_concepts.latent_pair_figure`
    and, if ``model`` is given, the highlight of ``text`` (editable) by the latent's code times
    ``orientation`` (indigo: side a, pink: side b; :data:`abstopk_mini.chapters.style.SIDE_LIGHT`).

    Returns an ``ipywidgets.VBox`` ``[controls, status, figure output, text box, highlight]``;
    ``box.state`` holds the last data drawn (``codes``, ``tokens``).
    """
    import ipywidgets as W

    pairs = check_pairs(word_acts, pairs)
    latent = check_latent(sae, latent)
    options = list(candidates or [])
    if latent not in [v for _, v in options]:
        options = [(str(latent), latent)] + options
    style = {"description_width": "110px"}
    pick = W.Dropdown(options=options, value=latent, description="latent", style=style, layout=W.Layout(width="360px"))
    index = W.BoundedIntText(value=latent, min=0, max=sae.cfg.d_sae - 1, description="or any index", style=style,
                             layout=W.Layout(width="220px"))
    status = W.HTML()
    out = W.Output()
    box_text = W.Text(value=text, description="sentence", continuous_update=False, style=style,
                      layout=W.Layout(width="95%", display="" if model is not None else "none"))
    highlight = W.HTML()
    state: dict = {"tokens": None}
    layer = word_acts.layer

    def redraw(j: int) -> None:
        codes = pc.pair_codes(sae, word_acts, pairs, j, neutral_words)
        state["codes"] = codes
        status.value = latent_status(codes, sides)
        show_figure(out, pc.latent_pair_figure(codes, sides, test_pairs, preact=preact))
        draw_text(j)

    def draw_text(j: int) -> None:
        if model is None:
            return
        if state["tokens"] is None or state["tokens"]["text"] != box_text.value:
            state["tokens"] = pc.text_tokens(model, box_text.value, layer)
        tv = pc.token_values(sae, state["tokens"], j)
        highlight.value = pc.highlight_html(tv["tokens"], orientation * tv["z"],
                                            title=f"latent {j} on each token (indigo: {sides[0]} side, pink: {sides[1]} side)")

    busy = [False]

    def select(j: int) -> None:  # both controls land here; the guard stops them echoing each other
        if busy[0]:
            return
        busy[0] = True
        try:
            if j not in [v for _, v in pick.options]:
                pick.options = list(pick.options) + [(str(j), j)]
            pick.value = j
            index.value = j
            redraw(j)
        finally:
            busy[0] = False

    pick.observe(lambda change: select(change["new"]), names="value")
    index.observe(lambda change: select(change["new"]), names="value")
    box_text.observe(lambda change: draw_text(index.value), names="value")
    redraw(latent)
    box = W.VBox([W.HBox([pick, index]), status, out, box_text, highlight])
    box.state = state
    return box


def pair_widget(saes: Mapping[str, object], word_acts, pairs, pair=None, top: int = 10):
    """Pick a word pair → for each SAE, the ``top`` latents with the largest |mean z(a) − mean z(b)|
    (:func:`~abstopk_mini.chapters.plots_concepts.pair_difference_figure`).

    Returns an ``ipywidgets.VBox`` ``[dropdown, status, figure output]``; ``box.state["results"]``
    holds the last data drawn.
    """
    import ipywidgets as W

    if not saes:
        raise ValueError("saes is empty; pass a dict name -> SAE")
    pairs = check_pairs(word_acts, pairs)
    pair = tuple(pair) if pair is not None else pairs[0]
    if pair not in pairs:
        raise ValueError(f"pair={pair!r} is not one of the pairs {pairs[:4]}...; pick one of them")
    pick = W.Dropdown(options=[(f"{a} / {b}", (a, b)) for a, b in pairs], value=pair, description="word pair",
                      layout=W.Layout(width="320px"))
    status = W.HTML()
    out = W.Output()
    state: dict = {}

    def redraw(p) -> None:
        results = {name: pc.pair_differences(sae, word_acts, p, top) for name, sae in saes.items()}
        state["results"] = results
        status.value = pair_status(results)
        show_figure(out, pc.pair_difference_figure(results))

    pick.observe(lambda change: redraw(change["new"]), names="value")
    redraw(pair)
    box = W.VBox([pick, status, out])
    box.state = state
    return box
