"""am.exercises of chapters 7 and 9: the sign rule, a dashboard's top contexts, Difference in
Means, bidirectional latents and the [D, −D] fold (issue 29, items 1 and 2).

The right answers below are written here from the definitions (plain loops and sorts, not the
package), so a check that only compared with the package could not pass them by sharing its bug.
Each check meets wrong implementations a learner plausibly writes and must reject each with an
AssertionError whose message names that mistake.
"""

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini import exercises as ex
from abstopk_mini.exercises import concepts as exc
from abstopk_mini.exercises import signs as exs

from conftest import check_rejects, mutation_cases, readers_lines

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- right answers, written here
def right_sign_accuracy(z_a, z_b, orientation, *, zero=0.5, orient=True, pooled=False, magnitude=False):
    o = orientation if orient else 1

    def side(z, want):
        s = o * (z.abs() if magnitude else z).double().flatten()
        return torch.where(s == 0, torch.full_like(s, zero), (torch.sign(s) == want).double())

    a, b = side(z_a, 1), side(z_b, -1)
    return float(torch.cat([a, b]).mean()) if pooled else float((a.mean() + b.mean()) / 2)


def right_top_contexts(values, n, *, by_abs=False, neg_order="most", keep_zeros=False, tie="small", as_values=False):
    v = values.tolist()
    idx = list(range(len(v)))
    tiebreak = (lambda i: i) if tie == "small" else (lambda i: -i)
    if by_abs:
        pos = sorted(idx, key=lambda i: (-abs(v[i]), tiebreak(i)))[:n]
        neg = sorted(idx, key=lambda i: (-abs(v[i]), tiebreak(i)))[n:2 * n]
    else:
        pos = sorted((i for i in idx if v[i] > 0 or (keep_zeros and v[i] == 0)), key=lambda i: (-v[i], tiebreak(i)))[:n]
        negs = [i for i in idx if v[i] < 0 or (keep_zeros and v[i] == 0)]
        if neg_order == "most":
            neg = sorted(negs, key=lambda i: (v[i], tiebreak(i)))[:n]
        elif neg_order == "reversed":  # the right n, least negative first
            neg = sorted(negs, key=lambda i: (v[i], tiebreak(i)))[:n][::-1]
        else:  # "closest": the n values nearest zero
            neg = sorted(negs, key=lambda i: (-v[i], tiebreak(i)))[:n]
    if as_values:
        return torch.tensor([v[i] for i in pos]), torch.tensor([v[i] for i in neg])
    return torch.tensor(pos, dtype=torch.long), torch.tensor(neg, dtype=torch.long)


def right_dim_direction(acts_a, acts_b, *, sign=1.0, normalise=True, dtype=torch.float64, feature_mean=False,
                        pairwise=False):
    A = acts_a.to(dtype).reshape(-1, acts_a.shape[-1])
    B = acts_b.to(dtype).reshape(-1, acts_b.shape[-1])
    if feature_mean:
        return acts_a.to(dtype).mean(-1) - acts_b.to(dtype).mean(-1)
    d = (A - B).mean(0) if pairwise else A.sum(0) / A.shape[0] - B.sum(0) / B.shape[0]
    d = sign * d
    return (d / torch.sqrt((d * d).sum()) if normalise else d).double()


def right_bidirectional_share(z, min_share=0.1, *, zeros_positive=False, over_tokens=False, strict=False,
                              dead_too=False, one_sided=False, counts=False, over_all=False, as_count=False):
    rows = z.reshape(-1, z.shape[-1])
    n_pos = ((rows >= 0) if zeros_positive else (rows > 0)).sum(0)
    n_neg = (rows < 0).sum(0)
    n = torch.full_like(n_pos, rows.shape[0]) if over_tokens else n_pos + n_neg
    bar = torch.full_like(n, 1).double() * min_share if counts else min_share * n
    ok = (lambda c: c > bar) if strict else (lambda c: c >= bar)
    mask = ok(n_neg) if one_sided else ok(n_pos) & ok(n_neg)
    alive = (n_pos + n_neg) > 0 if not zeros_positive else (rows != 0).sum(0) > 0
    if not dead_too:
        mask = mask & alive
    if as_count:
        return mask, int(mask.sum())
    return mask, float(mask.sum()) / (mask.numel() if over_all else max(int(alive.sum()), 1))


def right_fold(z2, *, how="minus"):
    P = z2.shape[-1] // 2
    first, second = z2[..., :P], z2[..., P:]
    return {"minus": first - second, "swapped": second - first, "plus": first + second, "first": first,
            "interleaved": z2[..., 0::2] - z2[..., 1::2], "same": z2}[how]


def _fold_dim0(z2):
    P = z2.shape[0] // 2  # right for one token, wrong once z2 has rows
    return z2[:P] - z2[P:]


# ----------------------------------------------------------------------------- the independent references
def test_independent_references_on_hand_worked_cases():
    # one-sided detector: coins on side a, all right on side b -> 0.75
    assert exc.sign_accuracy_loop(torch.zeros(2, 3), -torch.ones(2, 3), 1) == 0.75
    assert exc.sign_accuracy_loop(torch.tensor([1.0, -1.0]), torch.tensor([-2.0]), -1) == 0.25
    assert exc.top_contexts_loop(torch.tensor([0.0, 2.0, -1.0, 2.0, -3.0]), 2) == ([1, 3], [4, 2])
    d = exc.dim_direction_loop(np.array([[3.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 0.0]]))
    assert np.allclose(d, [1.0, 0.0])
    # latent 0 dead, 1 one-sided, 2 balanced: 1 of 2 alive latents is bidirectional
    z = torch.tensor([[0.0, 1.0, 1.0], [0.0, 2.0, -1.0]])
    assert exs.bidirectional_loop(z, 0.1) == ([False, False, True], 0.5)
    assert exs.fold_loop(np.array([1.0, 0.0, 0.0, 2.0])).tolist() == [1.0, -2.0]


def test_right_answers_written_here_pass(capsys):
    ex.check_sign_accuracy(right_sign_accuracy)
    ex.check_top_contexts(right_top_contexts)
    ex.check_dim_direction(right_dim_direction)
    ex.check_bidirectional_share(right_bidirectional_share)
    ex.check_fold(right_fold)
    readers_lines(capsys, 5)


def test_reference_run_says_so(capsys):
    @ex.reference
    def my_fold(z2):
        return right_fold(z2)

    ex.check_fold(my_fold)
    line = capsys.readouterr().out
    assert line.startswith("✓ fold: ") and "ran on the book's reference solution" in line


# ----------------------------------------------------------------------------- mutations (issue 29, item 2)
MUTATIONS = {
    "check_sign_accuracy": [
        ("zero counts wrong", lambda a, b, o: right_sign_accuracy(a, b, o, zero=0.0), r"a zero counts as wrong.*0\.5"),
        ("zero counts right", lambda a, b, o: right_sign_accuracy(a, b, o, zero=1.0), r"a zero counts as right"),
        ("orientation ignored", lambda a, b, o: right_sign_accuracy(a, b, o, orient=False), "ignores the orientation"),
        ("pooled, not balanced", lambda a, b, o: right_sign_accuracy(a, b, o, pooled=True), "balanced"),
        ("|z| used", lambda a, b, o: right_sign_accuracy(a, b, o, magnitude=True), r"you used \|z\|"),
        ("per template", lambda a, b, o: (((torch.sign(o * a) == 1).double() + 0.5 * (a == 0)).mean(0)
                                          + ((torch.sign(o * b) == -1).double() + 0.5 * (b == 0)).mean(0)) / 2,
         r"averaged over the words \(dim 0\) only"),
    ],
    "check_top_contexts": [
        ("ranked by |z|", lambda v, n: right_top_contexts(v, n, by_abs=True), r"by its own sign.*not by \|z\|"),
        ("negative side least negative first", lambda v, n: right_top_contexts(v, n, neg_order="reversed"),
         r"negative side is in the wrong order: start with the most negative"),
        ("the n values closest to zero", lambda v, n: right_top_contexts(v, n, neg_order="closest"),
         "closest to zero"),
        ("zeros included", lambda v, n: right_top_contexts(v, n, keep_zeros=True), r"z = 0.*fewer than n"),
        ("ties to the larger index", lambda v, n: right_top_contexts(v, n, tie="large"), "smaller token index"),
        ("values, not indices", lambda v, n: right_top_contexts(v, n, as_values=True), "not the values"),
        ("sides swapped", lambda v, n: right_top_contexts(v, n)[::-1], "swapped"),
    ],
    "check_dim_direction": [
        ("b − a", lambda a, b: right_dim_direction(a, b, sign=-1.0), "from side a to side b"),
        ("not normalised", lambda a, b: right_dim_direction(a, b, normalise=False), "divide mean.*by its norm"),
        ("mean over the features", lambda a, b: right_dim_direction(a, b, feature_mean=True), "feature dimension"),
        ("per-pair differences", lambda a, b: right_dim_direction(a, b, pairwise=True), "rather than averaging per-pair"),
        ("averaged in float32", lambda a, b: right_dim_direction(a, b, dtype=torch.float32), r"average in float64"),
        ("returned float32", lambda a, b: right_dim_direction(a, b).float(), r"return float64"),
        ("mean over words only", lambda a, b: (lambda d: d / d.norm(dim=-1, keepdim=True))(a.double().mean(0) - b.double().mean(0)),
         r"over the words \(dim 0\) only"),
    ],
    "check_bidirectional_share": [
        ("share over all latents", lambda z, s: right_bidirectional_share(z, s, over_all=True), "over the .* alive ones"),
        ("counts not shares", lambda z, s: right_bidirectional_share(z, s, counts=True), "compared counts with min_share"),
        ("one-sided test", lambda z, s: right_bidirectional_share(z, s, one_sided=True), "tested the negative sign only"),
        ("zeros counted as positive", lambda z, s: right_bidirectional_share(z, s, zeros_positive=True), "zeros are counted as positive"),
        ("dead latents marked", lambda z, s: right_bidirectional_share(z, s, dead_too=True), "never fires"),
        ("over all tokens", lambda z, s: right_bidirectional_share(z, s, over_tokens=True), "divided by all N tokens"),
        ("strict inequality", lambda z, s: right_bidirectional_share(z, s, strict=True), r"≥, not >"),
        ("the count", lambda z, s: right_bidirectional_share(z, s, as_count=True), "returned the count"),
    ],
    "check_fold": [
        ("halves swapped", lambda z2: right_fold(z2, how="swapped"), "sign is flipped"),
        ("halves added", lambda z2: right_fold(z2, how="plus"), r"added the halves.*\|z\|"),
        ("first half only", lambda z2: right_fold(z2, how="first"), "first half only"),
        ("interleaved", lambda z2: right_fold(z2, how="interleaved"), "neighbouring latents"),
        ("not folded", lambda z2: right_fold(z2, how="same"), "fold the two halves"),
        ("along the first dimension", _fold_dim0, "folded along the first dimension"),
    ],
}


@pytest.mark.parametrize("check, wrong, says", mutation_cases(MUTATIONS))
def test_defect29_02_check_names_the_mistake(check, wrong, says):
    check_rejects(check, wrong, says)


# ----------------------------------------------------------------------------- the package is not blamed on the reader
@pytest.mark.parametrize("check, target, name, broken, right", [
    ("check_sign_accuracy", "abstopk_mini.concepts.axis", "sign_accuracy",
     lambda a, b, o=1, zero="coin": torch.tensor(0.5), right_sign_accuracy),
    ("check_top_contexts", "abstopk_mini.dashboard.stream", "latent_stats",
     None, right_top_contexts),
    ("check_dim_direction", "abstopk_mini.concepts.axis", "dim_direction",
     lambda a, b: torch.ones(a.shape[-1], dtype=torch.float64) / a.shape[-1] ** 0.5, right_dim_direction),
    ("check_bidirectional_share", "abstopk_mini.metrics", "bidirectional_fraction", lambda z, s=0.1: 0.0,
     right_bidirectional_share),
    ("check_fold", "abstopk_mini.coding.doubling", "fold", lambda z2: z2[..., : z2.shape[-1] // 2], right_fold),
])
def test_package_disagreeing_with_the_reference_is_not_blamed_on_the_reader(monkeypatch, check, target, name, broken,
                                                                           right):
    import importlib

    module = importlib.import_module(target)
    if broken is None:  # the stream keeps the n smallest instead of the n largest: wrap the real one
        real = module.latent_stats

        def broken(sae, batches, **kw):
            st = real(sae, batches, **kw)
            st.top_pos_index = st.top_pos_index.flip(0)
            return st
    monkeypatch.setattr(module, name, broken)
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        getattr(ex, check)(right)


def test_wrong_return_types_are_named():
    with pytest.raises(AssertionError, match="one number"):
        ex.check_sign_accuracy(lambda a, b, o: [0.5])
    with pytest.raises(AssertionError, match=r"pair \(positive side, negative side\)"):
        ex.check_top_contexts(lambda v, n: torch.arange(n))
    with pytest.raises(AssertionError, match=r"pair \(mask \[P\] bool, share float\)"):
        ex.check_bidirectional_share(lambda z, s: right_bidirectional_share(z, s)[0])
    with pytest.raises(AssertionError, match="must return a torch.Tensor"):
        ex.check_fold(lambda z2: right_fold(z2).tolist())


def test_a_stub_is_not_written_yet():
    def my_dim_direction(acts_a, acts_b):
        raise NotImplementedError("hint: mean of each side over every sample")

    with pytest.raises(ex.NotWrittenYet, match="your my_dim_direction is not written yet — hint: mean of each side"):
        ex.check_dim_direction(my_dim_direction)


def test_checks_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    ex.check_top_contexts(right_top_contexts)
    ex.check_bidirectional_share(right_bidirectional_share)
    ex.check_fold(right_fold)
    assert torch.equal(state, torch.random.get_rng_state())
