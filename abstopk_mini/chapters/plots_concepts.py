r"""Concept axes seen through one SAE latent (chapters 7 and 8): the numbers, then the figures.

Data functions take an SAE and the word activations of :func:`abstopk_mini.concepts.words.word_activations`
(``wa.acts`` [n_words, T templates, d_in]) and return plain tensors in a dict; figure functions
take those dicts and return a matplotlib Figure with labelled axes. The widgets of
:mod:`abstopk_mini.chapters.widgets_lm` call the same pairs of functions, so a chapter shows the static
figure of a widget's default state by calling them once.

* :func:`pair_codes` / :func:`latent_pair_figure` — one latent's code :math:`z_j` and
  pre-activation :math:`u_j` on the two words of every pair (mean ± std over templates).
* :func:`pair_differences` / :func:`pair_difference_figure` — for one word pair, the latents
  with the largest :math:`|\bar z(a) - \bar z(b)|` (bar = mean over templates).
* :func:`text_tokens`, :func:`token_values` / :func:`highlight_html` — a latent's value on every
  token of a text.
* :func:`dim_positions` / :func:`dumbbell_figure` — where each word of each pair sits on a
  score (the Difference-in-Means axis, or a latent): per-word vs per-pair accuracy at a glance.
* :func:`decoder_cosines` / :func:`cosine_histogram` — cosine of every decoder row with a direction.
* :func:`sign_counts` / :func:`negative_share_figure` — how often each latent is positive and
  negative on a token sample, and the share of bidirectional latents.
* :func:`probe_rows` / :func:`probe_figure` — single-latent probes vs DiM on several concepts, and
  :func:`steering_figure` — log-odds curves of several steering methods against :math:`c/q`: in
  :mod:`abstopk_mini.chapters.plots_probing`, re-exported here.
* :class:`Table` — rows of results shown as an HTML table (and as text):
  :class:`abstopk_mini.chapters.style.Table`.

Figures are :class:`abstopk_mini.chapters.style.Figure` objects registered with pyplot (the
chapters let the inline backend show them; the widgets close them); colours (side a, side b,
neutral: :data:`~abstopk_mini.chapters.style.SIDE_COLORS`), sizes and fonts come from
:mod:`abstopk_mini.chapters.style`.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Mapping, Sequence

import torch
from matplotlib.ticker import MaxNLocator

from ..codestats import code_stats
from ..concepts.axis import dim_direction, encode_samples
from ..metrics import alive_share, bidirectional_mask
from . import style
from .checks import check_latent, check_pairs
from .plots_probing import (GENDER_COLUMNS, GENDER_KEY, gender_rows, probe_figure, probe_rows, steering_figure,  # noqa: F401
                            steering_pair_rows, steering_rows)
from .style import SIDE_COLORS, Table

__all__ = [
    "SIDE_COLORS", "pair_codes", "latent_pair_figure", "pair_differences", "pair_difference_figure",
    "text_tokens", "token_values", "highlight_html", "dim_positions", "latent_positions", "dumbbell_figure",
    "decoder_cosines", "cosine_histogram", "sign_counts", "negative_share_figure", "probe_rows",
    "probe_figure", "steering_figure", "steering_rows", "steering_pair_rows", "Table",
]

# =============================================================================== one latent, all pairs
def pair_codes(sae, word_acts, pairs, latent: int, neutral_words: Sequence[str] = ()) -> dict:
    """Code and pre-activation of ``latent`` on every word of ``pairs`` (and the neutral words).

    Returns ``latent``, ``pairs``, ``neutral_words`` and tensors over templates:
    ``z_a``, ``z_b``, ``u_a``, ``u_b`` [n_pairs, T] (side a = first word of each pair),
    ``z_n``, ``u_n`` [n_neutral, T].
    """
    pairs = check_pairs(word_acts, pairs)
    latent = check_latent(sae, latent)
    neutral = [w for w in neutral_words if w in set(word_acts.words)]
    words = [p[0] for p in pairs] + [p[1] for p in pairs] + neutral
    u, z = encode_samples(sae, word_acts.acts[word_acts.index(words)])  # [n, T, d_sae]
    u, z = u[..., latent], z[..., latent]
    n = len(pairs)
    return {"latent": latent, "pairs": pairs, "neutral_words": neutral,
            "z_a": z[:n], "z_b": z[n:2 * n], "z_n": z[2 * n:], "u_a": u[:n], "u_b": u[n:2 * n], "u_n": u[2 * n:]}


def _barsh(ax, values: list[torch.Tensor], labels: list[str], colors: list[str], names: Sequence[str], xlabel: str):
    """Grouped horizontal bars, first row at the top: values[g] [n, T] -> mean ± std over T."""
    n = values[0].shape[0]
    height = 0.8 / len(values)
    for g, (v, color, name) in enumerate(zip(values, colors, names)):
        y = [i + (g - (len(values) - 1) / 2) * height for i in range(n)]
        ax.barh(y, v.mean(1).tolist(), height, xerr=v.std(1, unbiased=False).tolist(), color=color,
                label=name, error_kw={"elinewidth": 0.8, "capsize": 1.5})
    ax.axvline(0, color="k", lw=0.7)
    ax.set_yticks(range(n), labels)
    ax.set_ylim(n - 0.4, -0.6)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


@style.styled
def latent_pair_figure(data: dict, sides: Sequence[str] = ("male", "female"), test_pairs=None,
                       title: str | None = None, preact: bool = True):
    """Horizontal bars of :func:`pair_codes`, one row per pair: the side-a and side-b word (mean ±
    std over templates) of the code :math:`z_j` (left) and, if ``preact``, the pre-activation
    :math:`u_j` (right). Neutral words follow in grey. Pairs in ``test_pairs`` are marked ``*``."""
    test = {tuple(p) for p in (test_pairs or ())}
    labels = [f"{a}/{b}" + ("*" if (a, b) in test else "") for a, b in data["pairs"]]
    panels = [("z", "code $z_j$")] + ([("u", "pre-activation $u_j$")] if preact else [])
    n_neutral = len(data["neutral_words"])
    n_rows = len(labels) + n_neutral
    fig, axes = style.subplots(1, len(panels), height=0.24 * n_rows + 1.5, pyplot=True, sharey=True, squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], panels):
        a, b, nn = data[f"{key}_a"], data[f"{key}_b"], data[f"{key}_n"]
        if n_neutral:  # one row per neutral word, in the side-a slot, with an empty side-b bar
            a = torch.cat([a, nn])
            b = torch.cat([b, torch.full_like(nn, float("nan"))])
        _barsh(ax, [a, b], labels + list(data["neutral_words"]), [SIDE_COLORS[0], SIDE_COLORS[1]],
               [f"{sides[0]} word", f"{sides[1]} word"], xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # two panels side by side: five labels ran into each other
        if n_neutral:
            for patch in ax.patches[len(labels):len(labels) + n_neutral]:
                patch.set_color(SIDE_COLORS[2])
            ax.axhline(len(labels) - 0.5, color="0.6", lw=0.7, ls=":")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    axes[0, 0].set_ylabel("word pair" + (" (* = test)" if test else "") + (", neutral words" if n_neutral else ""))
    fig.suptitle(title or f"Latent {data['latent']} on each word pair (mean ± std over templates)")
    return fig


# =============================================================================== one pair, all latents
def pair_differences(sae, word_acts, pair, top: int = 10) -> dict:
    """The latents that separate the two words of ``pair`` most: largest :math:`|\\Delta_j|`
    with :math:`\\Delta_j = \\operatorname{mean}_T z_j(a) - \\operatorname{mean}_T z_j(b)`.

    Returns ``pair``, ``latents`` (list, by decreasing :math:`|\\Delta|`), and tensors [top]:
    ``diff``, ``z_a``, ``z_b`` (means over templates), ``std_a``, ``std_b``.
    """
    (a, b), = check_pairs(word_acts, [pair])
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int; got {top!r}")
    _, z = encode_samples(sae, word_acts.acts[word_acts.index([a, b])])  # [2, T, d_sae]
    mean, std = z.mean(1), z.std(1, unbiased=False)
    diff = mean[0] - mean[1]
    order = diff.abs().argsort(descending=True, stable=True)[:top]
    return {"pair": (a, b), "latents": order.tolist(), "diff": diff[order], "z_a": mean[0, order],
            "z_b": mean[1, order], "std_a": std[0, order], "std_b": std[1, order]}


@style.styled
def pair_difference_figure(results: Mapping[str, dict], title: str | None = None):
    """One panel per SAE (``results``: name -> :func:`pair_differences`), stacked (side by side, two
    words as long as *grandfather* / *grandmother* made the titles and axis labels collide): the code
    of each top latent on the side-a and side-b word (mean ± std over templates)."""
    names = list(results)
    fig, axes = style.subplots(len(names), 1, height=2.9 * len(names), pyplot=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        r = results[name]
        a, b = r["pair"]
        n = len(r["latents"])
        width = 0.4
        ax.bar([i - width / 2 for i in range(n)], r["z_a"].tolist(), width, yerr=r["std_a"].tolist(),
               color=SIDE_COLORS[0], label=a, error_kw={"elinewidth": 0.8, "capsize": 1.5})
        ax.bar([i + width / 2 for i in range(n)], r["z_b"].tolist(), width, yerr=r["std_b"].tolist(),
               color=SIDE_COLORS[1], label=b, error_kw={"elinewidth": 0.8, "capsize": 1.5})
        ax.axhline(0, color="k", lw=0.7)
        ax.set_xticks(range(n), [str(j) for j in r["latents"]], rotation=90)
        style.finish(ax, f"latent (by |z({a}) − z({b})|)", "code z (mean over templates)", f"{name}: {a} vs {b}",
                     grid=False)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return style.legend_below(fig, ncol=2)  # below the panels: inside, it covered bars and error bars


# =============================================================================== tokens of a text
@torch.no_grad()
def text_tokens(model, text: str, layer: int, context_length: int = 128) -> dict:
    """Residual-stream activations of every token of ``text`` (BOS left out), to score any latent
    with :func:`token_values` without running the model again.

    Returns ``text``, ``tokens`` (each token decoded on its own, so spaces show), ``acts`` [n_tokens, d_model].
    """
    from ..lm.activations import token_activations

    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty str; got {text!r}")
    ta = token_activations(model, [text], layer, context_length=context_length)
    return {"text": text, "layer": layer, "tokens": [model.tokenizer.decode([int(t)]) for t in ta.token_ids], "acts": ta.acts}


def token_values(sae, tokens: dict, latent: int) -> dict:
    """``latent``'s code ``z`` and pre-activation ``u`` [n_tokens] on the tokens of :func:`text_tokens`."""
    latent = check_latent(sae, latent)
    u, z = encode_samples(sae, tokens["acts"])
    return {"latent": latent, "text": tokens["text"], "tokens": list(tokens["tokens"]), "z": z[:, latent], "u": u[:, latent]}


def _rgba(value: float, vmax: float, pos: str, neg: str) -> str:
    alpha = min(1.0, abs(value) / vmax) if vmax > 0 else 0.0
    return f"rgba({pos if value > 0 else neg},{0.85 * alpha:.3f})"


def highlight_html(tokens: Sequence[str], values, title: str = "", vmax: float | None = None,
                   positive: str = style.rgb(style.SIDE_LIGHT[0]), negative: str = style.rgb(style.SIDE_LIGHT[1])) -> str:
    """HTML of the tokens with a background by signed value: ``positive`` (RGB, default side a's
    light colour, indigo) for v > 0, ``negative`` (default side b's, pink) for v < 0, opacity
    |v| / vmax (vmax: default max |v|);
    a zero is left white. Each token's value is in its tooltip. Text is HTML-escaped."""
    values = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    if len(values) != len(tokens):
        raise ValueError(f"tokens ({len(tokens)}) and values ({len(values)}) must have the same length")
    if vmax is None:
        vmax = max((abs(v) for v in values), default=0.0)
    spans = []
    for tok, v in zip(tokens, values):
        style = "padding:1px 0;border-radius:2px;" + (f"background:{_rgba(v, vmax, positive, negative)};" if v != 0 else "")
        shown = html.escape(tok).replace(" ", "&nbsp;").replace("\n", "↵")
        tip = f"{v:+.3g}" if v != 0 else "0"
        spans.append(f'<span title="{tip}" style="{style}">{shown}</span>')
    head = f"<div style='font-size:0.85em;color:#555'>{html.escape(title)}</div>" if title else ""
    body = "".join(spans)
    return f"<div style='font-family:monospace;line-height:1.9;margin:4px 0'>{head}{body}</div>"


# =============================================================================== per word vs per pair
def dim_positions(word_acts, train_pairs, pairs, neutral_words: Sequence[str] = ()) -> dict:
    """Positions on the Difference-in-Means axis, normalised as in
    :func:`abstopk_mini.concepts.axis.evaluate_axis`: :math:`(x\\cdot d - m)/h` with d from
    ``train_pairs`` (side a − side b), m the midpoint and h half the gap of the two train side
    means, so train side a sits at +1 and side b at −1 and the threshold rule cuts at 0.

    Returns ``pairs``, ``pos_a``, ``pos_b`` [n_pairs, T], ``pos_n`` [n_neutral, T], ``direction`` [d].
    """
    train_pairs = check_pairs(word_acts, train_pairs)
    pairs = check_pairs(word_acts, pairs)
    acts = lambda ws: word_acts.acts[word_acts.index(ws)].double()  # noqa: E731
    A, B = acts([p[0] for p in train_pairs]), acts([p[1] for p in train_pairs])
    d = dim_direction(A, B)
    mean_a, mean_b = float((A @ d).mean()), float((B @ d).mean())
    mid, half = (mean_a + mean_b) / 2, (mean_a - mean_b) / 2
    pos = lambda ws: ((acts(ws) @ d - mid) / half).float()  # noqa: E731
    neutral = [w for w in neutral_words if w in set(word_acts.words)]
    return {"pairs": pairs, "pos_a": pos([p[0] for p in pairs]), "pos_b": pos([p[1] for p in pairs]),
            "pos_n": pos(neutral) if neutral else torch.zeros(0, word_acts.acts.shape[1]),
            "neutral_words": neutral, "direction": d.float()}


def latent_positions(data: dict, orientation: int = 1, threshold: float = 0.0) -> dict:
    """:func:`pair_codes` as positions for :func:`dumbbell_figure`: ``orientation·(z − threshold)``,
    so side a is predicted where the position is > 0 (the latent's threshold rule)."""
    o = 1 if orientation >= 0 else -1
    f = lambda z: o * (z - threshold)  # noqa: E731
    return {"pairs": data["pairs"], "pos_a": f(data["z_a"]), "pos_b": f(data["z_b"]), "pos_n": f(data["z_n"]),
            "neutral_words": data["neutral_words"]}


@style.styled
def dumbbell_figure(panels: Mapping[str, dict], sides: Sequence[str] = ("male", "female"), test_pairs=None,
                    xlabels: Mapping[str, str] | None = None):
    """One row per pair: every template's position (small dots) and the mean over templates (large
    dots, joined by a line) of the side-a and side-b word; the rule cuts at 0 (dotted line).

    A pair whose large side-a dot (indigo) is right of its side-b dot (pink) is ordered correctly (per-pair accuracy);
    a word is classified correctly (per-word accuracy) when its dot is on its own side of 0.
    ``panels``: title -> a dict with ``pairs``, ``pos_a``, ``pos_b`` [n_pairs, T] (and optional
    ``pos_n``, ``neutral_words``), e.g. :func:`dim_positions` or :func:`latent_positions`.
    """
    test = {tuple(p) for p in (test_pairs or ())}
    names = list(panels)
    n_rows = max(len(p["pairs"]) + len(p.get("neutral_words", ())) for p in panels.values())
    fig, axes = style.subplots(1, len(names), height=0.24 * n_rows + 1.7, pyplot=True, sharey=True, squeeze=False)
    wrap = max(10, 40 // len(names))  # characters per line of a panel's title and x label: within its panel
    for ax, name in zip(axes[0], names):
        p = panels[name]
        pairs = list(p["pairs"])
        for i, (a, b) in enumerate(pairs):
            y = len(pairs) - 1 - i
            pa, pb = p["pos_a"][i], p["pos_b"][i]
            ax.plot(pa.tolist(), [y + 0.12] * len(pa), ".", color=SIDE_COLORS[0], ms=3, alpha=0.45)
            ax.plot(pb.tolist(), [y - 0.12] * len(pb), ".", color=SIDE_COLORS[1], ms=3, alpha=0.45)
            ax.plot([float(pa.mean()), float(pb.mean())], [y, y], "-", color="0.6", lw=1, zorder=1)
            ax.plot(float(pa.mean()), y, "o", color=SIDE_COLORS[0], ms=6, zorder=2, label=f"{sides[0]} word" if i == 0 else None)
            ax.plot(float(pb.mean()), y, "o", color=SIDE_COLORS[1], ms=6, zorder=2, label=f"{sides[1]} word" if i == 0 else None)
        labels = [f"{a}/{b}" + ("*" if (a, b) in test else "") for a, b in pairs][::-1]
        neutral = list(p.get("neutral_words", ()))
        for i, w in enumerate(neutral):
            y = -1 - i
            ax.plot(float(p["pos_n"][i].mean()), y, "o", color=SIDE_COLORS[2], ms=5, label="neutral word" if i == 0 else None)
        ax.set_yticks(list(range(-len(neutral), len(pairs))), neutral[::-1] + labels)
        ax.axvline(0, color="k", lw=0.8, ls=":")
        ax.set_xlabel(textwrap.fill((xlabels or {}).get(name, "position (rule: side a if > 0)"), wrap))
        ax.set_title(textwrap.fill(name, wrap))
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3, steps=[1, 2, 5, 10]))  # few, short labels in a narrow panel
    axes[0, 0].set_ylabel(f"word pair ({sides[0]}/{sides[1]}" + (", * = test" if test else "") + ")")
    return style.legend_below(fig, ncol=3)


# =============================================================================== all latents
def decoder_cosines(sae, direction: torch.Tensor) -> torch.Tensor:
    """Cosine of every decoder row with ``direction``.  shape: direction [d_in] -> [d_sae]"""
    W = sae.W_dec.detach().double().cpu()
    d = direction.detach().double().cpu().reshape(-1)
    if d.shape[0] != W.shape[1]:
        raise ValueError(f"direction has {d.shape[0]} entries but the SAE's decoder rows have {W.shape[1]}")
    return ((W @ d) / (W.norm(dim=1).clamp_min(1e-12) * d.norm().clamp_min(1e-12))).float()


@style.styled
def cosine_histogram(cosines: Mapping[str, torch.Tensor], marks: Mapping[str, Sequence[tuple[int, str]]] | None = None,
                     xlabel: str = "cosine(decoder row, DiM direction)"):
    """Histogram of :func:`decoder_cosines` per SAE (log counts), with chosen latents marked:
    ``marks``: name -> [(latent, label)] drawn as vertical lines at their cosine, in the SAE's
    colour when ``name`` names an activation (solid, dashed, dotted)."""
    fig, axes = style.subplots(1, len(cosines), height=3.2, pyplot=True, squeeze=False, sharey=True)
    for ax, (name, cos) in zip(axes[0], cosines.items()):
        ax.hist(cos.tolist(), bins=60, range=(-1, 1), color="0.6")
        ax.set_yscale("log")
        for i, (latent, label) in enumerate((marks or {}).get(name, ())):
            ax.axvline(float(cos[latent]), color=style.color(name), ls=("-", "--", ":")[i % 3], lw=1.5,
                       label=f"{label} ({float(cos[latent]):+.2f})")
        ax.set_xlabel(xlabel)
        ax.set_title(f"{name}: max |cos| = {float(cos.abs().max()):.2f}")
        if (marks or {}).get(name):
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25))
    axes[0, 0].set_ylabel("latents (log scale)")
    return fig


def sign_counts(sae, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """How many rows of x each latent is positive and negative on, streamed in batches
    (:func:`abstopk_mini.codestats.code_stats`).  shape: x [N, d_in] -> (n_pos [d_sae], n_neg [d_sae]) int64
    """
    st = code_stats(sae, x, batch_size)
    return st.n_pos, st.n_neg


@style.styled
def negative_share_figure(counts: Mapping[str, tuple[torch.Tensor, torch.Tensor]], min_share: float = 0.1):
    """Histogram over alive latents of the negative share n_neg / (n_pos + n_neg) (:func:`sign_counts`),
    one panel per SAE, stacked; the shaded band holds the bidirectional latents (each sign ≥ ``min_share``)."""
    fig, axes = style.subplots(len(counts), 1, height=2.7 * len(counts), pyplot=True, squeeze=False)
    for ax, (name, (n_pos, n_neg)) in zip(axes[:, 0], counts.items()):
        n = n_pos + n_neg
        alive = n > 0
        share = (n_neg[alive].double() / n[alive]).tolist()
        mask = bidirectional_mask(n_pos, n_neg, min_share)
        bidir = int(mask.sum())
        ax.axvspan(min_share, 1 - min_share, color=style.BAND, alpha=0.12, label=f"bidirectional\n({min_share:g}–{1 - min_share:g})")
        ax.hist(share, bins=40, range=(0, 1), color="0.45")
        ax.set_yscale("log")
        style.plain_log_labels(ax.yaxis)  # a short axis: 3×10¹ and 4×10¹ ran into each other
        ax.set_xlabel("negative share of the latent's non-zeros")
        ax.set_ylabel("alive latents\n(log scale)")
        frac = alive_share(mask, alive)
        ax.set_title(f"{name}: {bidir} of {int(alive.sum())} alive latents bidirectional ({100 * frac:.1f}%)")
    return style.legend_below(fig, ncol=1)
