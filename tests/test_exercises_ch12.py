"""Chapter 12's exercises: the k latents a sparse probe reads, one token's absorption fraction, and each
latent's effect on a TPP probe (issue 34).

The right answers below are written here from the definitions (SAEBench's selection rule; its
absorption rule as the chapter states it), not taken from the package, so a check that only compared
with the package could not pass them by sharing its bug. Each check meets wrong implementations a
learner plausibly writes and must reject each with a message naming that mistake.
"""

import importlib

import pytest
import torch

from abstopk_mini import exercises as ex
from abstopk_mini.exercises import yardstick as exy

from conftest import check_rejects, mutation_cases, readers_lines

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- right answers, written here
def right_top_k(x, y, k, *, signed=False, descending=True, order=True, means=True):
    pos, neg = x[y == 1], x[y == 0]
    diff = (pos.mean(0) - neg.mean(0)) if means else (pos.sum(0) - neg.sum(0))
    score = diff if signed else diff.abs()
    idx = torch.argsort(score, descending=descending)[:k]
    return idx.sort().values if order else idx


def right_absorption(x, codes, W_dec, probe, main, *, share=0.4, absorbers=3, use_abs=False, with_main=False,
                     cos_min=0.1, p_from_recon=False):
    p = probe.double() / probe.double().norm()
    W = W_dec.double()
    cos = (W @ p) / W.norm(dim=1)
    s = codes.double() * cos
    P = (codes.double() @ W) @ p if p_from_recon else x.double() @ p
    is_main = torch.zeros(len(cos), dtype=torch.bool)
    is_main[main] = True
    M = s[:, is_main].sum(1)
    keep = (cos >= cos_min) & (~is_main if not with_main else torch.ones_like(is_main))
    cand = s.abs() if use_abs else s
    cand = torch.where(keep & (cand > 0), cand, torch.zeros(()))
    T = cand.topk(min(absorbers, len(cos)), dim=1).values.sum(1)
    a = torch.minimum(T, P - M)
    out = torch.where(M <= 0, torch.ones_like(P), (a / (a + M)).clamp(0, 1))
    return torch.where((M >= P) | (T / P < share), torch.zeros_like(P), out)


def right_effects(codes, y, directions, weight, *, clip=True, absolute=False, align=True, abs_align=False,
                  clip_product=False, means=True):
    pos, neg = codes[y == 1].double(), codes[y == 0].double()
    diff = (pos.mean(0) - neg.mean(0)) if means else (pos.sum(0) - neg.sum(0))
    if absolute:
        diff = diff.abs()
    elif clip and not clip_product:
        diff = diff.clamp(min=0)
    a = directions.double() @ weight.double() if align else torch.ones(codes.shape[1], dtype=torch.float64)
    e = diff * (a.abs() if abs_align else a)
    return e.clamp(min=0) if clip_product else e


def test_independent_references_on_hand_worked_cases():
    x = torch.tensor([[1.0, 0.0, 5.0], [1.0, 3.0, 5.0], [0.0, 0.0, 5.0], [0.0, 0.0, 5.0]])
    y = torch.tensor([1, 1, 0, 0])
    assert exy.top_k_loop(x.numpy(), y.numpy(), 1) == [1]  # |1.5 - 0| > |1 - 0| > 0
    assert exy.top_k_loop(x.numpy(), y.numpy(), 2) == [0, 1]
    W, probe = torch.eye(2), torch.tensor([1.0, 0.0])
    # main latent 0 silent, latent 1 orthogonal: nothing absorbs -> 0; main carries P -> 0
    assert exy.absorption_loop(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]]), W, probe, [0]) == [0.0]
    W2 = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    # latent 1 (cos 0.8) carries 0.8·2.5 = 2 of P = 2 while the main latent is silent -> 1
    assert exy.absorption_loop(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.5]]), W2, probe, [0]) == [1.0]
    # main carries 1 of P = 2, latent 1 carries 1.2 -> a = min(1.2, 2 - 1) = 1, fraction 1 / 2
    assert exy.absorption_loop(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.5]]), W2, probe, [0]) == \
        pytest.approx([0.5])


def test_right_answers_written_here_pass(capsys):
    ex.check_top_k(right_top_k)
    ex.check_absorption(right_absorption)
    ex.check_tpp_effects(right_effects)
    readers_lines(capsys, 3)


def test_effects_loop_by_hand():
    codes = torch.tensor([[2.0, 0.0, -1.0], [4.0, 1.0, -3.0], [0.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([1, 1, 0, 0])
    D, w = torch.eye(3), torch.tensor([0.5, 1.0, -2.0])
    # latent 0: rises by 3, aligned 0.5 -> 1.5; latent 1: falls -> 0; latent 2: falls (negative codes) -> 0
    assert exy.effects_loop(codes, y, D, w) == pytest.approx([1.5, 0.0, 0.0])
    # without the clip, latent 2's fall of 2 along a direction the probe reads at -2 would count +4
    assert exy.effects_loop(codes, y, D, w, rule="no_clip") == pytest.approx([1.5, -1.5, 4.0])


def test_each_effects_mistake_changes_the_effects():
    for said, a, y, D, w in exy._effects_cases():
        right = exy.effects_loop(a, y, D, w)
        assert any(e > 0 for e in right) and any(e < 0 for e in right) and any(e == 0 for e in right), said
        for rule in exy._EFFECT_MISTAKES:
            assert exy.effects_loop(a, y, D, w, rule=rule) != pytest.approx(right), (said, rule)


def test_each_absorption_mistake_changes_the_fractions():
    """The check names a mistake by the variant of the rule that reproduces the reader's fractions:
    each variant must differ from the rule on the check's cases."""
    for said, x, z, W, probe, main in exy._absorption_cases():
        right = exy.absorption_loop(x, z, W, probe, main)
        assert 0 < sum(f > 0 for f in right) < len(right), said  # absorbed and unabsorbed tokens
    x, z, W, probe, main = exy._absorption_cases()[0][1:]
    right = exy.absorption_loop(x, z, W, probe, main)
    variants = [tuple(exy.absorption_loop(x, z, W, probe, main, rule=r)) for r in exy._ABSORPTION_MISTAKES]
    assert all(v != tuple(right) for v in variants)


# ----------------------------------------------------------------------------- mutations
def _absorb_with(**kw):
    return lambda x, z, W, p, main: right_absorption(x, z, W, p, main, **kw)


MUTATIONS = {
    "check_top_k": [
        ("signed difference", lambda x, y, k: right_top_k(x, y, k, signed=True), "signed difference"),
        ("smallest differences", lambda x, y, k: right_top_k(x, y, k, descending=False), "k smallest"),
        ("sums not means", lambda x, y, k: right_top_k(x, y, k, means=False), "sums, not means"),
        ("unsorted", lambda x, y, k: right_top_k(x, y, k, order=False), "ascending order"),
        ("positives' mean only", lambda x, y, k: torch.argsort(x[y == 1].mean(0).abs(), descending=True)[:k].sort().values,
         "positives' mean alone"),
        ("a mask, not indices", lambda x, y, k: torch.zeros(x.shape[1], dtype=torch.bool), "integer indices"),
    ],
    "check_absorption": [
        ("no 0.4 share", _absorb_with(share=-1e9), r"T / P >= 0.4"),
        ("|s| absorbers", _absorb_with(use_abs=True), r"s_j > 0"),
        ("main counted as absorber", _absorb_with(with_main=True), "leave them out of T"),
        ("no cosine threshold", _absorb_with(cos_min=-2.0), r">= 0.1"),
        ("every absorber summed", _absorb_with(absorbers=10_000), "at most the 3 largest"),
        ("P from the reconstruction", _absorb_with(p_from_recon=True), "not the reconstruction's"),
        ("one number", lambda x, z, W, p, main: right_absorption(x, z, W, p, main).mean(), "one fraction per token"),
    ],
    "check_tpp_effects": [
        ("no clip", lambda a, y, D, w: right_effects(a, y, D, w, clip=False), "clip the mean difference at 0"),
        ("absolute difference", lambda a, y, D, w: right_effects(a, y, D, w, absolute=True), "not taken in absolute value"),
        ("no alignment", lambda a, y, D, w: right_effects(a, y, D, w, align=False), "alignment with the probe"),
        ("|alignment|", lambda a, y, D, w: right_effects(a, y, D, w, abs_align=True), "keeps its sign"),
        ("product clipped", lambda a, y, D, w: right_effects(a, y, D, w, clip_product=True), "not the product"),
        ("sums not means", lambda a, y, D, w: right_effects(a, y, D, w, means=False), "sums, not means"),
        ("labels swapped", lambda a, y, D, w: right_effects(a, 1 - y, D, w), "latent"),
        ("one number", lambda a, y, D, w: right_effects(a, y, D, w).sum(), "one effect per latent"),
    ],
}


@pytest.mark.parametrize("check, wrong, says", mutation_cases(MUTATIONS))
def test_ch12_check_names_the_mistake(check, wrong, says):
    check_rejects(check, wrong, says)


# ----------------------------------------------------------------------------- the package is not blamed on the reader
def test_package_disagreeing_is_not_blamed_on_the_reader(monkeypatch):
    probing = importlib.import_module("abstopk_mini.saebench.probing")
    monkeypatch.setattr(probing, "top_k_mean_diff", lambda x, y, k: right_top_k(x, y, k, signed=True))
    with pytest.raises(ex.PackageDisagrees):
        ex.check_top_k(right_top_k)
    absorption = importlib.import_module("abstopk_mini.saebench.absorption")
    monkeypatch.setattr(absorption, "absorption_scores", lambda *a, **kw: (right_absorption(*a, share=-1e9), None))
    with pytest.raises(ex.PackageDisagrees):
        ex.check_absorption(right_absorption)
    tpp = importlib.import_module("abstopk_mini.saebench.tpp")
    monkeypatch.setattr(tpp, "latent_effects", lambda *a: right_effects(*a, clip=False))
    with pytest.raises(ex.PackageDisagrees):
        ex.check_tpp_effects(right_effects)


def test_a_stub_stops_with_its_hint():
    def my_top_k(x, y, k):
        raise NotImplementedError("hint: the means of the two classes, their absolute difference, argsort")

    with pytest.raises(ex.NotWrittenYet, match="my_top_k is not written yet — hint: the means"):
        ex.check_top_k(my_top_k)
