r"""Checks of chapter 11's exercises: a TopK latent's antipode, and the rules that judge two sides.

**Antipodes.** A TopK latent has no negative codes, so its "other side" is the latent whose decoder
row points most nearly the other way:

.. math::  j^*(i) = \arg\min_{j \ne i} \cos(W_{dec}[i], W_{dec}[j]), \qquad
           \cos(a, b) = \frac{a \cdot b}{\|a\|\,\|b\|},

rows of ``W_dec`` [P, d] (one per latent), cosines in float64
(:func:`abstopk_mini.dashboard.antipodes`). :func:`check_antipodes` compares the reader's pairs with
the package's and with :func:`antipodes_loop`, a double loop over the rows in numpy.

**The rule judge.** Each side is the list of its contexts' chosen tokens as the tokenizer shows them
(``" Women,"``), normalised: lower-cased, spaces and leading/trailing punctuation stripped, tokens
left empty dropped. Then, in this order (:func:`abstopk_mini.dashboard.judge_latent`): *one-sided*
if a side has fewer than ``min_tokens`` tokens; *opposite* if a lexicon pair (x, y) has x among the
words only side A holds and y among those only side B holds (or the other way round); *same* if
the token sets have Jaccard :math:`|A \cap B| / |A \cup B| \ge` ``same_jaccard``; else *different*.
:func:`check_verdict` compares the reader's verdicts with the package's (run on a small dashboard
built from the same tokens) and with :func:`rule_verdict`, the rules written out again here, and
names a mistake by the variant of the rules that reproduces every verdict the reader gave.
"""

from __future__ import annotations

import random
import string

import numpy as np
import torch

from .harness import PackageDisagrees, call, passed, reader_name

__all__ = ["check_antipodes", "check_verdict", "antipodes_loop", "rule_verdict", "chosen_sides", "VERDICTS"]

VERDICTS = ("opposite", "different", "same", "one-sided")


# ----------------------------------------------------------------------------- antipodes
def antipodes_loop(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""For each row i of W, the row j ≠ i of smallest cosine with it, and that cosine, by a double loop.
    shape: W [P, d] (numpy, P >= 2) -> partner [P] int64, cos [P] float64"""
    W = np.asarray(W, dtype=np.float64)
    norms = [max(float(np.sqrt(np.dot(w, w))), 1e-12) for w in W]
    partner, cos = np.zeros(len(W), dtype=np.int64), np.zeros(len(W))
    for i in range(len(W)):
        best, best_j = np.inf, -1
        for j in range(len(W)):
            if j != i:
                c = float(np.dot(W[i], W[j])) / (norms[i] * norms[j])
                if c < best:
                    best, best_j = c, j
        partner[i], cos[i] = best_j, best
    return partner, cos


def _pairs(W: np.ndarray, *, normalise: str | None = "rows", pick: str = "min") -> np.ndarray:
    """The partners by a variant of the rule (normalising rows, columns or nothing; the smallest or the
    largest score over j ≠ i), to recognise the usual mistakes.  shape: W [P, d] -> [P]"""
    W = np.asarray(W, dtype=np.float64)
    if normalise == "rows":
        W = W / np.linalg.norm(W, axis=1, keepdims=True)
    elif normalise == "columns":
        W = W / np.linalg.norm(W, axis=0, keepdims=True)
    C = W @ W.T
    np.fill_diagonal(C, np.inf if pick == "min" else -np.inf)
    return C.argmin(1) if pick == "min" else C.argmax(1)


def _antipode_cases() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    rows = torch.randn(10, 6, generator=g, dtype=torch.float64)
    rows[7] = -0.3 * rows[2] + 0.05 * torch.randn(6, generator=g, dtype=torch.float64)  # a planted antipodal pair
    scaled = rows * torch.exp(torch.empty(10, 1, dtype=torch.float64).uniform_(-2.0, 2.0, generator=g))
    return [("10 rows of norms 0.1 to 7, one pair nearly antipodal", scaled),
            ("a square W_dec [8, 8]", torch.randn(8, 8, generator=g, dtype=torch.float64)),
            ("7 rows in the positive orthant (every cosine > 0)",
             torch.randn(7, 5, generator=g, dtype=torch.float64).abs() + 0.05),
            ("float32 W_dec [64, 16], as an SAE stores it", torch.randn(64, 16, generator=g))]


def _antipode_mistake(W: torch.Tensor, j: torch.Tensor, c: torch.Tensor, want_j: np.ndarray, want_c: np.ndarray,
                      tol: float) -> str:
    Wn = W.double().numpy()
    P = len(want_j)
    same_j = torch.equal(j, torch.as_tensor(want_j))
    if (j == torch.arange(P)).any():
        i = int((j == torch.arange(P)).nonzero()[0])
        return (f"latent {i} was paired with itself: exclude j = i before taking the minimum (set the diagonal of the "
                "cosine matrix to +inf, not 0 — every other cosine may be positive)")
    for (kw, said) in (({"pick": "max"}, "you took the most positive cosine (argmax): the antipode is the row pointing "
                                         "most nearly the other way, the smallest cosine (argmin over j ≠ i)"),
                       ({"normalise": None}, "you compared dot products W_dec[i]·W_dec[j] without normalising: rows "
                                             "have different norms; divide each row by its norm (cosines) first"),
                       ({"normalise": "columns"}, "you normalised the columns of W_dec (dim=0); each latent is a row: "
                                                  "divide each row by its norm, W / W.norm(dim=1, keepdim=True)")):
        if torch.equal(j, torch.as_tensor(_pairs(Wn, **kw))):
            return said
    if W.shape[0] == W.shape[1] and torch.equal(j, torch.as_tensor(_pairs(Wn.T))):
        return ("you paired the columns of W_dec; its rows are the latents (W_dec [P, d]: row i is latent i's "
                "decoder direction)")
    if same_j:
        cd = c.double()
        dots = np.sum(Wn * Wn[want_j], axis=1)
        if np.allclose(cd.numpy(), dots, atol=tol, rtol=tol):
            return ("the partners are right but the returned cosines are dot products: divide by both rows' norms")
        if np.allclose(cd.numpy(), np.abs(want_c), atol=tol, rtol=tol) or np.allclose(cd.numpy(), -want_c, atol=tol,
                                                                                         rtol=tol):
            return "the partners are right but the cosines lost their sign: return cos itself (negative for an antipode)"
        k = int(np.argmax(np.abs(cd.numpy() - want_c)))
        return (f"the partners are right but cos[{k}] = {float(cd[k]):.6g}, expected {want_c[k]:.6g} "
                f"(the cosine of row {k} with row {want_j[k]})")
    k = int((j != torch.as_tensor(want_j)).nonzero()[0])
    return (f"latent {k}: your partner is {int(j[k])}, expected {int(want_j[k])} (cosine {want_c[k]:.4f}, the smallest "
            f"over j ≠ {k})")


def check_antipodes(fn) -> None:
    r"""``fn(W_dec)``: for each latent i, :math:`j^* = \arg\min_{j \ne i} \cos(W_{dec}[i], W_{dec}[j])` and that
    cosine. shape: W_dec [P, d] (P >= 2) -> (partner [P] integer, cos [P] float)"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..dashboard.data import antipodes

    cases = _antipode_cases()
    for n, (said, W) in enumerate(cases, 1):
        where = f"case {n} ({said})"
        out = call(fn, W.clone(), what="antipodes")
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
            raise AssertionError(f"{reader_name(fn)} must return two tensors (partner, cos); it returned "
                                 f"{type(out).__name__}")
        j, c = out
        P, d = W.shape
        if j.shape != (P,) or c.shape != (P,):
            cols = " — one per column: the latents are the rows of W_dec [P, d]" if (P != d and d in (j.numel(), c.numel())) else ""
            raise AssertionError(f"{where}: partner has shape {tuple(j.shape)} and cos {tuple(c.shape)}; expected [P] = "
                                 f"[{P}] each{cols}")
        if j.dtype.is_floating_point or j.dtype == torch.bool:
            raise AssertionError(f"{where}: partner is {j.dtype}; return integer indices (argmin gives int64)")
        want_j, want_c = antipodes(W)
        ref_j, ref_c = antipodes_loop(W.numpy())
        if not (np.array_equal(want_j.numpy(), ref_j) and np.allclose(want_c.numpy(), ref_c, atol=1e-12, rtol=0)):
            raise PackageDisagrees("antipodes: the package and the independent reference differ — a bug in "
                                   "abstopk_mini, not in your code; please report it")
        tol = 1e-12 if W.dtype == torch.float64 else 1e-5
        j = j.detach().cpu().long()
        c = c.detach().cpu()
        if not (torch.equal(j, want_j) and torch.allclose(c.double(), want_c, atol=tol, rtol=0)):
            raise AssertionError(f"{where}: {_antipode_mistake(W, j, c, ref_j, ref_c, tol)}")
    passed(fn, "antipodes", f"{len(cases)} decoders (rows of unequal norms, a square one, all cosines positive, float32) "
           "give the partners and cosines of am.dashboard.antipodes and of a double loop over the rows")


# ----------------------------------------------------------------------------- the rule judge
_PUNCT = set(string.punctuation) | set("“”‘’«»—–…")


def _norm(t: str, *, lower: bool, strip_space: bool, strip_punct: bool) -> str:
    """One display token normalised by hand: spaces off both ends, lower-case, punctuation off both ends, spaces again."""
    if strip_space:
        t = t.strip()
    if lower:
        t = t.lower()
    if strip_punct:
        a, b = 0, len(t)
        while a < b and t[a] in _PUNCT:
            a += 1
        while b > a and t[b - 1] in _PUNCT:
            b -= 1
        t = t[a:b]
        if strip_space:
            t = t.strip()
    return t


def rule_verdict(side_a, side_b, lexicon, min_tokens: int = 5, same_jaccard: float = 0.25, *, lower: bool = True,
                 strip_space: bool = True, strip_punct: bool = True, drop_empty: bool = True, both_orders: bool = True,
                 only_one_side: bool = True, one_sided_le: bool = False, jaccard_gt: bool = False,
                 count_distinct: bool = False, same_first: bool = False, side_a_only: bool = False,
                 fixed: bool = False) -> str:
    """The verdict of the rules (module docstring) on two lists of display tokens, written from their
    definition; the keyword flags switch on one usual mistake each. lexicon: [(x, y)] lower-case pairs.
    shape: side_a [Na] str, side_b [Nb] str -> one of :data:`VERDICTS`"""
    if fixed:
        min_tokens, same_jaccard = 5, 0.25
    a = [_norm(t, lower=lower, strip_space=strip_space, strip_punct=strip_punct) for t in side_a]
    b = [_norm(t, lower=lower, strip_space=strip_space, strip_punct=strip_punct) for t in side_b]
    if drop_empty:
        a, b = [t for t in a if t], [t for t in b if t]
    sa, sb = set(a), set(b)
    counts = [len(sa) if count_distinct else len(a), len(sb) if count_distinct else len(b)]
    if side_a_only:
        counts = counts[:1]
    if any(n <= min_tokens if one_sided_le else n < min_tokens for n in counts):
        return "one-sided"
    union = sa | sb
    jac = len(sa & sb) / len(union) if union else 0.0
    same = jac > same_jaccard if jaccard_gt else jac >= same_jaccard
    if same_first and same:
        return "same"
    only_a, only_b = (sa - sb, sb - sa) if only_one_side else (sa, sb)
    for x, y in lexicon:
        if (x in only_a and y in only_b) or (both_orders and y in only_a and x in only_b):
            return "opposite"
    return "same" if same else "different"


def chosen_sides(data, i: int) -> tuple[list, list]:
    """The display strings of the chosen tokens of latent ``i``'s two sides, best first, as
    :func:`~abstopk_mini.dashboard.judge_latent` reads them: its positive contexts, and its negative
    contexts (signed SAE) or its antipode's positive ones (unsigned SAE; none if it has no antipode).
    data: a :class:`~abstopk_mini.dashboard.DashboardData`.  -> (side A [≤ n_top] str, side B [≤ n_top] str)"""
    from ..dashboard.judge import other_side

    show = lambda ctx: [data.tokens[c.token_ids[c.max_pos]] for c in ctx]  # noqa: E731
    return show(data.latent(i).top_pos), show(other_side(data, i)[2])


def _package_verdict(side_a, side_b, lexicon, min_tokens, same_jaccard) -> str:
    """:func:`~abstopk_mini.dashboard.judge_latent` on a one-latent signed dashboard holding these tokens."""
    from ..dashboard.judge import judge_latent
    from ..dashboard.logits import LogitEffects
    from ..dashboard.records import Context, DashboardData, LatentDashboard

    ids = {t: n for n, t in enumerate(dict.fromkeys([*side_a, *side_b]))}
    ctx = lambda side, s: [Context(token_ids=[ids[t]], values=[s * (10.0 - r)], max_pos=0, value=s * (10.0 - r),  # noqa: E731
                                   token_index=r, doc=0, chunk=r, position=1) for r, t in enumerate(side)]
    rec = LatentDashboard(latent=0, n_pos=len(side_a), n_neg=len(side_b), pos_rate=0.0, neg_rate=0.0, hist_width=1.0,
                          hist_counts=[0, 0], top_pos=ctx(side_a, 1.0), top_neg=ctx(side_b, -1.0),
                          logits=LogitEffects([], [], [], []), summary_pos="", summary_neg="", antipode=None,
                          antipode_cos=None)
    data = DashboardData(latents=[rec], requested=[0], tokens={n: t for t, n in ids.items()}, n_tokens=100,
                         sae={"signed": True})
    return judge_latent(data, 0, lexicon=lexicon, min_tokens=min_tokens, same_jaccard=same_jaccard).verdict


#: the small lexicon of the check (the chapter uses am.dashboard.opposite_lexicon(), 116 pairs)
LEXICON = [("he", "she"), ("his", "her"), ("up", "down"), ("aware", "unaware"), ("before", "after"), ("king", "queen")]


def _verdict_cases() -> list[tuple]:
    """(what it tests, side A, side B, min_tokens, same_jaccard): hand-made boundary cases, then seeded random sides."""
    cases = [
        ("capitals", [" He", " He", " HE", " Cat", " Cat"], [" She", " SHE", " She", " Dog", " Dog"], 5, 0.25),
        ("leading spaces", [" up", " up", " up", " rain", " rain"], [" down", " down", " snow", " snow", " down"], 5, 0.25),
        ("punctuation", [" her,", " her.", " “her”", " woman", " woman"], [" his", " his)", " (his", " man", " man"], 5, 0.25),
        ("punctuation tokens", [" cat", ",", " cat", ".", " dog", " cat", " (", " dog"],
         [" tree", " tree", ",", " tree", " rock"], 5, 0.25),
        ("exactly min_tokens", [" cat", " dog", " cat", " dog", " cat"], [" tree", " rock", " tree", " sun", " sun"], 5, 0.25),
        ("Jaccard exactly 0.25", [" cat", " dog", " rock", " dog", " rock"], [" cat", " tree", " tree", " tree", " tree"],
         5, 0.25),
        ("the pair reversed", [" she", " she", " she", " sea", " sea"], [" he", " he", " he", " hill", " hill"], 5, 0.25),
        ("a pair on both sides", [" he", " she", " cat", " cat", " cat"], [" he", " she", " dog", " dog", " dog"], 5, 0.25),
        ("a pair among shared words", [" he", " the", " the", " of", " of"], [" she", " the", " of", " the", " of"], 5, 0.25),
        ("one token five times", [" cat"] * 5, [" dog", " dog", " dog", " tree", " tree"], 5, 0.25),
        ("side B short", [" cat", " dog", " cat", " dog", " cat", " sun"], [" tree", " rock", " tree"], 5, 0.25),
        ("min_tokens=3", [" cat", " dog", " rock"], [" tree", " sun", " moon"], 3, 0.25),
        ("same_jaccard=0.5", [" cat", " dog", " cat", " dog", " cat"], [" cat", " tree", " cat", " tree", " cat"], 5, 0.5),
    ]
    rng = random.Random(29)
    words = ["he", "she", "his", "her", "up", "down", "aware", "unaware", "before", "after", "cat", "dog", "the", "of",
             "tree", "sun", "king", "queen"]
    looks = [lambda w: " " + w, lambda w: " " + w.capitalize(), lambda w: w + ",", lambda w: " (" + w,
             lambda w: " " + w.upper(), lambda w: w]
    for n in range(16):
        vocab = rng.sample(words, 6)
        side = lambda k: [rng.choice(looks)(rng.choice(vocab)) if rng.random() > 0.15 else rng.choice([",", " (", "."])  # noqa: E731
                          for _ in range(k)]
        cases.append((f"random sides {n + 1}", side(rng.randint(4, 10)), side(rng.randint(4, 10)), 5,
                      rng.choice([0.25, 0.2, 0.4])))
    return cases


#: one usual mistake each: (the rule_verdict flag, what is wrong and what to do)
_RULE_MISTAKES = (
    ({"fixed": True}, "you ignored the arguments min_tokens / same_jaccard (a case with min_tokens=3 or same_jaccard=0.5 "
                      "came out as with 5 and 0.25); use the values passed in"),
    ({"strip_space": False}, "tokens were not stripped of spaces: the tokenizer shows ' up' with its leading space, "
                             "which never equals the lexicon's 'up'; strip() each token"),
    ({"lower": False}, "tokens were not lower-cased: ' She' must match the lexicon's 'she'; lower() each token"),
    ({"strip_punct": False}, "leading/trailing punctuation was not stripped: ' her,' and ' (his' must count as 'her' and "
                             "'his'; strip string.punctuation (and “”‘’«»—–…) from both ends"),
    ({"drop_empty": False}, "tokens left empty by normalising (',', ' (') still counted toward min_tokens; drop them "
                            "before counting"),
    ({"count_distinct": True}, "you counted distinct tokens for min_tokens; count every chosen token (' cat' five times "
                               "is 5 tokens)"),
    ({"side_a_only": True}, "only side A was tested for min_tokens; the latent is one-sided when either side has fewer"),
    ({"one_sided_le": True}, "a side with exactly min_tokens tokens came out one-sided; one-sided means fewer than "
                             "min_tokens (len < min_tokens, not <=)"),
    ({"jaccard_gt": True}, "a Jaccard equal to same_jaccard came out 'different'; the rule is >= same_jaccard, not >"),
    ({"both_orders": False}, "you only looked for x on side A and y on side B; a pair is unordered: she on A and he on B "
                             "is the same opposition — test both orders"),
    ({"only_one_side": False}, "a word that is on both sides counted toward a pair; look for x in A − B and y in B − A "
                               "(words only one side holds)"),
    ({"same_first": True}, "you tested 'same' before 'opposite'; the order is one-sided, opposite, same, different: a "
                           "lexicon pair wins even when the sides overlap"),
)


def _verdict_mistake(cases, got: list) -> str:
    """The mistake behind the reader's verdicts ``got`` (one per case) in words: a variant of the rules
    that reproduces every one of them is named; else the first case that differs is shown."""
    n, (what, a, b, m, s) = next((n, c) for n, c in enumerate(cases) if rule_verdict(*c[1:3], LEXICON, *c[3:]) != got[n])
    first = f"case {n + 1} ({what}: A {a}, B {b}) came out {got[n]!r}, the rules say {rule_verdict(a, b, LEXICON, m, s)!r}"
    for flags, said in _RULE_MISTAKES:
        if all(rule_verdict(a_, b_, LEXICON, m_, s_, **flags) == v for (_, a_, b_, m_, s_), v in zip(cases, got)):
            return f"{said} ({first})"
    return f"{first} (min_tokens={m}, same_jaccard={s}); apply the rules in their order to the normalised tokens"


def check_verdict(fn) -> None:
    r"""``fn(side_a, side_b, lexicon, min_tokens, same_jaccard)``: the verdict of the rules of
    :mod:`abstopk_mini.dashboard.judge` on two sides' chosen tokens (display strings).
    shape: side_a [Na] str, side_b [Nb] str, lexicon [(x, y)] -> "opposite" | "same" | "different" | "one-sided" """
    __tracebackhide__ = True  # a reader sees the message, not this frame
    cases = _verdict_cases()
    got = []
    for n, (what, a, b, m, s) in enumerate(cases, 1):
        v = call(fn, list(a), list(b), [tuple(p) for p in LEXICON], m, s, what="verdict")
        if not isinstance(v, str) or v not in VERDICTS:
            raise AssertionError(f"case {n} ({what}): {reader_name(fn)} returned {v!r}; return one verdict, a str among "
                                 f"{VERDICTS}")
        if _package_verdict(a, b, LEXICON, m, s) != rule_verdict(a, b, LEXICON, m, s):
            raise PackageDisagrees(f"the rule judge, case {n} ({what}): the package and the independent reference "
                                   "differ — a bug in abstopk_mini, not in your code; please report it")
        got.append(v)
    if any(v != rule_verdict(a, b, LEXICON, m, s) for (_, a, b, m, s), v in zip(cases, got)):
        raise AssertionError(_verdict_mistake(cases, got))
    passed(fn, "the rule judge", f"{len(cases)} pairs of sides (capitals, spaces, punctuation, both thresholds exactly "
           "met, pairs reversed or shared, random sides) get the verdicts of am.dashboard.judge_latent and of the "
           "rules written out again")
