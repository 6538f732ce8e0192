"""Chapter 12's tables and figures from bench records (abstopk_mini.chapters.plots_yardstick): the layout
check runs on every figure drawn here, and the tables show what the records hold."""

from __future__ import annotations

import pytest

from abstopk_mini.chapters import plots_yardstick as py
from abstopk_mini.saebench.first_letter import LETTERS


def _record(activation: str, seed: int, recipe: str, base: float) -> dict:
    def cell(v):
        return {"mean": v, "sd": 0.02}

    probing = {task: {"sae": {str(k): cell(base + 0.01 * k) for k in (1, 2, 5, 20)},
                      "sae_abs": {str(k): cell(base + 0.02 + 0.01 * k) for k in (1, 2, 5, 20)},
                      "residual": {**{str(k): cell(0.55 + 0.01 * k) for k in (1, 2, 5, 20)}, "full": cell(0.9)}}
               for task in ("sentiment", "newsgroups")}
    letters = [{"letter": c, "probe_f1": 0.5 if i % 5 == 0 else 0.8, "n_true_positives": 10,
                "absorption_fraction": 0.1 + 0.01 * i, "full_absorption_rate": 0.05, "n_split": 1} for i, c in enumerate(LETTERS)]
    view = {"letters": letters, "n_letters": 20, "mean_absorption_fraction": base / 5, "std_absorption_fraction": 0.1,
            "mean_full_absorption": 0.05, "std_full_absorption": 0.02, "mean_num_split_features": 1.2}
    ns = (2, 5, 10, 20, 50, 100, 500)
    tpp = {v: {"overall": {str(n): {part: cell(base / 4 + 0.01 * i + (0.05 if v == "split" else 0))
                                    for part in ("total", "intended", "unintended")} for i, n in enumerate(ns)}}
           for v in ("signed", "split")}
    return {"activation": activation, "made": {"seed": seed, "recipe": recipe}, "sparse_probing": probing,
            "absorption": {"signed": view, "split": view}, "tpp": tpp}


RECORDS = [_record("topk", 0, "ours", 0.6), _record("abstopk", 0, "ours", 0.58), _record("batchabstopk", 0, "paper", 0.5),
           _record("topk", 1, "ours", 0.64)]


def test_probing_figure_and_table():
    fig = py.probing_figure(RECORDS)
    fig.canvas.draw()  # the book's layout check runs at draw time
    assert [ax.get_title() for ax in fig.axes] == ["sentiment (movie reviews)", "topic (newsgroups)"]
    table = py.probing_table(RECORDS)
    assert len(table.rows) == 8 and table.rows[0]["z, k=1"] == pytest.approx(0.61)
    assert table.rows[0]["SAE"] == "TopK (seed 0, our recipe)"
    assert py.sae_label(RECORDS[2]) == "BatchAbsTopK (seed 0, the paper's recipe)"


def test_absorption_figure_and_table():
    fig = py.absorption_figure(RECORDS, "split")
    fig.canvas.draw()
    bars = [p for p in fig.axes[0].patches]
    assert len(bars) == 3 * sum(i % 5 != 0 for i in range(26))  # one bar per kind; letters of probe F1 <= 0.6 left out
    table = py.absorption_table(RECORDS)
    assert len(table.rows) == 8 and table.rows[1]["view"] == "each sign its own latent"


def test_kinds_group_seeds():
    groups = py.kinds(RECORDS)
    assert list(groups) == ["TopK (our recipe)", "AbsTopK (our recipe)", "BatchAbsTopK (the paper's recipe)"]
    assert [r["made"]["seed"] for r in groups["TopK (our recipe)"]] == [0, 1]


def test_tpp_figure_and_table():
    fig = py.tpp_figure(RECORDS)
    fig.canvas.draw()
    lines = [l for l in fig.axes[0].get_lines() if not l.get_label().startswith("_")]
    # TopK: split view only (one line); the signed kinds: both views
    assert [l.get_label() for l in lines] == ["TopK (our recipe)", "AbsTopK (our recipe)",
                                              "AbsTopK (our recipe), codes as they are",
                                              "BatchAbsTopK (the paper's recipe)",
                                              "BatchAbsTopK (the paper's recipe), codes as they are"]
    # the kind's line is the mean over its seeds: TopK at N = 2, split view: (0.15 + 0.05 + 0.16 + 0.05) / 2
    assert lines[0].get_ydata()[0] == pytest.approx((0.6 / 4 + 0.64 / 4) / 2 + 0.05)
    table = py.tpp_table(RECORDS)
    assert len(table.rows) == 8 and table.rows[0]["TPP, N=20"] == pytest.approx(0.6 / 4 + 0.03)
