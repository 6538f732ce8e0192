"""Chapter 10's exercises: the comparison protocol's two gaps, BatchAbsTopK's batch selection, its running
threshold and its inference rule (issue 29).

The right answers are written here from the definitions (plain loops and torch one-liners, not the
package); each check must pass them, reject the wrong answers of ``MUTATIONS`` with a message naming the
mistake, and blame the package (PackageDisagrees), not the reader, when the package and the check's
independent reference differ.
"""

import numpy as np
import pytest
import torch

from abstopk_mini import exercises as ex
from abstopk_mini import nonlinearities as nl
from abstopk_mini.chapters import plots_steps
from abstopk_mini.exercises import batch as exb
from abstopk_mini.exercises import protocol as exp

from conftest import check_rejects, mutation_cases, readers_lines

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- right answers, written here
def right_protocol_gaps(fvu_abstopk, fvu_topk, ratio, *, gap=lambda a, t: 100 * (a / t - 1), need_multiple=True,
                        early="topk", swap=False):
    out = {}
    for s, a in fvu_abstopk.items():
        if (need_multiple and s % ratio) or s not in fvu_topk or s // ratio not in fvu_topk:
            continue
        equal = gap(a, fvu_topk[s])
        late = gap(a, fvu_topk[s // ratio]) if early == "topk" else gap(fvu_abstopk.get(s // ratio, np.nan), fvu_topk[s])
        out[s] = (late, equal) if swap else (equal, late)
    return out


def right_batch_abstopk(u, k, *, score=torch.abs, budget=None, keep_sign=True):
    flat = u.flatten()
    idx = score(flat).topk(k * u.shape[0] if budget is None else budget(k, u.shape[0])).indices
    z = torch.zeros_like(flat)
    z[idx] = flat[idx] if keep_sign else flat[idx].abs()
    return z.reshape(u.shape)


def right_threshold_update(theta, z, momentum, *, pick=lambda a: a.min(), weight=None, copy_first=True, scores=None):
    kept = (z[z != 0].abs() if scores is None else scores(z))
    m = float(pick(kept))
    if theta < 0 and copy_first:
        return m
    w = momentum if weight is None else weight(momentum)
    return w * theta + (1 - w) * m


def right_batch_abstopk_eval(u, theta, k, *, cmp=lambda a, t: a.abs() > t, fallback=True, keep_sign=True):
    if theta < 0 and fallback:
        idx = u.abs().topk(k, dim=-1).indices
        return torch.zeros_like(u).scatter(-1, idx, u.gather(-1, idx))
    z = torch.where(cmp(u, theta), u, torch.zeros_like(u))
    return z if keep_sign else z.abs()


def test_independent_references_on_hand_worked_cases():
    u = np.array([[5.0, -4.0, 0.1, 0.2], [0.3, -0.2, 0.1, 0.4]])
    assert exb.batch_abstopk_np(u, 1).tolist() == [[5.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    z = np.array([[0.0, -0.5, 2.0], [0.7, 0.0, 0.0]])
    assert exb.threshold_update_py(-1.0, z, 0.99) == 0.5
    assert exb.threshold_update_py(1.0, z, 0.9) == pytest.approx(0.9 + 0.1 * 0.5, rel=1e-15)
    v = np.array([[0.5, -2.0, 1.0, 0.1], [-1.0, 0.3, 3.0, -0.7]])
    assert exb.threshold_code_np(v, 1.0, 2).tolist() == [[0.0, -2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]
    assert exb.threshold_code_np(v, -1.0, 1).tolist() == [[0.0, -2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]]
    gaps = exp.protocol_gaps_loop({100: 0.30, 300: 0.20}, {100: 0.25, 300: 0.16}, 3)
    assert list(gaps) == [300] and gaps[300] == pytest.approx((25.0, -20.0), rel=1e-12)


def test_right_answers_written_here_pass(capsys):
    ex.check_protocol_gaps(right_protocol_gaps)
    ex.check_batch_abstopk(right_batch_abstopk)
    ex.check_threshold_update(right_threshold_update)
    ex.check_batch_abstopk_eval(right_batch_abstopk_eval)
    readers_lines(capsys, 4)


def test_reference_run_says_so(capsys):
    @ex.reference
    def my_batch_abstopk(u, k):
        return right_batch_abstopk(u, k)

    ex.check_batch_abstopk(my_batch_abstopk)
    line = capsys.readouterr().out
    assert line.startswith("✓ batch_abstopk: ") and "BatchAbsTopK.forward_batch" in line
    assert line.rstrip().endswith("ran on the book's reference solution; in the exercise version it checks yours")


# ----------------------------------------------------------------------------- mutations (issue 29, item 2)
def _per_row(u, k):
    idx = u.abs().topk(k, dim=-1).indices
    return torch.zeros_like(u).scatter(-1, idx, u.gather(-1, idx))


MUTATIONS = {
    "check_protocol_gaps": [
        ("fractions, not percent", lambda a, t, r: right_protocol_gaps(a, t, r, gap=lambda x, y: x / y - 1), "in percent"),
        ("ratio upside down", lambda a, t, r: right_protocol_gaps(a, t, r, gap=lambda x, y: 100 * (y / x - 1)), "upside down"),
        ("difference of FVUs", lambda a, t, r: right_protocol_gaps(a, t, r, gap=lambda x, y: 100 * (x - y)),
         "not a relative gap"),
        ("AbsTopK stopped early", lambda a, t, r: right_protocol_gaps(a, t, r, early="abstopk"), "stopped AbsTopK early"),
        ("no multiple-of-ratio test", lambda a, t, r: right_protocol_gaps(a, t, r, need_multiple=False),
         "not a multiple of ratio"),
        ("gaps swapped", lambda a, t, r: right_protocol_gaps(a, t, r, swap=True), "swapped"),
    ],
    "check_batch_abstopk": [
        ("per-row selection (AbsTopK)", _per_row, r"each row: that is AbsTopK.*k·B"),
        ("selects by u (BatchTopK)", lambda u, k: right_batch_abstopk(u, k, score=lambda v: v), r"ranked by u.*BatchTopK"),
        ("ReLU'd BatchTopK", lambda u, k: nl.BatchTopK(k).forward_batch(u), r"BatchTopK.*rank by \|u\|"),
        ("k instead of k·B", lambda u, k: right_batch_abstopk(u, k, budget=lambda k, B: k), r"kept k = \d+ entries in the whole batch"),
        ("sign lost", lambda u, k: right_batch_abstopk(u, k, keep_sign=False), "lost their sign"),
        ("k·B + 1", lambda u, k: right_batch_abstopk(u, k, budget=lambda k, B: min(k * B + 1, u.numel())), "non-zeros for a budget"),
        ("flattened output", lambda u, k: right_batch_abstopk(u, k).flatten(), "shape"),
    ],
    "check_threshold_update": [
        ("max instead of min", lambda th, z, m: right_threshold_update(th, z, m, pick=lambda a: a.max()), "use the min"),
        ("signed min", lambda th, z, m: right_threshold_update(th, z, m, scores=lambda z: z[z != 0]), r"threshold is on \|z\|"),
        ("zeros included", lambda th, z, m: right_threshold_update(th, z, m, scores=lambda z: z.abs()), "zeros of z"),
        ("weights swapped", lambda th, z, m: right_threshold_update(th, z, m, weight=lambda m: 1 - m), "weights are swapped"),
        ("averaged with −1", lambda th, z, m: right_threshold_update(th, z, m, copy_first=False), "flags 'none yet'"),
        ("no moving average", lambda th, z, m: right_threshold_update(th, z, m, weight=lambda m: 0.0), "running"),
        ("mean instead of min", lambda th, z, m: right_threshold_update(th, z, m, pick=lambda a: a.mean()), "mean of the kept"),
        ("a list", lambda th, z, m: [right_threshold_update(th, z, m)], "as a number"),
    ],
    "check_batch_abstopk_eval": [
        ("≥ instead of >", lambda u, th, k: right_batch_abstopk_eval(u, th, k, cmp=lambda a, t: a.abs() >= t), "strict"),
        ("u > θ", lambda u, th, k: right_batch_abstopk_eval(u, th, k, cmp=lambda a, t: a > t), r"compared u with θ"),
        ("sign lost", lambda u, th, k: right_batch_abstopk_eval(u, th, k, keep_sign=False), "lost their sign"),
        ("batch top k·B at inference", lambda u, th, k: right_batch_abstopk(u, k) if th >= 0 else _per_row(u, k),
         "does not depend on the batch"),
        ("no fallback for θ < 0", lambda u, th, k: right_batch_abstopk_eval(u, th, k, fallback=False), "never saw a training batch"),
        ("k per row always", lambda u, th, k: _per_row(u, k), "however many"),
    ],
}


@pytest.mark.parametrize("check, wrong, says", mutation_cases(MUTATIONS))
def test_defect29_02_check_names_the_mistake(check, wrong, says):
    check_rejects(check, wrong, says)


# ----------------------------------------------------------------------------- the package is not the reader's fault
def test_package_disagreeing_with_the_reference_is_not_blamed_on_the_reader(monkeypatch):
    monkeypatch.setattr(nl.BatchTopK, "forward_batch", lambda self, u: torch.zeros_like(u))
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_batch_abstopk(right_batch_abstopk)


def test_a_threshold_that_stops_moving_is_the_package_s_fault(monkeypatch):
    monkeypatch.setattr(nl.BatchTopK, "keep", lambda self, u, sync=None: self._top_of_batch(self.score(u))[0])
    with pytest.raises(ex.PackageDisagrees, match="threshold"):
        ex.check_threshold_update(right_threshold_update)


def test_a_wrong_protocol_table_is_the_package_s_fault(monkeypatch):
    real = plots_steps.protocol_rows
    monkeypatch.setattr(plots_steps, "protocol_rows",
                        lambda recs, ratio=3: [r | {"gap % equal": -r["gap % equal"]} for r in real(recs, ratio)])
    with pytest.raises(ex.PackageDisagrees, match="protocol_rows"):
        ex.check_protocol_gaps(right_protocol_gaps)


def test_stubs_raise_not_written_yet():
    def my_batch_abstopk_eval(u, theta, k):
        raise NotImplementedError("hint: torch.where(u.abs() > theta, u, 0)")

    with pytest.raises(ex.NotWrittenYet, match="hint: torch.where"):
        ex.check_batch_abstopk_eval(my_batch_abstopk_eval)
