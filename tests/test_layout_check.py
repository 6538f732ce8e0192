"""The figure layout check (abstopk_mini.chapters.layout_check, run by style.Figure on every draw).

- It fails on the figures issue 31 found broken, drawn as they were: Fig 9.10 (the [D, −D] training
  comparison: three panels in a row squashed to slivers, titles over each other, legends over the
  data, x ticks reading "10 1000") and Fig 5.2 (token norms on a log axis whose minor labels
  "3×10³" and "4×10³" run into each other); their figure functions now pass on the same data.
- Each rule on a small figure: overlapping texts (rotated tick labels as rotated boxes), a legend
  over data, a sliver panel, a font off the book's sizes, a figure narrower than the book's.
- It runs where the book shows figures: savefig (a failed save leaves no file), _repr_png_, and the
  IPython inline backend's path (``IPython.core.pylabtools.print_figure``, what ``plt.show()`` and
  the end of a cell use).
- Every figure function of the book is drawn through it: tests/conftest.py saves every style.Figure
  a test makes, and each figure function is called by some test (checked here by name).
- The gender sides' colours are apart in hue from AbsTopK's red and TopK's blue.
"""

from __future__ import annotations

import ast
import io
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from abstopk_mini.chapters import layout_check, style
from abstopk_mini.chapters import plots_real, plots_sweep

ROOT = Path(__file__).resolve().parents[1]


def _save(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=style.DPI, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the two figures of the issue
def _doubling_hist() -> dict:
    """A [D, −D] training history shaped like chapter 9's (1,500 steps, logged every 50)."""
    steps = list(range(0, 1501, 50))
    t = np.array(steps, dtype=float)
    fvu = {"abstopk": 0.7 * np.exp(-t / 150) + 0.07, "tied_doubled_topk": 0.7 * np.exp(-t / 150) + 0.07,
           "untied_doubled_topk": 0.72 * np.exp(-t / 140) + 0.08, "topk_2P_random": 0.75 * np.exp(-t / 120) + 0.09}
    return {"steps": steps, "fvu": {k: v.tolist() for k, v in fvu.items()},
            "max_abs_diff_tied": (2e-7 + 1e-7 * np.sin(t / 70)).tolist(),
            "antipodal_cos": (1.0 - 0.13 * (1 - np.exp(-t / 300))).tolist(),
            "both_used": (1.0 - 0.2 * (1 - np.exp(-t / 200))).tolist(),
            "activation": {"abstopk": "abstopk", "tied_doubled_topk": "topk", "untied_doubled_topk": "topk",
                           "topk_2P_random": "topk"}}


@style.styled
def _old_doubling_curves(hist: dict):
    """Fig 9.10 as chapter 9 drew it before issue 31 (plots_sweep.doubling_curves of that commit)."""
    fig, axes = style.subplots(1, 3, height=3.2, pyplot=True)
    for (name, ys), st in zip(hist["fvu"].items(), ("-", ":", "--", "-.")):
        color = style.color("abstopk" if name == "abstopk" else "topk" if "topk" in name else name)
        axes[0].plot(hist["steps"], ys, st, color=color, label=name, lw=2 if name == "abstopk" else 1.2)
    axes[0].set_yscale("log")
    style.finish(axes[0], "step", "FVU (batch)", "Reconstruction")
    axes[1].plot(hist["steps"], [max(v, 1e-18) for v in hist["max_abs_diff_tied"]], color=style.REFERENCE)
    axes[1].set_yscale("log")
    style.finish(axes[1], "step", "max |x̂ tied doubled − x̂ AbsTopK|", "Tied doubled = AbsTopK")
    axes[2].plot(hist["steps"], hist["antipodal_cos"], label="mean cos(+atom, −(−atom))", **style.SERIES[0])
    axes[2].plot(hist["steps"], hist["both_used"], label="pairs with both halves firing", **style.SERIES[1])
    axes[2].set_ylim(-0.05, 1.05)
    style.finish(axes[2], "step", "untied doubled TopK", "Untied: pairs drift")
    return fig


def test_issue31_fig_9_10_overlap_is_caught():
    hist = _doubling_hist()
    with pytest.raises(ValueError, match=r"layout check") as err:
        _save(_old_doubling_curves(hist))
    msg = str(err.value)
    assert msg.startswith("figure 'Reconstruction' fails")  # the figure is named
    assert re.search(r"panel 1 'Reconstruction' is \d\d × \d+ px at 200 dpi", msg)  # the slivers
    assert "text 'Tied doubled = AbsTopK' overlaps panel 3 'Untied: pairs drift': text 'Untied: pairs drift'" in msg
    assert "x tick label '0' overlaps panel 1 'Reconstruction': x tick label '1000'" in msg  # "10 1000"
    assert "is under the panel 1 'Reconstruction': legend" in msg  # the legend over the next panel
    png = _save(plots_sweep.doubling_curves(hist))  # the figure function now: stacked panels, legend below
    assert png[:4] == b"\x89PNG"


def _norm_groups() -> dict:
    """Token norms shaped like chapter 5's Fig 5.2: tokens around 3,500, BOS around 55,000."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.exp(torch.randn(4000, generator=g) * 0.2) * 3500
    return {"BOS (position 0)": 55_000 + 500 * torch.randn(128, generator=g),
            "positions 1-3": torch.exp(torch.randn(384, generator=g) * 0.15) * 3600,
            "positions 4-127": tokens}


@style.styled
def _old_norm_histograms(groups: dict, title: str = "Token norms", bins: int = 60):
    """Fig 5.2 as chapter 5 drew it before issue 31 (plots_real.norm_histograms of that commit)."""
    values = [v.double() for v in groups.values() if len(v)]
    fig, ax = style.subplots(height=3.4, pyplot=True)
    lo = min(float(v[v > 0].min()) for v in values)
    hi = max(float(v.max()) for v in values)
    edges = torch.logspace(math.log10(lo), math.log10(hi * 1.0001), bins + 1).numpy()
    for i, (label, v) in enumerate(groups.items()):
        color = style.SERIES[i % len(style.SERIES)]["color"]
        ax.hist(v.double().numpy(), bins=edges, density=True, histtype="stepfilled", alpha=0.35, color=color,
                edgecolor=color, label=f"{label} (n={len(v):,})")
    ax.set_xscale("log")
    return style.finish(ax, "‖x‖ (residual norm)", "density", title)


def test_issue31_fig_5_2_tick_collision_is_caught():
    groups = _norm_groups()
    with pytest.raises(ValueError, match=r"x tick label '[^']*times10\^\{3\}[^']*' overlaps [^;]*x tick label"):
        _save(_old_norm_histograms(groups, title="output of block 6: token norms by position"))
    png = _save(plots_real.norm_histograms(groups, title="output of block 6: token norms by position"))
    assert png[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- each rule
def _clean():
    fig, ax = style.subplots(height=3.0)
    with style.book_rc():
        ax.plot([0, 1, 2], [0, 1, 0], label="a line", color=style.color("topk"))
        style.finish(ax, "x", "y", "a clean figure", legend=False)
    return fig, ax


def test_a_clean_figure_passes():
    fig, ax = _clean()
    style.legend_below(fig)
    assert _save(fig)[:4] == b"\x89PNG"


def test_a_legend_over_a_line_fails_and_below_the_panel_passes():
    fig, ax = _clean()
    with style.book_rc():
        ax.plot([0, 2], [0.9, 0.9], label="a flat line across the top", color=style.color("abstopk"))
        ax.legend(loc="upper center")
    with pytest.raises(ValueError, match="legend covers data of panel 1 'a clean figure': Line2D 'a flat line"):
        _save(fig)
    fig, ax = _clean()
    with style.book_rc():
        ax.plot([0, 2], [0.9, 0.9], label="a flat line across the top", color=style.color("abstopk"))
        style.legend_below(fig)
    _save(fig)


def test_a_reference_line_under_a_legend_is_not_data():
    fig, ax = _clean()
    with style.book_rc():
        ax.axhline(0.95, color=style.REFERENCE, lw=0.6)  # in axes coordinates across: a reference, not data
        ax.legend(loc="upper right")
    _save(fig)


def test_a_sliver_panel_fails():
    fig, axes = style.subplots(1, 9, height=3.0)
    with style.book_rc():
        for i, ax in enumerate(axes):
            ax.plot([0, 1], [0, 1])
            ax.set_xticks([])
            ax.set_yticks([])
    with pytest.raises(ValueError, match=r"panel 1 is \d+ × \d+ px at 200 dpi; panels need at least 150 px"):
        _save(fig)


def test_a_font_off_the_books_sizes_fails():
    fig, ax = _clean()
    ax.text(0.5, 0.2, "small print", fontsize=8)
    with pytest.raises(ValueError, match=r"text 'small print' is 8 pt; the book's figures use 10 pt"):
        _save(fig)


def test_a_figure_narrower_than_the_book_fails():
    fig, ax = style.subplots(height=3.0, width=4.5)
    with style.book_rc():
        ax.plot([0, 1], [0, 1])
        style.finish(ax, "x", "y", "narrow")
    with pytest.raises(ValueError, match=r"drawn 4.5\d in wide; every book figure is style.WIDTH = 6 in"):
        _save(fig)


def test_tick_labels_that_run_into_each_other_fail_and_rotated_ones_that_do_not_pass():
    words = [f"word number {i}" for i in range(12)]
    fig, ax = style.subplots(height=3.0)
    with style.book_rc():
        ax.bar(range(12), range(12))
        ax.set_xticks(range(12), words)
        style.finish(ax, "word", "count", "crowded")
    with pytest.raises(ValueError, match=r"x tick label 'word number 0' overlaps panel 1 'crowded': x tick label "
                                         r"'word number 1'"):
        _save(fig)
    fig, ax = style.subplots(height=3.4)
    with style.book_rc():
        ax.bar(range(12), range(12))
        ax.set_xticks(range(12), words, rotation=45, ha="right", rotation_mode="anchor")
        style.finish(ax, "word", "count", "rotated")
    _save(fig)  # the axis-aligned boxes of 45° labels overlap; the labels themselves do not


def test_the_inline_backend_path_runs_the_check():
    """plt.show() and the end of a cell show a pyplot figure through IPython's print_figure (which
    calls canvas.print_figure, not savefig); that draw runs the check too."""
    pylabtools = pytest.importorskip("IPython.core.pylabtools")
    fig, ax = style.subplots(height=3.0, pyplot=True)
    with style.book_rc():
        ax.plot([0, 1], [0, 1])
        ax.text(0.5, 0.5, "off size", fontsize=14)
        style.finish(ax, "x", "y", "shown inline")
    try:
        with pytest.raises(ValueError, match="'off size' is 14 pt"):
            pylabtools.print_figure(fig, "png")
        with pytest.raises(ValueError, match="'off size' is 14 pt"):
            fig._repr_png_()
    finally:
        plt.close(fig)


def test_a_failed_save_leaves_no_file(tmp_path):
    fig, ax = _clean()
    ax.text(0.5, 0.2, "small print", fontsize=8)
    with pytest.raises(ValueError, match="small print"):
        fig.savefig(tmp_path / "figure.png", dpi=style.DPI)
    assert list(tmp_path.iterdir()) == []
    fig, ax = _clean()
    fig.savefig(tmp_path / "figure.png", dpi=style.DPI)
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_tolerances_are_a_pixel_or_two():
    assert layout_check.OVERLAP_PX <= 2 and layout_check.LEGEND_PX <= 2
    assert layout_check.MIN_PANEL_IN * style.DPI == 150


# ----------------------------------------------------------------------------- every figure function is checked
def _sweep_records() -> list[dict]:
    """Sweep records with the concept fields chapter 9's gender and survival figures read."""
    recs = []
    for act in ("topk", "abstopk"):
        for layer in (6, 9):
            for w in (1024, 4096):
                for k in (16, 32):
                    f = 0.5 + 0.1 * (act == "abstopk") + 0.01 * layer + w / 40960 + k / 320
                    recs.append({"activation": act, "layer": layer, "d_sae": w, "k": k, "seed": 0, "variant": "default",
                                 "train_tokens": 1_200_000, "heldout": {"fvu": 0.2 - w / 40960},
                                 "concepts": {"family": {
                                     "threshold_accuracy": f, "sign_survival": {"median_u_a": 2 * f, "median_u_b": -f,
                                                                                "median_bar": 1.5},
                                     "sign_latent": {"sign_accuracy": f, "coverage_a": f - 0.3, "coverage_b": f - 0.4,
                                                     "preact_sign_accuracy": f + 0.1, "bidirectional_share": f - 0.2}}}})
    return recs


def test_chapter_9_and_10_figure_functions_pass_on_records_shaped_like_the_book():
    from abstopk_mini.chapters import plots_lm
    from abstopk_mini.chapters import plots_steps as pst
    from test_plots_steps import RECS

    recs = _sweep_records()
    where = {"variant": "default", "seed": 0}
    for fig in (plots_sweep.gender_panels(recs, "d_sae", where | {"k": 32}, suptitle="gender axis against width"),
                plots_sweep.gender_panels(recs, "k", where | {"d_sae": 4096}),
                plots_sweep.survival(recs, "d_sae", where | {"k": 32, "activation": "abstopk"}, title="AbsTopK sign latent"),
                plots_sweep.metric_vs(recs, "d_sae", "heldout.fvu", where | {"k": 32}, title="FVU at k = 32"),
                plots_sweep.fvu_gap(recs, "d_sae", where | {"k": 32}, title="gap"),
                plots_sweep.doubling_curves(_doubling_hist()),
                pst.test_k_figure(RECS),
                plots_lm.concept_bars({"AbsTopK": {"sign_accuracy": 0.9, "threshold_accuracy": 0.8, "best_pair_accuracy": 0.85,
                                                   "dim_test_accuracy": 0.95},
                                       "TopK": {"sign_accuracy": 0.6, "threshold_accuracy": 0.85, "best_pair_accuracy": 0.9,
                                                "dim_test_accuracy": 0.95}})):
        assert _save(fig)[:4] == b"\x89PNG"



def _figure_functions() -> list[str]:
    """Every figure function of the book: the functions of abstopk_mini/chapters decorated with
    ``@style.styled`` (the decorator every figure function wears)."""
    names = []
    for path in sorted((ROOT / "abstopk_mini" / "chapters").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and any(ast.unparse(d) in ("style.styled", "styled")
                                                         for d in node.decorator_list):
                names.append(f"{path.stem}.{node.name}")
    return names


def test_every_figure_function_is_drawn_by_a_test():
    """tests/conftest.py saves every style.Figure a test makes (so the check runs on it; this file
    saves its own); this checks that each figure function is called by at least one test."""
    functions = _figure_functions()
    assert len(functions) >= 40 and "plots_sweep.doubling_curves" in functions and "plots_real.norm_histograms" in functions
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    missing = [f for f in functions if f"{f.split('.')[1]}(" not in sources]
    assert not missing, f"figure functions no test draws (so the layout check never runs on them): {missing}"


def test_conftest_draws_the_figures_a_test_makes():
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    assert "def _layout_check_every_book_figure" in conftest and "@pytest.fixture(autouse=True)" in conftest


# ----------------------------------------------------------------------------- colours
def _hue(hex_color: str) -> float:
    from test_plots_style import _lab

    _, a, b = _lab(hex_color)
    return math.degrees(math.atan2(b, a)) % 360


def test_issue31_gender_sides_are_far_in_hue_from_abstopk_and_topk():
    """AbsTopK red and TopK blue stand beside the gender sides in chapters 7-9; a side of the same
    hue (a navy beside TopK's blue) reads as that method whatever its ΔE."""
    close = []
    for side in ("male", "female"):
        for method in ("abstopk", "topk"):
            d = abs(_hue(style.GENDER_COLORS[side]) - _hue(style.color(method))) % 360
            d = min(d, 360 - d)
            if d < 45:
                close.append(f"{side} {style.GENDER_COLORS[side]} ~ {method} {style.color(method)} ({d:.0f}°)")
    assert not close, "gender colours share a hue with a method: " + "; ".join(close)

