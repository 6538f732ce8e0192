"""am.exercises: every check passes a right answer written here (not the package's), names the
usual mistakes, and says so when it ran on the book's reference solution (issue 29, items 2 and 4).

The right answers below are plain loops written from the definitions, so a check that only
compared with the package could not pass them by sharing its bug. Each check meets at least three
wrong implementations a learner plausibly writes, and must reject each with an AssertionError whose
message names that mistake.
"""

import math

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini import exercises as ex
from abstopk_mini.exercises import coding as exc

from conftest import check_rejects, mutation_cases, readers_lines


# ----------------------------------------------------------------------------- right answers, written here
def right_abs_topk(u, k):
    idx = u.abs().topk(k, dim=-1).indices
    return torch.zeros_like(u).scatter(-1, idx, u.gather(-1, idx))


def right_prox(u, lam):
    return torch.where(u > math.sqrt(2 * lam), u, torch.zeros_like(u))


def right_iht(x, D, k, n_steps, *, step=1.0, sign=1.0, project=right_abs_topk, steps_offset=0, dtype=None):
    z = torch.zeros(x.shape[0], D.shape[1], dtype=dtype or x.dtype)
    for _ in range(n_steps + steps_offset):
        z = project(z + step * sign * (x - z @ D.T) @ D, k)
    return z


def right_ista(x, D, lam, n_steps, nonneg=False, *, step=None, thresh=None, sign=1.0, two_sided=None, steps_offset=0):
    eta = 1.0 / torch.linalg.matrix_norm(D, 2) ** 2 if step is None else step
    t = eta * lam if thresh is None else thresh
    signed = (not nonneg) if two_sided is None else two_sided
    z = torch.zeros(x.shape[0], D.shape[1], dtype=x.dtype)
    for _ in range(n_steps + steps_offset):
        v = z + eta * sign * (x - z @ D.T) @ D
        z = torch.sign(v) * torch.relu(v.abs() - t) if signed else torch.relu(v - t)
    return z


def right_twin(sae, *, enc_sign=-1, benc_sign=-1, dec_sign=-1, bdec=1.0, scale=None, k=None):
    c = sae.cfg
    twin = am.SAE(am.SAEConfig(d_in=c.d_in, d_sae=2 * c.d_sae, activation="topk", k=k or c.k, dtype=c.dtype,
                               input_scale=c.input_scale if scale is None else scale))
    with torch.no_grad():
        twin.W_enc.copy_(torch.cat([sae.W_enc, enc_sign * sae.W_enc], dim=1))
        twin.b_enc.copy_(torch.cat([sae.b_enc, benc_sign * sae.b_enc]))
        twin.W_dec.copy_(torch.cat([sae.W_dec, dec_sign * sae.W_dec], dim=0))
        twin.b_dec.copy_(bdec * sae.b_dec)
    return twin.eval()


def _topk_relu(v, k):
    idx = v.topk(k, dim=-1).indices
    return torch.zeros_like(v).scatter(-1, idx, torch.relu(v.gather(-1, idx)))


# ----------------------------------------------------------------------------- the independent references
def test_independent_references_on_hand_worked_cases():
    u = np.array([[0.5, -3.0, 1.0, 2.0, -0.1]])
    assert exc.brute_abs_topk(u, 2).tolist() == [[0.0, -3.0, 0.0, 2.0, 0.0]]
    # prox of 0.5·‖z‖₀ with z ≥ 0: threshold √1 = 1, the tie at 1 goes to 0
    assert exc.brute_prox_l0_nonneg(np.array([0.9, 1.0, 1.1, -2.0]), 0.5).tolist() == [0.0, 0.0, 1.1, 0.0]
    # one IHT step from 0 with D = I: abs_topk(x); one ISTA step with D = I (L = 1): soft(x, λ)
    x, eye = np.array([[0.3, -2.0, 1.0]]), np.eye(3)
    assert exc.iht_loop(x, eye, 1, 1).tolist() == [[0.0, -2.0, 0.0]]
    assert np.allclose(exc.ista_loop(x, eye, 0.5, 1, nonneg=False), [[0.0, -1.5, 0.5]])
    assert np.allclose(exc.ista_loop(x, eye, 0.5, 1, nonneg=True), [[0.0, 0.0, 0.5]])


def test_right_answers_written_here_pass(capsys):
    ex.check_abs_topk(right_abs_topk)
    ex.check_prox_l0_nonneg(right_prox)
    ex.check_iht(right_iht)
    ex.check_ista(right_ista)
    ex.check_twin(right_twin)
    out = readers_lines(capsys, 5)
    assert not any("residual" in line for line in out)


# ----------------------------------------------------------------------------- mutations (issue 29, item 2)
def _mutant_axis(u, k):
    return am.prox.abs_topk(u.movedim(0, -1), k).movedim(-1, 0) if u.dim() > 1 else am.prox.abs_topk(u, k)


MUTATIONS = {
    "check_abs_topk": [
        ("selects by u (TopK)", lambda u, k: torch.zeros_like(u).scatter(-1, u.topk(k).indices, u.gather(-1, u.topk(k).indices)), r"select by \|u\|.*TopK"),
        ("ReLU'd TopK", lambda u, k: am.prox.topk(u, k), r"select by \|u\|"),
        ("sign lost", lambda u, k: right_abs_topk(u, k).abs(), "lost their sign"),
        ("wrong axis", _mutant_axis, r"first dimension \(dim=0\).*last dimension"),
        ("k - 1 kept", lambda u, k: right_abs_topk(u, k - 1) if k > 1 else torch.zeros_like(u), "not k − 1"),
        ("k + 1 kept", lambda u, k: right_abs_topk(u, min(k + 1, u.shape[-1])), "keep at most k per row"),
        ("flattened", lambda u, k: right_abs_topk(u, k).flatten(), "shape"),
        ("shrunk", lambda u, k: 0.5 * right_abs_topk(u, k), "differ from u"),
    ],
    "check_prox_l0_nonneg": [
        ("cut at λ", lambda u, lam: torch.where(u > lam, u, torch.zeros_like(u)), r"cut at λ = .*√\(2λ\)"),
        ("cut at √λ", lambda u, lam: torch.where(u > math.sqrt(lam), u, torch.zeros_like(u)), "factor 2 is lost"),
        ("two-sided", lambda u, lam: am.prox.hard_threshold(u, math.sqrt(2 * lam)), "negative entries"),
        ("shrinks (ℓ1 prox)", lambda u, lam: torch.relu(u - math.sqrt(2 * lam)), "shrank"),
        ("keeps the tie", lambda u, lam: torch.where(u >= math.sqrt(2 * lam), u, torch.zeros_like(u)), "sparser"),
    ],
    "check_iht": [
        ("gradient sign", lambda x, D, k, n: right_iht(x, D, k, n, sign=-1.0), "wrong sign"),
        ("no projection", lambda x, D, k, n: right_iht(x, D, k, n, project=lambda v, k: v), "not sparse"),
        ("one step too few", lambda x, D, k, n: right_iht(x, D, k, n, steps_offset=-1), "n_steps − 1 times"),
        ("one step too many", lambda x, D, k, n: right_iht(x, D, k, n, steps_offset=1), r"n_steps \+ 1 times"),
        ("TopK projection", lambda x, D, k, n: right_iht(x, D, k, n, project=_topk_relu), "no negative entry"),
        ("step 1/L", lambda x, D, k, n: right_iht(x, D, k, n, step=1 / am.unroll.lipschitz(D)), "step 1/L"),
        ("float32 z", lambda x, D, k, n: right_iht(x.float(), D.float(), k, n), "dtype=x.dtype"),
        ("transposed z", lambda x, D, k, n: right_iht(x, D, k, n).T, r"\[B, P\]"),
    ],
    "check_ista": [
        ("step 1", lambda x, D, lam, n, nonneg: right_ista(x, D, lam, n, nonneg, step=1.0), "step 1;"),
        ("two-sided when nonneg", lambda x, D, lam, n, nonneg: right_ista(x, D, lam, n, nonneg, two_sided=True), "ReLU"),
        ("ReLU when signed", lambda x, D, lam, n, nonneg: right_ista(x, D, lam, n, nonneg, two_sided=False), "two-sided"),
        ("threshold λ", lambda x, D, lam, n, nonneg: right_ista(x, D, lam, n, nonneg, thresh=lam), "threshold must be ηλ"),
        ("gradient sign", lambda x, D, lam, n, nonneg: right_ista(x, D, lam, n, nonneg, sign=-1.0), "wrong sign"),
        ("one step too few", lambda x, D, lam, n, nonneg: right_ista(x, D, lam, n, nonneg, steps_offset=-1), "n_steps − 1 times"),
    ],
    "check_twin": [
        ("decoder not negated", lambda sae: right_twin(sae, dec_sign=1), r"second half of W_dec is a copy.*−W_dec"),
        ("encoder not negated", lambda sae: right_twin(sae, enc_sign=1), r"second half of W_enc is a copy.*−W_enc"),
        ("encoder bias copied", lambda sae: right_twin(sae, benc_sign=1), r"second half of b_enc is a copy"),
        ("encoder bias forgotten", lambda sae: right_twin(sae, benc_sign=0), r"second half of b_enc is zero"),
        ("b_dec forgotten", lambda sae: right_twin(sae, bdec=0.0), "b_dec is zero"),
        ("input scale forgotten", lambda sae: right_twin(sae, scale=1.0), "input_scale=sae.cfg.input_scale"),
        ("k doubled", lambda sae: right_twin(sae, k=2 * sae.cfg.k), "same k = 3"),
        ("the SAE itself", lambda sae: sae, "2P = 40"),
    ],
}


@pytest.mark.parametrize("check, wrong, says", mutation_cases(MUTATIONS))
def test_defect29_02_check_names_the_mistake(check, wrong, says):
    check_rejects(check, wrong, says)


def _mutations_by_file() -> dict[str, dict[str, int]]:
    """{test file: {check name: number of wrong implementations}} from the ``MUTATIONS = {...}`` literal
    of every ``tests/test_exercises*.py`` (one file per group of chapters)."""
    import ast
    from pathlib import Path

    out = {}
    for path in sorted(Path(__file__).parent.glob("test_exercises*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["MUTATIONS"]:
                out[path.name] = {ast.literal_eval(k): len(v.elts) for k, v in zip(node.value.keys, node.value.values)}
    return out


def test_defect29_02_every_check_meets_three_mistakes():
    by_file = _mutations_by_file()
    counts = [(name, n) for table in by_file.values() for name, n in table.items()]
    names = [name for name, _ in counts]
    assert len(names) == len(set(names)), f"a check's mutations are listed in two files: {by_file}"
    assert set(names) == {name for name in ex.__all__ if name.startswith("check_")}
    assert all(n >= 3 for _, n in counts), counts
    assert set(MUTATIONS) <= set(names)


# ----------------------------------------------------------------------------- the pass line (issue 29, item 4)
def test_defect29_04_reference_run_says_so(capsys):
    @ex.reference
    def my_abs_topk(u, k):
        return right_abs_topk(u, k)

    def my_own(u, k):
        return right_abs_topk(u, k)

    assert ex.is_reference(my_abs_topk) and not ex.is_reference(my_own)
    ex.check_abs_topk(my_abs_topk)
    ex.check_abs_topk(my_own)
    ref_line, own_line = capsys.readouterr().out.splitlines()
    assert ref_line.startswith("✓ abs_topk: ") and ref_line.endswith(
        "ran on the book's reference solution; in the exercise version it checks yours")
    assert own_line.startswith("✓ your my_own is right: ") and "reference" not in own_line


def test_defect29_04_iht_pass_line_reads_as_success(capsys):
    ex.check_iht(right_iht)
    line = capsys.readouterr().out
    assert "residual" not in line and "equals am.unroll.iht and a per-signal numpy loop" in line


def test_not_written_yet_carries_the_hint_and_nothing_else():
    def my_iht(x, D, k, n_steps):
        raise NotImplementedError("hint: z = abs_topk(z + (x - z @ D.T) @ D, k), n_steps times")

    with pytest.raises(ex.NotWrittenYet) as info:
        ex.check_iht(my_iht)
    assert str(info.value) == "your my_iht is not written yet — hint: z = abs_topk(z + (x - z @ D.T) @ D, k), n_steps times"
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value, NotImplementedError)


def test_a_not_implemented_error_from_deeper_down_is_not_a_stub():
    def helper(u):
        raise NotImplementedError("something the reader called is missing")

    def my_abs_topk(u, k):
        return helper(u)

    with pytest.raises(NotImplementedError, match="something the reader called") as info:
        ex.check_abs_topk(my_abs_topk)
    assert not isinstance(info.value, ex.NotWrittenYet)


def test_wrong_arguments():
    with pytest.raises(TypeError, match="your function itself"):
        ex.check_iht(am.unroll.iht(torch.zeros(1, 2), torch.eye(2), 1, 1))
    with pytest.raises(AssertionError, match="must return a torch.Tensor"):
        ex.check_abs_topk(lambda u, k: u.tolist())
    with pytest.raises(TypeError, match="marks a function"):
        ex.reference(3)


def test_package_disagreeing_with_the_reference_is_not_blamed_on_the_reader(monkeypatch):
    monkeypatch.setattr(am.coding.unroll, "iht", lambda x, D, k, n: torch.zeros(x.shape[0], D.shape[1], dtype=x.dtype))
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_iht(right_iht)


def test_a_stub_shows_a_short_traceback_in_ipython():
    """IPython skips the check's frames (``__tracebackhide__``): the reader sees the message, not coding.py."""
    import re
    import sys

    ultratb = pytest.importorskip("IPython.core.ultratb")

    def my_iht(x, D, k, n_steps):
        raise NotImplementedError("hint: start from zeros")

    try:
        ex.check_iht(my_iht)
    except ex.NotWrittenYet:
        text = re.sub(r"\x1b\[[0-9;]*m", "", ultratb.AutoFormattedTB(mode="Context").text(*sys.exc_info()))
    assert "skipping hidden" in text and "coding.py" not in text
    assert text.rstrip().endswith("NotWrittenYet: your my_iht is not written yet — hint: start from zeros")
