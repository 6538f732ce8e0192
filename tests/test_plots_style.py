"""The book's style (abstopk_mini.chapters.style): colours read from the activation specs and kept
apart, figures that fit the text column with text no smaller than the body text, one Table."""

from __future__ import annotations

import math
import struct

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib._pylab_helpers import Gcf  # noqa: E402
from matplotlib.text import Text  # noqa: E402

import abstopk_mini as am  # noqa: E402
from abstopk_mini.chapters import plots, plots_concepts as pc, plots_lm, plots_real, plots_sweep as ps, style  # noqa: E402
from abstopk_mini.dashboard.html import SIGN_COLORS  # noqa: E402
from abstopk_mini.nonlinearities import SPECS  # noqa: E402


# --------------------------------------------------------------------------- colour difference
def _lab(hex_color: str) -> tuple[float, float, float]:
    """sRGB (D65) -> CIELAB."""
    h = hex_color.lstrip("#")
    rgb = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    m = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
    x, y, z = (sum(m[i][j] * lin[j] for j in range(3)) for i in range(3))
    f = lambda t: t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116  # noqa: E731
    fx, fy, fz = f(x / 0.95047), f(y), f(z / 1.08883)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def de2000(lab1, lab2) -> float:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal, 2005)."""
    (L1, a1, b1), (L2, a2, b2) = lab1, lab2
    cbar = (math.hypot(a1, b1) + math.hypot(a2, b2)) / 2
    g = 0.5 * (1 - math.sqrt(cbar ** 7 / (cbar ** 7 + 25 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1, c2 = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1 = math.degrees(math.atan2(b1, a1p)) % 360 if c1 else 0.0
    h2 = math.degrees(math.atan2(b2, a2p)) % 360 if c2 else 0.0
    dh = 0.0 if c1 * c2 == 0 else (h2 - h1 + 180) % 360 - 180
    dL, dC, dH = L2 - L1, c2 - c1, 2 * math.sqrt(c1 * c2) * math.sin(math.radians(dh / 2))
    lbar, cbarp = (L1 + L2) / 2, (c1 + c2) / 2
    if c1 * c2 == 0:
        hbar = h1 + h2
    elif abs(h1 - h2) <= 180:
        hbar = (h1 + h2) / 2
    else:
        hbar = (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2
    t = (1 - 0.17 * math.cos(math.radians(hbar - 30)) + 0.24 * math.cos(math.radians(2 * hbar))
         + 0.32 * math.cos(math.radians(3 * hbar + 6)) - 0.20 * math.cos(math.radians(4 * hbar - 63)))
    rt = -2 * math.sqrt(cbarp ** 7 / (cbarp ** 7 + 25 ** 7)) * math.sin(math.radians(60 * math.exp(-(((hbar - 275) / 25) ** 2))))
    sl = 1 + 0.015 * (lbar - 50) ** 2 / math.sqrt(20 + (lbar - 50) ** 2)
    sc, sh = 1 + 0.045 * cbarp, 1 + 0.015 * cbarp * t
    return math.sqrt((dL / sl) ** 2 + (dC / sc) ** 2 + (dH / sh) ** 2 + rt * (dC / sc) * (dH / sh))


def test_de2000_matches_published_pairs():
    # Sharma et al. (2005), table 1: pairs 1, 7 and 17
    assert de2000((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485)) == pytest.approx(2.0425, abs=1e-4)
    assert de2000((50.0, 0.0, 0.0), (50.0, -1.0, 2.0)) == pytest.approx(2.3669, abs=1e-4)
    assert de2000((50.0, 2.5, 0.0), (73.0, 25.0, -18.0)) == pytest.approx(27.1492, abs=1e-4)


# --------------------------------------------------------------------------- palette
#: below this CIEDE2000 difference two colours could be taken for one another in a small legend
MIN_DE = 15.0


def test_palette_is_keyed_by_the_activation_specs():
    # presentation lives beside the figures: one distinct colour, label and marker per spec name
    for table in (style.ACTIVATION_COLORS, style.ACTIVATION_LABELS, style.ACTIVATION_MARKERS):
        assert set(table) == set(SPECS) and len(set(table.values())) == len(SPECS)
    assert not any(hasattr(s, "label") or hasattr(s, "color") for s in SPECS.values())  # not in the core spec
    assert style.color("abstopk") == "#d62728" and style.color("topk") == "#1f77b4"
    assert style.label("abstopk") == "AbsTopK" and style.label("ISTA") == "ISTA"
    assert style.color("abstopk-k32") == style.color("AbsTopK latent 398") == style.ACTIVATION_COLORS["abstopk"]
    assert style.color("topk-k32") == style.color("TopK pair 5 > 6") == style.ACTIVATION_COLORS["topk"]
    assert style.marker("abstopk-k32") == "s" and style.marker("DiM") == "o"
    assert style.color("ISTA, λ=0.05") == style.METHOD_COLORS["ISTA"]
    assert style.color("IHT, η=1/L") != style.color("IHT, η=1")  # the longest name wins
    assert style.color("DiM") == style.REFERENCE and style.color("DiM", default="x") == "x"
    assert style.line_style("abstopk-k32") == {"color": style.ACTIVATION_COLORS["abstopk"], "ls": "--"}
    assert style.line_style("topk")["ls"] == "-"
    assert style.rgb("#393b79") == "57,59,121"
    with pytest.raises(ValueError, match="hex_color"):
        style.rgb("blue")


def _too_close(group_a: dict, group_b: dict) -> list[str]:
    """Pairs (one of each group; each pair once within one group) closer than MIN_DE."""
    out = []
    for na, ca in group_a.items():
        for nb, cb in group_b.items():
            if group_a is group_b and na >= nb:
                continue
            d = de2000(_lab(ca), _lab(cb))
            if d < MIN_DE:
                out.append(f"{na} {ca} ~ {nb} {cb} (ΔE {d:.1f})")
    return out


def test_method_gender_and_sign_colours_are_apart():
    activations = dict(style.ACTIVATION_COLORS)
    theory = {k: v for k, v in style.METHOD_COLORS.items() if k not in activations}
    theory_distinct = {k: v for k, v in theory.items() if k != "Lasso (FISTA)"}  # the Lasso is solved by FISTA
    assert theory["Lasso (FISTA)"] == theory["FISTA"]
    sides = {"male": style.GENDER_COLORS["male"], "female": style.GENDER_COLORS["female"],
             "neutral": style.GENDER_COLORS["neutral"], "male (light)": style.SIDE_LIGHT[0]}
    assert style.SIDE_COLORS == (sides["male"], sides["female"], sides["neutral"])
    signs = {f"{sign} {i}": c for sign, pair in SIGN_COLORS.items() for i, c in enumerate(pair)}
    methods = {**activations, **theory_distinct}
    strong_sides = {k: v for k, v in sides.items() if k != "male (light)"}
    close = (_too_close(theory_distinct, activations) + _too_close(theory_distinct, theory_distinct)
             + _too_close(sides, methods) + _too_close(sides, signs) + _too_close(strong_sides, strong_sides))
    assert not close, "colours too close:\n" + "\n".join(close)


# --------------------------------------------------------------------------- figures
def _gender():
    x, words, _, D, concepts = am.coding.toy.gender_data(600, seed=0)
    saes = {n: am.SAE(am.SAEConfig(d_in=32, d_sae=8, activation=n, k=3, device="cpu")) for n in ("abstopk", "topk")}
    return x, words, D, concepts, saes


def _figures():
    """(name, builder) for a figure of every module that draws with the style."""
    x, words, D, concepts, saes = _gender()
    sweep = [dict(activation=a, d_sae=w, fvu=0.1, mcc=0.9, split_axes=1) for a in ("abstopk", "topk") for w in (8, 16)]
    hist = {"tokens": [100, 200, 300], "fvu": [1.0, 0.5, 0.3], "l0": [8.0] * 3, "dead_frac": [0.0, 0.1, 0.1]}
    rows = [{"activation": a, "k": k, "l0": float(k), "fvu": 0.1 * k, "dead_frac": 0.01, "loss_recovered": 0.9}
            for a in ("topk", "abstopk") for k in (8, 16)]
    reference = [{"system": sy, "activation": a, "held_l0": float(l0), "held_fvu": 1 / l0, "target": l0, "coefficient": None}
                 for sy, a in (("ours", "jumprelu"), ("saelens", "jumprelu"), ("saelens-target", "jumprelu"), ("ours", "topk"))
                 for l0 in (16, 32, 64)]
    layer_rows = [{"layer": L, "norm_q01": 1.0, "norm_median": 10.0, "norm_q99": 100.0, "bos_norm": 1e3, "mean_share": 0.5,
                   "top_dim_share": 0.2, "kurtosis_max": 50.0, "kurtosis_median": 0.3, "participation_ratio": 2.0}
                  for L in range(3)]
    recs = [{"activation": a, "layer": 6, "k": 32, "d_sae": w, "seed": 0, "variant": "default", "train_tokens": 1000,
             "heldout": {"fvu": 0.1 + 0.01 * w / 512}} for a in ("topk", "abstopk") for w in (512, 1024)]
    curves = {"AbsTopK latent 3": {"multiples": [-1, 0, 1], "log_odds": [1.0, 0.0, -1.0], "baseline": 0.1},
              "DiM": {"multiples": [-1, 0, 1], "log_odds": [0.5, 0.0, -0.5]}}
    g = torch.Generator().manual_seed(0)
    return [
        ("gender_axis_figure", lambda: plots.gender_axis_figure(x, words, D, concepts, per_word=10)),
        ("axis_latent_figure", lambda: plots.axis_latent_figure(saes, x, words, D[:, -1])),
        ("cosine_heatmaps", lambda: plots.cosine_heatmaps(D, saes, axis_labels=concepts)),
        ("antipodal_figure", lambda: plots.antipodal_figure(saes)),
        ("width_sweep_figure", lambda: plots.width_sweep_figure(sweep, P=8)),
        ("fvu_l0_frontier", lambda: plots_lm.fvu_l0_frontier(rows)),
        ("fvu_l0_frontier with loss recovered", lambda: plots_lm.fvu_l0_frontier(
            [r | {"splice_loss_recovered_mean": 0.8} for r in rows])),
        ("reference_frontier", lambda: plots_lm.reference_frontier(reference)),
        ("fvu_vs_k", lambda: plots_lm.fvu_vs_k(rows)),
        ("layer_stats", lambda: plots_real.layer_stats(layer_rows)),
        ("training_curves", lambda: plots_real.training_curves({"topk-k32": hist, "abstopk-k32": hist})),
        ("k_comparison", lambda: plots_real.k_comparison(rows)),
        ("firing_histograms", lambda: plots_real.firing_histograms({"topk-k32": torch.rand(50, generator=g)})),
        ("cosine_histogram", lambda: pc.cosine_histogram({"AbsTopK": torch.rand(40, generator=g) * 2 - 1},
                                                          {"AbsTopK": [(2, "latent 2")]})),
        ("steering_figure", lambda: pc.steering_figure(curves)),
        ("metric_vs", lambda: ps.metric_vs(recs, "d_sae", "heldout.fvu")),
    ]


@pytest.fixture(scope="module")
def figures():
    built = [(name, make()) for name, make in _figures()]
    yield built
    plt.close("all")


def test_figures_are_one_class_and_fit_the_column(figures):
    for name, fig in figures:
        assert isinstance(fig, style.Figure), name
        png = fig._repr_png_()
        width, _ = struct.unpack(">II", png[16:24])
        # constrained layout keeps everything inside the 6 in; the tight crop adds at most its padding
        assert abs(width - style.WIDTH * style.DPI) <= 0.05 * style.WIDTH * style.DPI, f"{name}: {width} px"
        assert width <= style.MAX_PX, f"{name}: {width} px"


def test_no_text_smaller_than_the_body_text(figures):
    for name, fig in figures:
        fig._repr_png_()  # draws: tick labels exist from here on
        small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
                 if t.get_visible() and t.get_text().strip() and t.get_fontsize() < style.FONT]
        assert not small, f"{name}: text below {style.FONT} pt: {small[:5]}"


def test_subplots_refuses_a_figure_wider_than_the_book_takes():
    with pytest.raises(ValueError, match="1400 px"):
        style.subplots(width=8.0)
    fig, axes = style.subplots(2, 3, height=4.0, squeeze=False)
    assert axes.shape == (2, 3) and tuple(fig.get_size_inches()) == (style.WIDTH, 4.0)
    managed = lambda: [m.canvas.figure for m in Gcf.get_all_fig_managers()]  # noqa: E731
    assert fig not in managed()  # stands alone: shown once, as a cell's value
    fig, _ = style.subplots(pyplot=True)
    assert fig in managed() and isinstance(fig, style.Figure)
    plt.close(fig)


# --------------------------------------------------------------------------- one Table
def test_every_module_shows_the_one_table():
    assert plots.Table is style.Table and pc.Table is style.Table


def test_book_rc_restores_only_its_own_keys():
    """The first pyplot figure of a kernel resolves the backend inside the figure function, and the
    inline backend switches interactive mode on there; matplotlib.rc_context would switch it off
    again on exit, and no later figure of the notebook would be shown (seen in chapter 7)."""
    import matplotlib as mpl

    from abstopk_mini.chapters import style

    before_font, before_interactive = mpl.rcParams["font.size"], mpl.rcParams["interactive"]
    try:
        with style.book_rc():
            assert mpl.rcParams["font.size"] == style.FONT
            mpl.rcParams["interactive"] = not before_interactive  # what a backend switch does
        assert mpl.rcParams["font.size"] == before_font  # ours: put back
        assert mpl.rcParams["interactive"] == (not before_interactive)  # not ours: left as it was set
        with pytest.raises(RuntimeError):
            with style.book_rc({"font.size": 3}):
                raise RuntimeError("inside")
        assert mpl.rcParams["font.size"] == before_font  # put back on an error too
    finally:
        mpl.rcParams["interactive"] = before_interactive


def test_shared_legend_keeps_each_label_once_below_the_figure():
    fig, axes = style.subplots(1, 2, pyplot=True)
    axes[0].plot([0, 1], label="a"); axes[0].plot([1, 0], label="b"); axes[0].legend()
    axes[1].plot([0, 2], label="b"); axes[1].plot([2, 0], label="c"); axes[1].legend()
    ps.shared_legend(fig)
    assert all(ax.get_legend() is None for ax in axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    plt.close(fig)


def test_label_rows_by_hand():
    from abstopk_mini.chapters.plots_sweep import label_rows

    # [0, 2] and [1, 3] overlap, [2.5, 4] fits after the first; [5, 6] fits in row 0 again
    assert label_rows([0, 1, 2.5, 5], [2, 3, 4, 6]) == [0, 1, 0, 0]
    assert label_rows([1, 0], [3, 2]) == [1, 0]  # placed from left to right, returned in input order
    assert label_rows([0, 2], [2, 4], gap=0.5) == [0, 1]  # touching is not enough with a gap
    assert label_rows([], []) == []


def test_neutral_word_labels_do_not_overlap():
    from abstopk_mini.chapters import plots_sweep as ps

    words = ["grandchild", "sibling", "monarch", "friend", "grandparent", "child", "parent", "cousin", "doctor",
             "baby", "spouse", "teacher", "person", "relative"]
    pos = [0.30, 0.32, 0.28, 0.45, 0.40, 0.47, -0.35, -0.3, -0.2, -0.25, -0.5, -0.45, 1.4, 3.2]
    rec = {"layer": 9, "concepts": {"family": {"neutral_positions": pos, "test_position_a": 0.99,
                                               "test_position_b": -0.8}}}
    fig = ps.neutral_positions(rec, words)
    ax = fig.axes[0]
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert len(boxes) == len(words)
    overlaps = [(ax.texts[i].get_text(), ax.texts[j].get_text()) for i in range(len(boxes)) for j in range(i)
                if boxes[i].overlaps(boxes[j])]
    assert overlaps == []


def test_recipe_table_names_every_change_of_the_committed_record():
    """Every variant in results/grad_clip.jsonl reads as words (no raw ``name=X``), and the table keeps the
    record's numbers and order."""
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(__file__).parents[1] / "results/grad_clip.jsonl").read_text().splitlines()]
    table = plots_lm.recipe_table(rows, keep=lambda r: r["K"] == 32)
    assert [r["FVU"] for r in table.rows] == [r["held_fvu"] for r in rows if r["K"] == 32]
    assert all("=" not in r["change"] and r["change"] != r.get("v") for r in table.rows)
    assert plots_lm.recipe_label("clip+eps=1e-13") == "gradient clipped at global norm 1 + Adam eps 1e-13"
    assert plots_lm.recipe_label("free+noclip") == "free decoder norms, not clipped"
    assert plots_lm.recipe_label("clip+wd") == "gradient clipped at global norm 1 + wd"  # unknown parts stay as named
    assert table.rows[0]["never fire %"] == pytest.approx(100 * rows[0]["dead_frac"])
