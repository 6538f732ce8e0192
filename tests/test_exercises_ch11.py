"""Chapter 11's exercises: a TopK latent's antipode and the rule judge (issue 29).

The right answers below are written here from the definitions (a masked cosine matrix; the rules
as the chapter states them), not taken from the package, so a check that only compared with the
package could not pass them by sharing its bug. Each check meets wrong implementations a learner
plausibly writes and must reject each with a message naming that mistake.
"""

import importlib
import string

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini import exercises as ex
from abstopk_mini.exercises import opposites as exo

from conftest import check_rejects, mutation_cases, readers_lines

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- right answers, written here
def right_antipodes(W_dec, *, normalise_dim=1, pick="min", diag=float("inf"), cos_as_dot=False):
    W = W_dec.double()
    Wn = W / W.norm(dim=normalise_dim, keepdim=True) if normalise_dim is not None else W
    C = Wn @ Wn.T
    C.fill_diagonal_(diag if pick == "min" else -diag)
    cos, j = C.min(dim=1) if pick == "min" else C.max(dim=1)
    if cos_as_dot:
        cos = (W * W[j]).sum(1)
    return j, cos


_STRIP = string.punctuation + "“”‘’«»—–…"


def right_verdict(side_a, side_b, lexicon, min_tokens=5, same_jaccard=0.25, *, norm=None, keep_empty=False,
                  one_order=False, shared=False, le=False, gt=False, same_first=False):
    norm = norm or (lambda t: t.strip().lower().strip(_STRIP).strip())
    a, b = [norm(t) for t in side_a], [norm(t) for t in side_b]
    if not keep_empty:
        a, b = [t for t in a if t], [t for t in b if t]
    if (len(a) <= min_tokens or len(b) <= min_tokens) if le else (len(a) < min_tokens or len(b) < min_tokens):
        return "one-sided"
    A, B = set(a), set(b)
    jac = len(A & B) / len(A | B)
    same = jac > same_jaccard if gt else jac >= same_jaccard
    if same_first and same:
        return "same"
    only_a, only_b = (A, B) if shared else (A - B, B - A)
    for x, y in lexicon:
        if (x in only_a and y in only_b) or (not one_order and y in only_a and x in only_b):
            return "opposite"
    return "same" if same else "different"


# ----------------------------------------------------------------------------- the independent references
def test_independent_references_on_hand_worked_cases():
    # rows: e1, 2·e2, −e1 + 0.1·e2 -> 0 and 2 are antipodes; 1's smallest cosine is with 0 (0 < cos(1, 2))
    W = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.1]])
    j, c = exo.antipodes_loop(W)
    assert j.tolist() == [2, 0, 0] and c[0] == pytest.approx(-1 / np.sqrt(1.01)) and c[1] == 0.0
    lex = [("he", "she")]
    assert exo.rule_verdict([" He,"] * 5, [" she"] * 5, lex) == "opposite"
    assert exo.rule_verdict([" he"] * 5, [" she"] * 4 + [","], lex) == "one-sided"
    assert exo.rule_verdict([" he", " she"] + [" cat"] * 3, [" he", " she"] + [" dog"] * 3, lex) == "same"  # J = 2/4
    assert exo.rule_verdict([" cat"] * 5, [" dog"] * 5, lex) == "different"


def test_right_answers_written_here_pass(capsys):
    ex.check_antipodes(right_antipodes)
    ex.check_verdict(right_verdict)
    readers_lines(capsys, 2)


def test_each_rule_mistake_gives_verdicts_of_its_own():
    """The check names a rule mistake by the variant of the rules that reproduces every verdict: each
    variant must differ from the rules and from every other variant on the check's cases."""
    cases = exo._verdict_cases()
    vec = lambda **kw: tuple(exo.rule_verdict(a, b, exo.LEXICON, m, s, **kw) for _, a, b, m, s in cases)  # noqa: E731
    vectors = [vec()] + [vec(**flags) for flags, _ in exo._RULE_MISTAKES]
    assert len(set(vectors)) == len(vectors)
    assert {v for vs in vectors for v in vs} == set(exo.VERDICTS)  # every verdict occurs


def test_chosen_sides_read_what_the_judge_reads():
    from abstopk_mini.dashboard.judge import normalise_token

    data = am.dashboard.DashboardData.load(am.repo.find("results") / "dashboards" / "topk-seed0-gender.json.gz")
    lex = am.dashboard.opposite_lexicon()
    for j in am.dashboard.judge(data, lexicon=lex):
        a, b = exo.chosen_sides(data, j.latent)
        assert j.verdict == exo.rule_verdict(a, b, lex)
        assert [t for t in (normalise_token(x) for x in a) if t] == j.side_a


# ----------------------------------------------------------------------------- mutations (issue 29, item 2)
def _verdict_with(**kw):
    return lambda a, b, lex, m, s: right_verdict(a, b, lex, m, s, **kw)


MUTATIONS = {
    "check_antipodes": [
        ("most positive cosine", lambda W: right_antipodes(W, pick="max"), r"most positive cosine \(argmax\)"),
        ("dot products", lambda W: right_antipodes(W, normalise_dim=None), "without normalising"),
        ("self chosen (diagonal 0)", lambda W: right_antipodes(W, diag=0.0), r"paired with itself.*\+inf"),
        ("columns normalised", lambda W: right_antipodes(W, normalise_dim=0), r"normalised the columns"),
        ("columns instead of rows", lambda W: right_antipodes(W.T), r"one per column|paired the columns"),
        ("cos as dot product", lambda W: right_antipodes(W, cos_as_dot=True), "dot products: divide by both"),
        ("cos as |cos|", lambda W: (right_antipodes(W)[0], right_antipodes(W)[1].abs()), "lost their sign"),
        ("partner only", lambda W: right_antipodes(W)[0], "must return two tensors"),
        ("float partners", lambda W: (right_antipodes(W)[0].double(), right_antipodes(W)[1]), "integer indices"),
    ],
    "check_verdict": [
        ("not lower-cased", _verdict_with(norm=lambda t: t.strip().strip(_STRIP).strip()), "not lower-cased"),
        ("spaces kept", _verdict_with(norm=lambda t: t.lower().strip(_STRIP)), "not stripped of spaces"),
        ("punctuation kept", _verdict_with(norm=lambda t: t.strip().lower()), "punctuation was not stripped"),
        ("empty tokens counted", _verdict_with(keep_empty=True), "left empty"),
        ("one order only", _verdict_with(one_order=True), "both orders"),
        ("shared words count", _verdict_with(shared=True), r"on both sides.*A − B"),
        ("min_tokens off by one", _verdict_with(le=True), "not <="),
        ("Jaccard > not >=", _verdict_with(gt=True), ">= same_jaccard, not >"),
        ("same before opposite", _verdict_with(same_first=True), "'same' before 'opposite'"),
        ("fixed thresholds", lambda a, b, lex, m, s: right_verdict(a, b, lex), "ignored the arguments"),
        ("a pair, not a verdict", lambda a, b, lex, m, s: (right_verdict(a, b, lex, m, s), None), "return one verdict"),
    ],
}


@pytest.mark.parametrize("check, wrong, says", mutation_cases(MUTATIONS))
def test_defect29_02_ch11_check_names_the_mistake(check, wrong, says):
    check_rejects(check, wrong, says)


# ----------------------------------------------------------------------------- the package is not blamed on the reader
def test_package_antipodes_disagreeing_is_not_blamed_on_the_reader(monkeypatch):
    dd = importlib.import_module("abstopk_mini.dashboard.data")

    monkeypatch.setattr(dd, "antipodes", lambda W, latents=None: right_antipodes(W, pick="max"))
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_antipodes(right_antipodes)


def test_package_judge_disagreeing_is_not_blamed_on_the_reader(monkeypatch):
    dj = importlib.import_module("abstopk_mini.dashboard.judge")  # am.dashboard.judge is the function

    monkeypatch.setattr(dj, "normalise_token", lambda text: text.strip())  # the package forgets lower-casing
    with pytest.raises(ex.PackageDisagrees, match="bug in abstopk_mini"):
        ex.check_verdict(right_verdict)


def test_a_stub_stops_with_its_hint():
    def my_verdict(side_a, side_b, lexicon, min_tokens, same_jaccard):
        raise NotImplementedError("hint: normalise, then one-sided, opposite, same, different")

    with pytest.raises(ex.NotWrittenYet, match="my_verdict is not written yet — hint: normalise"):
        ex.check_verdict(my_verdict)
