"""Figures of the theory chapters: each returns a Figure whose axes are labelled and titled and
whose lines carry the data they were given."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import abstopk_mini as am
from abstopk_mini.chapters import experiments_theory as xt
from abstopk_mini.chapters import experiments_unrolled as xu
from abstopk_mini.chapters import plots_theory as pt


def assert_labelled(fig, n_axes):
    """n_axes visible axes, each with x label, y label and title (a hidden axes may hold a legend)."""
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.get_axes() if ax.axison]
    assert len(axes) == n_axes
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), ax
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_problem():
    D = xt.random_dictionary(16, 32, seed=0)
    z = xt.sparse_codes(40, 32, 2, seed=1)
    return z @ D.T, z, D


def test_convergence_figure(small_problem):
    x, _, D = small_problem
    curves = xt.convergence_curves(x, D, k=2, n_steps=20)
    fig = pt.convergence_figure(curves)
    assert_labelled(fig, 2)
    ista_line = fig.get_axes()[0].get_lines()[0]
    np.testing.assert_allclose(ista_line.get_ydata(), np.maximum(curves["ista"].numpy(), 1e-16))


def test_recovery_figure_has_one_line_per_method():
    rows = xt.recovery_sweep("k", [1, 2], d=16, P=32, n=20, n_steps=10)
    fig = pt.recovery_figure(rows, "k")
    assert_labelled(fig, 2)
    lines = fig.get_axes()[0].get_lines()
    assert [ln.get_label() for ln in lines] == list(xt.SOLVERS)
    assert len({ln.get_color() for ln in lines}) == len(lines), "each method needs its own colour"
    one = next(r["recovery"] for r in rows if r["method"] == "one step" and r["k"] == 1)
    assert lines[0].get_ydata()[0] == one


def test_prox_maps_figure_draws_the_six_maps():
    u = torch.linspace(-3, 3, 301)
    rest = [1.2, 0.5, 0.3]
    curves = xt.prox_map_curves(u, rest, lam=1.0, theta=1.0, k=2)
    fig = pt.prox_maps_figure(u, curves, lam=1.0, theta=1.0, k=2, rest=rest)
    assert_labelled(fig, 6)
    titles = [ax.get_title().split("\n")[0] for ax in fig.get_axes()]
    assert sorted(titles) == sorted(xt.PROX_MAPS)
    relu_ax = fig.get_axes()[titles.index("ReLU")]
    y = relu_ax.get_lines()[1].get_ydata()  # line 0 is the identity
    np.testing.assert_allclose(y, np.maximum(u.numpy() - 1.0, 0), atol=1e-6)


def test_signed_axis_figure():
    D = xt.random_dictionary(16, 8, seed=2)
    codes = xt.signed_axis_codes(D, axis=0, a_grid=torch.linspace(-1, 1, 21))
    fig = pt.signed_axis_figure(codes)
    assert_labelled(fig, 4)
    np.testing.assert_allclose(fig.get_axes()[0].get_lines()[0].get_ydata(), codes["abstopk"].numpy())


def test_solver_steps_figure(small_problem):
    x, z, D = small_problem
    rows = xu.solver_steps_sweep(x, z, D, 2, steps=(1, 2, 4))
    fig = pt.solver_steps_figure(rows)
    assert_labelled(fig, 2)
    assert len(fig.get_axes()[0].get_lines()) == 3


def test_unrolled_figure_from_a_tiny_sweep():
    x, z, D = am.toy.bidirectional_data(700, d=8, P=8, n_active=2, seed=0)
    rows = xu.unrolled_training_sweep(x[:600], x[600:], z[600:], D, k=2, activations=(("abstopk", 1),),
                                      steps=(1, 2), n_tokens=512, batch_size=128, seeds=(0, 1))
    fig = pt.unrolled_figure(rows)
    assert_labelled(fig, 3)
    key = [ax for ax in fig.get_axes() if not ax.axison]
    assert len(key) == 1 and key[0].get_legend() is not None
    labels = [t.get_text() for t in key[0].get_legend().get_texts()]
    assert any("trained with T" in s for s in labels) and any("trained with T=1" in s for s in labels)
