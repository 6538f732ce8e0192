"""Figures (abstopk_mini.chapters.plots) and the chapter-04 experiments and widget (abstopk_mini.chapters.widgets).

Figures: each returns a Figure whose axes have an x label, a y label and a title, and renders to
PNG. The geometry behind them is checked on dictionaries built by hand (a permuted, sign-flipped
copy of the truth; a ± pair per axis), the experiments against toy_benchmark and against an SAE
whose weights are the closed-form answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import abstopk_mini as am
from abstopk_mini.chapters import plots, widgets


def _sae(activation: str, W_dec: torch.Tensor, k: int, W_enc: torch.Tensor | None = None) -> am.SAE:
    """An SAE with the given decoder rows [d_sae, d_in] (and encoder [d_in, d_sae], default W_dec.T)."""
    cfg = am.SAEConfig(d_in=W_dec.shape[1], d_sae=W_dec.shape[0], activation=activation, k=k, device="cpu")
    sae = am.SAE(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(W_dec)
        sae.W_enc.copy_(W_dec.T if W_enc is None else W_enc)
    return sae


def _check_labelled(fig) -> None:
    assert isinstance(fig, Figure)
    main = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    assert main, "figure has no axes"
    for ax in main:
        assert ax.get_xlabel().strip(), f"axes {ax} has no x label"
        assert ax.get_ylabel().strip(), f"axes {ax} has no y label"
        assert ax.get_title().strip(), f"axes {ax} has no title"
    for ax in fig.axes:
        if hasattr(ax, "_colorbar"):
            assert ax._colorbar.ax.get_ylabel().strip() or ax._colorbar.ax.get_xlabel().strip(), "unlabelled colour bar"
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _unit_columns(d, P, seed=0):
    D = torch.randn(d, P, generator=torch.Generator().manual_seed(seed))
    return D / D.norm(dim=0, keepdim=True)


# ------------------------------------------------------------------ geometry helpers


def test_order_atoms_undoes_a_known_permutation():
    D = _unit_columns(12, 5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    learned = torch.cat([D[:, perm], -D[:, perm[[2, 0]]]], dim=1)  # 5 atoms shuffled + the negatives of two
    order = plots.order_atoms(D, learned)
    inv = torch.argsort(perm)  # the learned column holding axis i
    assert order[:5].tolist() == inv.tolist()
    # the two negatives follow, grouped by axis: -d_3 (axis perm[0]) comes before -d_4 (axis perm[2])
    assert order[5:].tolist() == [6, 5]
    assert sorted(order.tolist()) == list(range(7))


def test_axis_latents_signed_and_nonnegative():
    D = _unit_columns(10, 4, seed=1)
    g = D[:, 2]
    W = torch.stack([D[:, 0], -g, D[:, 1], g * 0.6 + D[:, 3] * 0.8])  # rows: atoms
    assert plots.axis_latents(W.T, g, signed=True) == [(1, pytest.approx(-1.0, abs=1e-6))]
    picks = plots.axis_latents(W.T, g, signed=False)
    assert [i for i, _ in picks] == [3, 1]  # most along +g, most along -g
    assert picks[1][1] == pytest.approx(-1.0, abs=1e-6)
    sae = _sae("abstopk", W / W.norm(dim=1, keepdim=True), k=2)
    assert [i for i, _ in plots.axis_latents(sae, g)] == [1]  # reads cfg.signed


# ------------------------------------------------------------------ figures


def test_cosine_heatmaps_flip_signed_atoms_and_show_pairs():
    P, d = 4, 9
    D = _unit_columns(d, P, seed=2)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0])
    abs_sae = _sae("abstopk", (D * signs).T[[2, 0, 3, 1]], k=2)
    top_sae = _sae("topk", torch.cat([D, -D], dim=1).T, k=2)
    rows = {"topk": dict(mcc=1.0, fvu=0.0, split_axes=P)}
    fig = plots.cosine_heatmaps(D, {"abstopk": abs_sae, "topk": top_sae}, rows, axis_labels=list("abcd"))
    _check_labelled(fig)
    main = [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]
    C_abs = np.asarray(main[0].images[0].get_array())
    C_top = np.asarray(main[1].images[0].get_array())
    np.testing.assert_allclose(np.diag(C_abs), 1.0, atol=1e-6)  # flipped to +1 and matched onto the diagonal
    np.testing.assert_allclose(np.diag(C_top[:, :P]), 1.0, atol=1e-6)  # +d_i first (signed matching)
    np.testing.assert_allclose(np.diag(C_top[:, P:]), -1.0, atol=1e-6)  # then the -d_i partners
    assert "MCC 1.00" in main[1].get_title()


def test_gender_figures_are_labelled():
    x, words, gender, D, concepts = am.toy.gender_data(900, seed=0)
    _check_labelled(plots.gender_axis_figure(x, words, D, concepts, per_word=20))
    saes = {name: am.SAE(am.SAEConfig(d_in=32, d_sae=8, activation=name, k=3, device="cpu"))
            for name in ("abstopk", "topk")}
    _check_labelled(plots.axis_latent_figure(saes, x, words, D[:, -1], list(am.toy.GENDER_CONCEPTS)))
    _check_labelled(plots.cosine_heatmaps(D, saes, axis_labels=concepts))
    with pytest.raises(ValueError, match="words"):
        plots.gender_axis_figure(x, words[:-1], D, concepts)


def test_antipodal_and_sweep_figures_are_labelled():
    D = _unit_columns(8, 4, seed=3)
    pairs = _sae("topk", torch.cat([D, -D], dim=1).T, k=2)
    fig = plots.antipodal_figure({"pairs": pairs, "plain": _sae("abstopk", D.T, k=2)})
    _check_labelled(fig)
    assert "4 pairs" in fig.legends[0].get_texts()[0].get_text()
    rows = [dict(activation=a, d_sae=w, fvu=f, mcc=m, split_axes=s)
            for a, w, f, m, s in [("topk", 4, 0.4, 0.7, 0), ("topk", 8, 0.1, 0.9, 3), ("abstopk", 4, 0.05, 0.95, 0)]]
    _check_labelled(plots.width_sweep_figure(rows, P=4))
    with pytest.raises(ValueError, match="rows"):
        plots.width_sweep_figure([], P=4)


# ------------------------------------------------------------------ experiments


def test_toy_fit_reproduces_toy_benchmark_rows():
    setting = dict(d=8, P=4, n_active=2, n_samples=1500, n_tokens=12_800, batch_size=128, seed=0)
    runs = (("abstopk", 1), ("topk", 2))
    with widgets.single_thread():  # toy_fit trains on one thread: same arithmetic, same numbers
        bench = am.toy.toy_benchmark(runs=runs, **setting)
    x, _, D = am.toy.bidirectional_data(setting["n_samples"] + 10_000, 8, 4, 2, seed=0)
    fit = widgets.toy_fit(runs, x[:1500], x[1500:], D, k=2, n_tokens=12_800, batch_size=128, seed=0)
    for a, b in zip(bench, fit):
        assert isinstance(b.pop("sae"), am.SAE)
        a.pop("seconds"), b.pop("seconds")
        assert a.keys() == b.keys()
        text = {key for key, v in a.items() if isinstance(v, str)}  # pytest.approx rejects strings
        assert {key: a[key] for key in text} == {key: b[key] for key in text}
        assert {key: a[key] for key in a.keys() - text} == pytest.approx({key: b[key] for key in b.keys() - text}, rel=1e-6)
    with pytest.raises(ValueError, match="d_sae"):
        widgets.toy_fit((("topk", 0.25),), x[:100], x[100:200], D, k=2, n_tokens=100)


def test_axis_summary_on_closed_form_saes():
    """An SAE whose decoder is the true dictionary and whose encoder is its pseudo-inverse codes
    the gender toy exactly (up to noise): the gender latent reads +1 / 0 / -1."""
    x, words, gender, D, concepts = am.toy.gender_data(3000, noise=0.01, seed=1)
    E = torch.linalg.pinv(D.double()).float()  # [C, d]: least-squares coefficients
    signed = _sae("abstopk", D.T.contiguous(), k=3, W_enc=E.T.contiguous())
    s = widgets.axis_summary(signed, x, gender, D[:, -1])
    assert s["n_latents"] == 1 and s["pair_cos"] is None and s["latents"][0][0] == len(concepts) - 1
    assert s["pos"] == pytest.approx(1.0, abs=0.02)
    assert s["zero"] == pytest.approx(0.0, abs=0.02)
    assert s["neg"] == pytest.approx(-1.0, abs=0.02)
    # nonnegative: a second latent with atom -g and encoder -(the g row)
    W_dec = torch.cat([D.T, -D[:, -1:].T])
    W_enc = torch.cat([E, -E[-1:]]).T.contiguous()
    split = widgets.axis_summary(_sae("topk", W_dec, k=3, W_enc=W_enc), x, gender, D[:, -1])
    assert split["n_latents"] == 2 and split["pair_cos"] == pytest.approx(-1.0, abs=1e-6)
    assert split["pos"] == pytest.approx(1.0, abs=0.02)  # the +g latent fires on male words only
    assert split["neg"] == pytest.approx(0.0, abs=0.02)


def test_gender_fit_trains_every_activation():
    out = widgets.gender_fit(("abstopk", "topk"), d_sae=8, k=3, n_samples=600, n_tokens=6_000, seed=0)
    assert set(out["saes"]) == {"abstopk", "topk"} and out["x"].shape == (600, 32)
    assert out["saes"]["abstopk"].cfg.signed and not out["saes"]["topk"].cfg.signed
    assert set(out["summary"]["topk"]) >= {"n_latents", "pos", "zero", "neg", "pair_cos"}


# ------------------------------------------------------------------ the widget


def test_single_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    with widgets.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_toy_widget_builds_and_retrains():
    pytest.importorskip("ipywidgets")
    box = widgets.toy_widget(P=4, width_mult=1.0, k=2, n_tokens=3_000)
    k_slider, w_slider, p_slider, status, button, out = box.children
    assert (k_slider.value, w_slider.value, p_slider.value) == (2, 1.0, 4)
    w_slider.value = 2.0
    button.click()
    assert "P=4, d_sae=8, k=2" in status.value and "trained in" in status.value
    assert not button.disabled
    with pytest.raises(ValueError, match="width_mult"):
        widgets.toy_widget(width_mult=0.7)


def test_toy_pair_and_its_figure():
    result = widgets.toy_pair(P=4, width_mult=1.5, k=2, n_samples=800, n_tokens=3_000)
    assert [r["activation"] for r in result["rows"]] == ["abstopk", "topk"]
    assert all(r["d_sae"] == 6 for r in result["rows"]) and result["D_true"].shape == (8, 4)
    _check_labelled(widgets.toy_pair_figure(result))


def test_table_shows_rows_as_html_and_text():
    rows = [dict(activation="topk", d_sae=64, fvu=0.12345, pair=None, sae=object()),
            dict(activation="abstopk", d_sae=32, fvu=0.0, pair=-0.999, sae=object())]
    table = plots.Table(rows)
    assert table.columns == ["activation", "d_sae", "fvu", "pair"]  # the object column is left out
    html = table._repr_html_()
    assert html.count("<tr>") == 3 and ">FVU</th>" in html and ">width</th>" in html and ">0.123</td>" in html and ">-</td>" in html
    lines = repr(table).splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1  # right-aligned columns
    assert lines[2].split() == ["abstopk", "32", "0.000", "-0.999"]
    with pytest.raises(ValueError, match="empty"):
        plots.Table([])
    with pytest.raises(ValueError, match="mcc"):
        plots.Table(rows, ["activation", "mcc"])


def test_table_column_formats():
    table = plots.Table([dict(activation="relu", seconds=36.34, fvu=0.1)], formats={"seconds": ".0f"})
    assert repr(table).splitlines()[1].split() == ["relu", "36", "0.100"]
