r"""Checks of chapter 7's exercises: a concept axis read off one latent, off its dashboard, and off
the activations themselves.

* :func:`check_sign_accuracy` — the sign rule of one latent on two word groups
  (:func:`abstopk_mini.concepts.axis.sign_accuracy`, the ``sign_accuracy`` of a concept report):
  a sample is called side a iff :math:`o z > 0` and side b iff :math:`o z < 0`, with the
  orientation :math:`o \in \{\pm 1\}` chosen on the train pairs; a zero is a coin flip (0.5). The
  score is **balanced**: (share right on side a + share right on side b) / 2, each share over every
  (word, template) sample of its side.
* :func:`check_top_contexts` — the tokens a signed dashboard shows for one latent
  (:func:`abstopk_mini.dashboard.stream.latent_stats`): the n largest :math:`z > 0`, largest first,
  and the n largest :math:`-z` with :math:`z < 0` (most negative first); equal values go to the
  smaller token index; a side lists only tokens where the latent fired with its sign, so it may
  hold fewer than n.
* :func:`check_dim_direction` — Difference in Means (:func:`abstopk_mini.concepts.axis.dim_direction`):
  :math:`d = (\bar a - \bar b)/\lVert \bar a - \bar b\rVert`, each mean over every sample of its
  side (words × templates), in float64.

Each check compares the reader's answer with the package's and with an independent Python loop
written here (:func:`sign_accuracy_loop`, :func:`top_contexts_loop`, :func:`dim_direction_loop`);
if those two differ it raises :class:`~abstopk_mini.exercises.harness.PackageDisagrees`. When the
reader's answer differs, the usual mistakes are recomputed and the first that explains it is named.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from .harness import NotWrittenYet, PackageDisagrees, call, call_tensor, passed, reader_name

__all__ = ["check_sign_accuracy", "check_top_contexts", "check_dim_direction", "sign_accuracy_loop",
           "top_contexts_loop", "dim_direction_loop"]


def _disagree(what: str) -> PackageDisagrees:
    return PackageDisagrees(f"{what}: the package and the independent reference differ — a bug in abstopk_mini, "
                            "not in your code; please report it")


# ----------------------------------------------------------------------------- the sign rule
def sign_accuracy_loop(z_a, z_b, orientation: int, *, zero: float = 0.5, use_orientation: bool = True,
                       balanced: bool = True, magnitude: bool = False) -> float:
    """The sign rule's accuracy one sample at a time: side a right iff o·z > 0, side b right iff
    o·z < 0, a zero scores ``zero``; the mean of the two sides' shares (``balanced``) or of all
    samples pooled. The keywords recompute the usual mistakes.  shape: z_a [n_a, ...], z_b [n_b, ...] -> float"""
    o = orientation if use_orientation else 1

    def scores(values, want):
        out = []
        for v in values:
            s = o * (abs(v) if magnitude else v)
            out.append(zero if s == 0 else float((s > 0) == (want > 0)))
        return out

    a = scores(torch.as_tensor(z_a).double().flatten().tolist(), 1)
    b = scores(torch.as_tensor(z_b).double().flatten().tolist(), -1)
    return (sum(a) / len(a) + sum(b) / len(b)) / 2 if balanced else (sum(a) + sum(b)) / (len(a) + len(b))


#: the usual mistakes of the sign rule: (keywords of sign_accuracy_loop, what to say)
_SIGN_MISTAKES = (
    (dict(zero=0.0), "a zero counts as wrong in your score; the sign rule counts a zero as a coin flip, 0.5 "
                     "(the package's sign_accuracy; 'sign strict' is the variant that counts it wrong)"),
    (dict(zero=1.0), "a zero counts as right in your score; a zero says neither side, so it counts 0.5 (a coin flip)"),
    (dict(use_orientation=False), "your score ignores the orientation: with orientation = −1 side a is where z < 0, so "
                                  "compare the signs of orientation · z"),
    (dict(magnitude=True), "you used |z|, which is never negative, so side b is never called; use the signed code "
                           "orientation · z"),
    (dict(balanced=False), "you pooled the samples of both sides; the score is balanced: the share right on side a "
                           "and the share right on side b, averaged (the two sides may have different sizes)"),
)


def _as_number(out, fn, case: str, z_a: torch.Tensor) -> float:
    __tracebackhide__ = True
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            per = (" — one per template: you averaged over the words (dim 0) only"
                   if tuple(out.shape) == tuple(z_a.shape[1:]) else "")
            raise AssertionError(f"{case}: {reader_name(fn)} returned a tensor of shape {tuple(out.shape)}{per}; return "
                                 "one number, the mean over every (word, template) sample of each side")
        return float(out)
    if isinstance(out, (bool, int, float, np.floating, np.integer)):
        return float(out)
    raise AssertionError(f"{reader_name(fn)} must return one number (a float or a 0-dim tensor); it returned "
                         f"{type(out).__name__}")


def check_sign_accuracy(fn) -> None:
    r"""``fn(z_a, z_b, orientation)``: the balanced accuracy of the sign rule "side a iff
    orientation · z > 0, side b iff orientation · z < 0, a zero a coin flip (0.5)".
    shape: z_a [n_a, T], z_b [n_b, T] (one latent's codes, words × templates), orientation ±1 -> float"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..concepts.axis import sign_accuracy

    g = torch.Generator().manual_seed(7)

    def codes(n, T, shift, zero_frac):
        z = torch.randn(n, T, generator=g) + shift
        return torch.where(torch.rand(n, T, generator=g) < zero_frac, torch.zeros(()), z)

    cases = [("paired words, orientation +1", codes(6, 5, 0.8, 0.4), codes(6, 5, -0.8, 0.3), 1),
             ("paired words, orientation −1", codes(6, 5, -0.8, 0.3), codes(6, 5, 0.8, 0.5), -1),
             ("9 side-a and 3 side-b words", codes(9, 4, 0.5, 0.5), codes(3, 4, -0.3, 0.2), 1),
             ("a one-sided detector", torch.zeros(5, 10), -codes(5, 10, 2.0, 0.0).abs(), 1)]
    got, want = [], []
    for case, z_a, z_b, o in cases:
        out = call(fn, z_a.clone(), z_b.clone(), o, what="sign_accuracy")
        got.append(_as_number(out, fn, case, z_a))
        w = float(sign_accuracy(z_a.reshape(-1), z_b.reshape(-1), o))
        if abs(w - sign_accuracy_loop(z_a, z_b, o)) > 1e-12:
            raise _disagree("sign_accuracy")
        want.append(w)
    wrong = [i for i in range(len(cases)) if abs(got[i] - want[i]) > 1e-12]
    if wrong:
        i = wrong[0]
        for kw, said in _SIGN_MISTAKES:
            if all(abs(got[j] - sign_accuracy_loop(z_a, z_b, o, **kw)) <= 1e-12 for j, (_, z_a, z_b, o) in enumerate(cases)):
                raise AssertionError(f"{cases[i][0]}: you got {got[i]:.4f}, the sign rule gives {want[i]:.4f}; {said}")
        raise AssertionError(f"{cases[i][0]}: you got {got[i]:.4f}, the sign rule gives {want[i]:.4f}; per sample: 1 if "
                             "orientation·z has the side's sign (+ for a, − for b), 0.5 if z = 0, else 0; then "
                             "(mean over side a + mean over side b) / 2")
    passed(fn, "the sign rule's accuracy", f"{len(cases)} cases (both orientations, unequal sides, a one-sided detector "
           f"at {want[-1]:.2f}) equal am.concepts.axis.sign_accuracy and a per-sample loop")


# ----------------------------------------------------------------------------- a dashboard's top contexts
def top_contexts_loop(values, n: int) -> tuple[list[int], list[int]]:
    """The dashboard's top tokens by a plain sort: (indices of the n largest v > 0, largest first;
    indices of the n most negative v < 0, most negative first), equal values by smaller index.
    shape: values [N] -> (list of <= n ints, list of <= n ints)"""
    v = [float(x) for x in torch.as_tensor(values).float().flatten().tolist()]
    pos = sorted((i for i in range(len(v)) if v[i] > 0), key=lambda i: (-v[i], i))[:n]
    neg = sorted((i for i in range(len(v)) if v[i] < 0), key=lambda i: (v[i], i))[:n]
    return pos, neg


def _dashboard_tops(values: torch.Tensor, n: int) -> tuple[list[int], list[int]]:
    """What :func:`abstopk_mini.dashboard.stream.latent_stats` keeps for a latent with these codes
    (fed through an identity "SAE" with one latent, in batches of 7 tokens)."""
    from ..dashboard.stream import latent_stats

    col = values.float().reshape(-1, 1)
    identity = SimpleNamespace(cfg=SimpleNamespace(d_sae=1), W_dec=col, encode=lambda x: x)
    st = latent_stats(identity, col.split(7), n_top=n)
    keep = lambda t: [int(i) for i in t[:, 0].tolist() if i >= 0]  # noqa: E731
    return keep(st.top_pos_index), keep(st.top_neg_index)


def _as_indices(side, name: str, case: str, values: torch.Tensor, want: list[int]) -> list[int]:
    __tracebackhide__ = True
    try:
        t = torch.as_tensor(side).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{case}: the {name} side must be a sequence of token indices (a LongTensor or a list of "
                             f"ints); got {type(side).__name__}") from None
    if t.is_floating_point():
        if not torch.equal(t, t.round()) or (want and t.tolist() == values[want].tolist()):
            raise AssertionError(f"{case}: the {name} side holds non-integers; return token indices (positions in "
                                 "values, e.g. from argsort or topk(...).indices), not the values")
        t = t.long()
    return t.tolist()


def _side_mistake(side: str, got: list[int], want: list[int], v: list[float], n: int, sign: int) -> str:
    """What is wrong with one side (``sign`` +1: positive, −1: negative), in words."""
    vals = [v[i] for i in got]
    if any(sign * x < 0 for x in vals):
        return (f"your {side} side holds a token where z is {'negative' if sign > 0 else 'positive'} "
                f"(z = {next(x for x in vals if sign * x < 0):+.3g}): rank each side by its own sign ("
                f"{'z' if sign > 0 else '−z'}, keeping only z {'> 0' if sign > 0 else '< 0'}), not by |z|")
    if any(x == 0 for x in vals):
        return (f"your {side} side holds a token where z = 0; a side lists only tokens where the latent fired with "
                "that sign, so it has fewer than n entries when fewer fired")
    if len(got) > n:
        return f"your {side} side has {len(got)} tokens for n = {n}; keep at most n"
    if sorted(got) == sorted(want):
        key = [-sign * x for x in vals]  # must not decrease: largest |z| of the side first
        if any(b < a for a, b in zip(key, key[1:])):
            first = "largest z" if sign > 0 else "most negative z (largest −z)"
            return f"the {side} side is in the wrong order: start with the {first} and go towards zero"
        return ("equal values are in the wrong order: the dashboard lists the smaller token index first among equal "
                "values (a stable sort, e.g. torch.sort(..., stable=True))")
    closest = sorted((i for i in range(len(v)) if sign * v[i] > 0), key=lambda i: (abs(v[i]), i))[:n]
    if sorted(got) == sorted(closest) and sorted(got) != sorted(want):
        return (f"you took the {n} values closest to zero; the {side} side holds the {n} "
                f"{'largest' if sign > 0 else 'most negative'}")
    if sorted(v[i] for i in got) == sorted(v[i] for i in want):
        return ("among equal values you kept other tokens than the dashboard: it keeps the smaller token index "
                "(a stable sort)")
    return f"the {side} side is {got}, the dashboard's is {want}"


def check_top_contexts(fn) -> None:
    r"""``fn(values, n)``: the token indices a signed dashboard shows for one latent, as the pair
    (positive side: the n largest z > 0, largest first; negative side: the n most negative z < 0,
    most negative first); equal values by smaller index; fewer than n where fewer fired.
    shape: values [N] float32 (the latent's code on N tokens) -> (pos [<= n] int, neg [<= n] int)"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..sae import SAE, SAEConfig

    g = torch.Generator().manual_seed(11)
    with torch.random.fork_rng(devices=[]):  # a seeded SAE, the notebook's global RNG left as it was
        torch.manual_seed(11)
        sae = SAE(SAEConfig(d_in=16, d_sae=24, activation="abstopk", k=4)).eval()
    with torch.no_grad():
        z = sae.encode(torch.randn(300, 16, generator=g))
    j = int(((z > 0).sum(0).minimum((z < 0).sum(0))).argmax())  # the latent with the most firings of its rarer sign
    sparse = torch.zeros(40)
    sparse[[3, 17]] = torch.tensor([0.7, 1.9])
    sparse[[1, 5, 8, 20, 26, 31, 38]] = -torch.tensor([0.2, 1.1, 0.6, 1.1, 0.05, 2.5, 0.9])
    cases = [("a hand-made latent with ties, n = 3",
              torch.tensor([0., 2., -1., 2., 0., -3., -1., .5, -3., 1., 0., -.5]), 3),
             (f"latent {j} of a random AbsTopK SAE on 300 tokens, n = 5", z[:, j].float(), 5),
             ("2 positive and 7 negative tokens, n = 4", sparse, 4),
             ("a TopK latent (never negative) with ties, n = 4",
              torch.relu(torch.randn(40, generator=g)).mul(10).round().div(10), 4)]
    for case, values, n in cases:
        out = call(fn, values.clone(), n, what="top_contexts")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{reader_name(fn)} must return a pair (positive side, negative side) of token indices; "
                                 f"it returned {type(out).__name__}")
        want = _dashboard_tops(values, n)
        if want != top_contexts_loop(values, n):
            raise _disagree("a latent's top contexts")
        pos, neg = (_as_indices(side, name, case, values, w) for side, name, w in zip(out, ("positive", "negative"), want))
        if (pos, neg) == want:
            continue
        if (neg, pos) == want and want[0] != want[1]:
            raise AssertionError(f"{case}: the two sides are swapped; return (positive side, negative side)")
        v = values.float().tolist()
        msg = _side_mistake("positive", pos, want[0], v, n, 1) if pos != want[0] else \
            _side_mistake("negative", neg, want[1], v, n, -1)
        raise AssertionError(f"{case}: {msg}")
    passed(fn, "a latent's top contexts", f"{len(cases)} latents (ties, zeros, a side with fewer than n tokens, no "
           "negative side) give the tokens of am.dashboard.latent_stats and of a plain sort")


# ----------------------------------------------------------------------------- Difference in Means
def dim_direction_loop(acts_a, acts_b) -> np.ndarray:
    """Difference in Means in numpy: the sum of every sample of a side, divided by their count, the
    two means subtracted (a − b), divided by the norm.  shape: acts [..., d] -> [d] float64"""
    def mean(acts):
        rows = np.asarray(acts, dtype=np.float64).reshape(-1, np.shape(acts)[-1])
        total = np.zeros(rows.shape[1])
        for r in rows:
            total += r
        return total / len(rows)

    d = mean(acts_a) - mean(acts_b)
    return d / math.sqrt(float(d @ d))


def _dim_mistake(d: torch.Tensor, want: torch.Tensor, acts_a: torch.Tensor) -> str:
    n = lambda t: t.double().norm()  # noqa: E731
    if d.shape != want.shape:
        if d.numel() == 1 or tuple(d.shape) == tuple(acts_a.shape[:-1]):
            return ("you averaged over the feature dimension (the last one); average over the samples, every dim but the "
                    f"last, so that the direction has d = {want.shape[0]} entries")
        if acts_a.ndim == 3 and tuple(d.shape) == tuple(acts_a.shape[1:]):
            return ("you averaged over the words (dim 0) only, one direction per template; average over every "
                    "(word, template) sample: acts.reshape(-1, d).mean(0)")
        return f"the direction has shape {tuple(d.shape)}; expected [d] = [{want.shape[0]}]"
    if d.dtype != torch.float64:
        return (f"the direction is {d.dtype}; return float64: call .double() on the activations before averaging, as "
                "the package does (the chapter's activations are float32)")
    cos = float(d @ want / n(d).clamp_min(1e-300))
    if abs(float(n(d)) - 1) > 1e-5 and abs(abs(cos) - 1) < 1e-6:
        return (f"the direction has norm {float(n(d)):.4g}; divide mean(a) − mean(b) by its norm "
                f"{'(and mind the sign: it points from b to a)' if cos < 0 else ''}".rstrip())
    if torch.allclose(d, -want, atol=1e-10):
        return "the direction points from side a to side b; DiM is mean(a) − mean(b), from side b to side a"
    if abs(cos - 1) < 1e-6:
        return (f"your direction differs from the float64 one by {float((d - want).abs().max()):.1e}: average in float64 "
                "(call .double() on the activations first; float32 loses digits when the means are large)")
    return (f"your direction differs from mean(a) − mean(b), normalised (cosine {cos:+.4f}, max |Δ| "
            f"{float((d - want).abs().max()):.2g}); average every sample of each side, subtract, divide by the norm")


def check_dim_direction(fn) -> None:
    r"""``fn(acts_a, acts_b)``: the Difference-in-Means direction, the unit vector along
    mean(a) − mean(b), each mean over every sample of its side, in float64.
    shape: acts_a [n_a, T, d] or [n_a, d], acts_b [n_b, T, d] or [n_b, d] -> [d] float64"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..concepts.axis import dim_direction

    g = torch.Generator().manual_seed(5)
    d = 12
    axis = torch.randn(d, generator=g, dtype=torch.float64)
    side = lambda *shape, shift=0.0, offset=0.0: (torch.randn(*shape, d, generator=g, dtype=torch.float64)  # noqa: E731
                                                  + shift * axis + offset)
    cases = [("5 pairs × 4 templates", side(5, 4, shift=0.5), side(5, 4, shift=-0.5)),
             ("9 side-a and 4 side-b samples, no templates", side(9, shift=0.3), side(4, shift=-0.3)),
             ("float32 activations with a large mean", side(6, 3, shift=0.5, offset=1000.0).float(),
              side(6, 3, shift=-0.5, offset=1000.0).float())]
    for case, A, B in cases:
        try:
            out = call_tensor(fn, A.clone(), B.clone(), what="dim_direction")
        except (NotWrittenYet, AssertionError):
            raise
        except (RuntimeError, ValueError, IndexError) as err:
            if A.shape[0] == B.shape[0]:
                raise
            raise AssertionError(f"{case}: your function failed on sides of different sizes ({type(err).__name__}: "
                                 f"{err}); DiM needs no pairing: take the mean of each side on its own and subtract, "
                                 "mean(a) − mean(b), rather than averaging per-pair differences") from None
        want = dim_direction(A, B)
        if not torch.allclose(want, torch.from_numpy(dim_direction_loop(A.numpy(), B.numpy())), atol=1e-10, rtol=0):
            raise _disagree("dim_direction")
        if out.shape == want.shape and out.dtype == torch.float64 and torch.allclose(out, want, atol=1e-10, rtol=0):
            continue
        raise AssertionError(f"{case} (acts {tuple(A.shape)} and {tuple(B.shape)}): {_dim_mistake(out.detach(), want, A)}")
    passed(fn, "the Difference-in-Means direction", f"{len(cases)} cases (words × templates, sides of different sizes, "
           "float32 activations) equal am.concepts.axis.dim_direction and a numpy loop")
