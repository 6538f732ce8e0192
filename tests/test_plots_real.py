"""Figures of chapters 5-6: every panel labelled and titled, and the plotted data are the input."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from abstopk_mini.chapters import plots_real as P  # noqa: E402
from abstopk_mini.chapters import style  # noqa: E402


def _labelled(fig):
    for ax in fig.axes:
        xlabel = ax.get_xlabel() or (fig._supxlabel.get_text() if fig._supxlabel is not None else "")
        assert xlabel and ax.get_ylabel(), f"unlabelled axes in {fig}"
    assert any(ax.get_title() for ax in fig.axes) or fig._suptitle is not None


def _line(ax, label):
    return next(line for line in ax.get_lines() if line.get_label() == label)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _layer_rows():
    return [{"layer": L, "norm_q01": 1 + L, "norm_median": 10 + L, "norm_q99": 100 + L, "bos_norm": 1000.0 * (L + 1),
             "mean_share": 0.5 + 0.1 * L, "top_dim_share": 0.2, "top_var_share": 0.1 * L, "kurtosis_max": 50.0 * L, "kurtosis_median": 0.3,
             "participation_ratio": 2.0 + L} for L in range(4)]


def test_layer_stats_plots_the_rows():
    rows = _layer_rows()
    fig = P.layer_stats(rows, title="t")
    _labelled(fig)
    assert len(fig.axes) == 4
    np.testing.assert_allclose(_line(fig.axes[0], "BOS position").get_ydata(), [r["bos_norm"] for r in rows])
    np.testing.assert_allclose(_line(fig.axes[1], "‖mean‖² / mean ‖x‖²").get_ydata(), [0.5, 0.6, 0.7, 0.8])
    np.testing.assert_allclose(_line(fig.axes[1], "top coordinate's\nshare of tr Σ").get_ydata(), [0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(_line(fig.axes[3], "(tr Σ)² / tr Σ²").get_xdata(), [0, 1, 2, 3])


def test_layer_table_shows_the_quoted_columns_and_folds_the_band():
    rows = [dict(r, top_dim=163, bos_ratio=r["bos_norm"] / r["norm_median"]) for r in _layer_rows()]
    rows[2]["norm_median"] = 3430.4
    table = P.layer_table(rows)
    assert table.columns == [head for _, head, _ in P.LAYER_COLUMNS]
    assert table.key == list(P.LAYER_KEY) and "1 %" not in table.key and "99 %" in table.columns
    cells = table.cells()
    assert cells[2][table.columns.index("median ‖x‖")] == "3,430"
    assert cells[1][table.columns.index("BOS / median")] == f"{2000 / 11:.1f}"
    assert cells[3][table.columns.index("top coord.")] == "163"
    html = table._repr_html_()
    page, folded = html.split("<details", 1)
    assert "<th>99 %</th>" not in page and "<th>99 %</th>" in folded and "<th>PR</th>" in page
    text = repr(table)  # the text view prints every column
    assert all(head in text for head in table.columns)
    assert max(len(line) for line in text.splitlines()) < 110
    with pytest.raises(ValueError, match="rows is empty"):
        P.layer_table([])


def test_corpus_table_counts_with_separators():
    rows = [{"source": "wiki", "train_docs": 86, "train_tokens": 476652, "heldout_docs": 10, "heldout_tokens": 66546},
            {"source": "total", "train_docs": 86, "train_tokens": 476652, "heldout_docs": 10, "heldout_tokens": 66546}]
    table = P.corpus_table(rows)
    assert table.columns == ["source", "train docs", "train tokens", "held-out docs", "held-out tokens"]
    assert table.cells()[0] == ["wiki", "86", "476,652", "10", "66,546"]
    with pytest.raises(ValueError, match="rows is empty"):
        P.corpus_table([])


def test_norm_histograms_and_position_profile():
    g = torch.Generator().manual_seed(0)
    fig = P.norm_histograms({"tokens": torch.rand(500, generator=g) * 10 + 1, "BOS": torch.tensor([300.0, 400.0])})
    _labelled(fig)
    assert fig.axes[0].get_xscale() == "log"
    assert len(fig.axes[0].patches) == 2  # one filled step outline per group
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["tokens (n=500)", "BOS (n=2)"]
    with pytest.raises(ValueError, match="no norms"):
        P.norm_histograms({"a": torch.empty(0)})
    curve = torch.tensor([5.0, 2.0, float("nan"), 3.0])
    fig = P.position_profile({"layer 6": curve})
    _labelled(fig)
    np.testing.assert_allclose(_line(fig.axes[0], "layer 6").get_ydata(), curve.numpy())


def _hist(n=5, fvu0=1.0):
    return {"tokens": [100 * (i + 1) for i in range(n)], "fvu": [fvu0 / (i + 1) for i in range(n)],
            "l0": [32.0] * n, "dead_frac": [0.1 * i for i in range(n)]}


def test_training_curves():
    fig = P.training_curves({"topk-k32": _hist(), "abstopk-k32": _hist(fvu0=0.5)})
    _labelled(fig)
    ax_fvu, ax_l0, ax_dead = fig.axes
    line = _line(ax_fvu, "AbsTopK")  # one k: the activation's label alone
    np.testing.assert_allclose(line.get_ydata(), [0.5 / (i + 1) for i in range(5)])
    np.testing.assert_allclose(line.get_xdata(), [1e-4 * (i + 1) for i in range(5)])  # tokens in millions
    assert line.get_linestyle() == "--" and _line(ax_fvu, "TopK").get_linestyle() == "-"
    assert ax_fvu.get_yscale() == ax_l0.get_yscale() == "log"
    np.testing.assert_allclose(_line(ax_dead, "TopK").get_ydata(), [0, 10, 20, 30, 40])
    family = ("relu", "jumprelu", "absjumprelu", "topk", "batchtopk", "abstopk", "batchabstopk")
    fig = P.training_curves({f"{a}-k32": _hist() for a in family})  # chapter 6's seven: the legend fits the width
    pad = 2 * 0.1  # inches: the inline backend saves the tight box with matplotlib's default pad_inches each side
    assert (fig.get_tightbbox(fig.canvas.get_renderer()).width + pad) * style.DPI <= style.MAX_PX


def test_sae_labels_name_k_only_when_it_varies():
    assert P.sae_labels(["topk-k32", "abstopk-k32"]) == {"topk-k32": "TopK", "abstopk-k32": "AbsTopK"}
    assert P.sae_labels(["topk-k16", "topk-k64", "tokens"]) == {"topk-k16": "TopK, k = 16", "topk-k64": "TopK, k = 64",
                                                                 "tokens": "tokens"}


def test_log_ticks_are_one_two_five_values_inside_the_range():
    assert P._log_ticks(0.0566, 0.6461) == [0.1, 0.2, 0.5]
    assert P._log_ticks(0.07, 0.09) == [0.05, 0.1]  # too narrow for two inside: the neighbours
    assert P._log_ticks(1.2, 4096) == [10, 100, 1000]  # several decades: powers of ten only


def _rows():
    rows = []
    for act, base in (("topk", 0.2), ("abstopk", 0.15)):
        for k in (16, 32, 64):
            rows.append({"activation": act, "k": k, "l0": float(k), "fvu": base * 32 / k, "dead_frac": 0.01 * k / 16,
                         "loss_recovered": 1 - base * 16 / k})
    rows.append({"activation": "relu", "k": 32, "l0": 40.0, "fvu": 0.3, "dead_frac": 0.0, "loss_recovered": 0.8})
    return rows


def test_frontier_points_are_sorted_by_l0():
    fig = P.frontier(_rows())
    _labelled(fig)
    assert len(fig.axes) == 2
    line = _line(fig.axes[0], "AbsTopK")
    np.testing.assert_allclose(line.get_xdata(), [16, 32, 64])
    np.testing.assert_allclose(line.get_ydata(), [0.3, 0.15, 0.075])
    np.testing.assert_allclose(_line(fig.axes[1], "ReLU").get_ydata(), [0.8])
    one = P.frontier([{k: v for k, v in r.items() if k != "loss_recovered"} for r in _rows()])
    assert len(one.axes) == 1  # without loss recovered: FVU panel only


def test_k_comparison_three_panels():
    fig = P.k_comparison(_rows())
    _labelled(fig)
    fvu, lr, dead = fig.axes
    np.testing.assert_allclose(_line(fvu, "TopK").get_ydata(), [0.4, 0.2, 0.1])
    np.testing.assert_allclose(_line(lr, "AbsTopK").get_ydata(), [0.85, 0.925, 0.9625])
    np.testing.assert_allclose(_line(dead, "TopK").get_ydata(), [1, 2, 4])
    assert "ReLU" not in [line.get_label() for line in fvu.get_lines()]


def test_firing_and_sign_histograms_count_latents():
    rate = torch.tensor([0.0, 0.0, 1e-3, 1e-2, 0.1, 0.5])
    fig = P.firing_histograms({"topk-k32": rate, "abstopk-k32": torch.tensor([1e-4, 0.2, 0.3, 0.0])})
    _labelled(fig)
    ax = fig.axes[0]
    bars = [p.get_height() for p in ax.patches]
    assert sum(bars[:-1]) == 4 and bars[-1] == 2  # 4 alive latents in the histogram, a bar of 2 dead
    assert ax.texts[0].get_text() == "TopK: 2 dead of 6"
    st = {"abstopk-k32": {"n_fire": torch.tensor([10, 10, 0, 4]), "n_neg": torch.tensor([0, 5, 0, 4])}}
    fig = P.negative_share_histograms(st)
    _labelled(fig)
    counts = [p for p in fig.axes[0].patches]
    assert counts and fig.axes[0].get_legend().get_texts()[0].get_text() == "AbsTopK (3 alive)"
    with pytest.raises(ValueError, match="empty"):
        P.firing_histograms({})


def test_k_table_pairs_topk_and_abstopk_at_each_k():
    rows = [{"activation": a, "k": k, "fvu": f, "loss_recovered": lr, "dead_frac": d}
            for a, k, f, lr, d in [("topk", 16, 0.10, 0.926, 0.262), ("abstopk", 16, 0.1115, 0.912, 0.263),
                                   ("topk", 32, 0.0756, 0.943, 0.114), ("abstopk", 32, 0.0825, 0.937, 0.004),
                                   ("relu", 32, 0.6, 0.6, 0.0), ("topk", 64, 0.05, 0.95, 0.05)]]  # 64: TopK only
    table = P.k_table(rows)
    assert [r["k"] for r in table.rows] == [16, 32]
    assert table.columns == ["k", "FVU TopK", "FVU AbsTopK", "gap %", "loss rec. TopK", "loss rec. AbsTopK",
                             "dead % TopK", "dead % AbsTopK"]
    assert table.cells()[1] == ["32", "0.0756", "0.0825", "+9.1", "0.943", "0.937", "11.4", "0.4"]
    assert table.cells()[0][3] == "+11.5"
    with pytest.raises(ValueError, match="no k has both"):
        P.k_table(rows, signed="batchabstopk")
