"""am.exercises: each check passes the package's own answer and names the usual mistakes."""

import math

import pytest
import torch

import abstopk_mini as am
from abstopk_mini import exercises as ex


def test_the_package_passes_every_check(capsys):
    ex.check_abs_topk(am.prox.abs_topk)
    ex.check_prox_l0_nonneg(lambda u, lam: am.prox.hard_threshold(u, math.sqrt(2 * lam), nonneg=True))
    ex.check_iht(lambda x, D, k, n: am.unroll.iht(x, D, k, n))
    ex.check_twin(am.coding.doubling.doubled_topk)
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize("wrong, says", [
    (lambda u, k: am.prox.topk(u, k), "select by \\|u\\|"),
    (lambda u, k: am.prox.abs_topk(u, k).abs(), "lost their sign"),
    (lambda u, k: u, "non-zeros for k="),
    (lambda u, k: am.prox.abs_topk(u, k).flatten(), "shape"),
])
def test_abs_topk_mistakes(wrong, says):
    with pytest.raises(AssertionError, match=says):
        ex.check_abs_topk(wrong)


@pytest.mark.parametrize("wrong, says", [
    (lambda u, lam: am.prox.hard_threshold(u, lam, nonneg=True), "threshold is √\\(2λ\\)"),
    (lambda u, lam: am.prox.hard_threshold(u, math.sqrt(2 * lam)), "negative entries"),
    (lambda u, lam: torch.relu(u - math.sqrt(2 * lam)), "shrank"),
])
def test_prox_mistakes(wrong, says):
    with pytest.raises(AssertionError, match=says):
        ex.check_prox_l0_nonneg(wrong)


def test_iht_mistakes():
    with pytest.raises(AssertionError, match="wrong sign"):
        ex.check_iht(lambda x, D, k, n: am.unroll.iht(-x, D, k, n))
    with pytest.raises(AssertionError, match="not sparse"):
        ex.check_iht(lambda x, D, k, n: x @ D)
    with pytest.raises(AssertionError, match="\\[B, P\\]"):
        ex.check_iht(lambda x, D, k, n: am.unroll.iht(x, D, k, n).T)
    with pytest.raises(TypeError, match="your function itself"):
        ex.check_iht(am.unroll.iht(torch.zeros(1, 2), torch.eye(2), 1, 1))


def test_twin_mistakes():
    def no_negated_decoder(sae):
        t = am.coding.doubling.doubled_topk(sae)
        with torch.no_grad():
            t.W_dec[sae.cfg.d_sae:] *= -1
        return t

    def plain_copy(sae):
        t = am.coding.doubling.doubled_topk(sae)
        with torch.no_grad():
            t.W_enc[:, sae.cfg.d_sae:] *= -1
        return t

    with pytest.raises(AssertionError, match="−W_dec"):
        ex.check_twin(no_negated_decoder)
    with pytest.raises(AssertionError, match="−W_enc"):
        ex.check_twin(plain_copy)
    with pytest.raises(AssertionError, match="2P = 40"):
        ex.check_twin(lambda sae: sae)


def test_ista_check_and_its_mistakes():
    ex.check_ista(lambda x, D, lam, n, nonneg: am.unroll.ista(x, D, lam, n, nonneg=nonneg))
    with pytest.raises(AssertionError, match="step 1"):
        ex.check_ista(lambda x, D, lam, n, nonneg: am.unroll.ista(x, D, lam, n, nonneg=nonneg, step=1.0))

    def two_sided(x, D, lam, n, nonneg):
        return am.unroll.ista(x, D, lam, n, nonneg=False)

    with pytest.raises(AssertionError, match="negative entries"):
        ex.check_ista(two_sided)
