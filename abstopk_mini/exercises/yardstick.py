r"""Checks of chapter 12's exercises: the k latents a sparse probe reads, and one token's absorption.

**Choosing the latents.** SAEBench's sparse probe for "class c or not" reads the k features whose mean
differs most between the positive and the negative texts,

.. math::  \operatorname{top}_k \; \bigl|\, \bar x_{+} - \bar x_{-} \bigr|, \qquad
           \bar x_{\pm} = \text{mean of the rows labelled } \pm,

returned as ascending indices (:func:`abstopk_mini.saebench.probing.top_k_mean_diff`).
:func:`check_top_k` compares the reader's choice with the package's and with :func:`top_k_loop`, a
loop over the features in numpy.

**Absorption fraction.** For one letter's probe direction p, with :math:`\hat p = p/\|p\|`,
:math:`P = x\cdot\hat p`, :math:`c_j = \cos(\hat p, W_{dec,j})`, :math:`s_j = z_j c_j`,
:math:`M = \sum_{j\in\text{main}} s_j` and T the sum of the (at most 3) largest :math:`s_j > 0` among
the other latents with :math:`c_j \ge 0.1`: the fraction is 0 if :math:`M \ge P` or :math:`T/P < 0.4`,
1 if :math:`M \le 0`, else :math:`a/(a+M)` with :math:`a = \min(T, P-M)`
(:func:`abstopk_mini.saebench.absorption.absorption_scores`). :func:`check_absorption` compares the
reader's fractions with the package's and with :func:`absorption_loop`, the rule token by token in
plain Python, and names a mistake by the variant of the rule that reproduces the reader's numbers.

**A latent's effect on a probe (TPP).** For a probe with weight w and latents with unit decoder
directions :math:`\hat d_j`, SAEBench chooses the latents to ablate by

.. math::  e_j = \max\bigl(\bar a_{j}^{+} - \bar a_{j}^{-},\ 0\bigr)\,(w \cdot \hat d_j),

the means of latent j's pooled code over the texts of the class (+) and the others (−)
(:func:`abstopk_mini.saebench.tpp.latent_effects`). :func:`check_tpp_effects` compares the reader's
effects with the package's and with :func:`effects_loop`, and names a mistake by the variant that
reproduces them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .harness import PackageDisagrees, call_tensor, passed, reader_name

__all__ = ["check_top_k", "check_absorption", "check_tpp_effects", "top_k_loop", "absorption_loop", "effects_loop"]


# ----------------------------------------------------------------------------- the k latents
def top_k_loop(x: np.ndarray, y: np.ndarray, k: int) -> list[int]:
    """The k features of largest |mean over y == 1 - mean over y == 0|, ascending, by a loop over features."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    scores = []
    for f in range(x.shape[1]):
        pos = [x[i, f] for i in range(len(y)) if y[i] == 1]
        neg = [x[i, f] for i in range(len(y)) if y[i] == 0]
        scores.append((abs(sum(pos) / len(pos) - sum(neg) / len(neg)), f))
    best = sorted(scores, key=lambda t: (-t[0], t[1]))[:k]
    return sorted(f for _, f in best)


def _top(score: np.ndarray, k: int) -> list[int]:
    return sorted(np.argsort(-score, kind="stable")[:k].tolist())


def _top_k_variants(x: np.ndarray, y: np.ndarray, k: int) -> list[tuple[list[int], str]]:
    pos, neg = x[y == 1].mean(0), x[y == 0].mean(0)
    return [  # the sums first: on a balanced case they rank as the means do, so another mistake shows there first
        (_top(np.abs(x[y == 1].sum(0) - x[y == 0].sum(0)), k),
         "you compared sums, not means: with unequal class sizes the larger class wins; divide by each class's size"),
        (_top(pos - neg, k), "you ranked by the signed difference (mean⁺ − mean⁻): a feature that is lower on the "
                             "positives separates the classes just as well; rank by its absolute value"),
        (_top(neg - pos, k), "you ranked by mean⁻ − mean⁺, signed: take the absolute difference"),
        (_top(np.abs(pos), k), "you ranked by the positives' mean alone: a feature high on every text does not "
                               "separate the classes; rank by |mean⁺ − mean⁻|"),
        (_top(np.abs(x).mean(0), k), "you ranked by the mean over all texts; rank by the difference between the classes"),
        (sorted(np.argsort(np.abs(pos - neg), kind="stable")[:k].tolist()),
         "you took the k smallest differences (an ascending sort); take the k largest"),
    ]


def _top_k_cases():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(40, 12, generator=g)
    y = (torch.arange(40) % 2).int()
    x[y == 1, 3] += 2.0   # higher on the positives
    x[y == 1, 7] -= 3.0   # lower on the positives: as separating
    x[:, 5] += 5.0        # high everywhere, separates nothing
    xu = torch.randn(30, 10, generator=g).relu()
    yu = (torch.arange(30) < 8).int()  # 8 positives, 22 negatives
    xu[yu == 1, 2] += 1.0
    xu[yu == 0, 4] += 0.6
    return [("40 texts, 12 features, one lower on the positives, one high everywhere", x, y, 2),
            ("30 texts, 8 positives and 22 negatives (sparse, non-negative codes)", xu, yu, 2),
            ("the same 40 texts, k = 5", x, y, 5)]


def check_top_k(fn) -> None:
    r"""``fn(x, y, k)``: the k features of largest :math:`|\bar x_+ - \bar x_-|`, ascending.
    shape: x [n, F] float, y [n] int (1 positive, 0 negative), k int -> indices [k] int64"""
    __tracebackhide__ = True
    from ..saebench.probing import top_k_mean_diff

    for n, (said, x, y, k) in enumerate(_top_k_cases(), 1):
        where = f"case {n} ({said})"
        out = call_tensor(fn, x.clone(), y.clone(), k, what="top_k")
        if out.dtype.is_floating_point or out.dtype == torch.bool:
            raise AssertionError(f"{where}: return integer indices (int64), not {out.dtype}")
        if out.shape != (k,):
            raise AssertionError(f"{where}: returned shape {tuple(out.shape)}; expected [k] = [{k}]")
        want = top_k_mean_diff(x, y, k).tolist()
        ref = top_k_loop(x.numpy(), y.numpy(), k)
        if want != ref:
            raise PackageDisagrees(f"{where}: the package picks {want}, the loop {ref}")
        got = out.tolist()
        if sorted(got) == want and got != want:
            raise AssertionError(f"{where}: the right features {sorted(got)}, but not in ascending order; sort them")
        if got != want:
            for variant, said_mistake in _top_k_variants(x.numpy().astype(np.float64), y.numpy(), k):
                if sorted(got) == variant:
                    raise AssertionError(f"{where}: {said_mistake}")
            raise AssertionError(f"{where}: you chose {sorted(got)}; expected {want}")
    passed(fn, "top_k", "the features of largest |mean⁺ − mean⁻| on all three cases, as the package and a loop pick them")


# ----------------------------------------------------------------------------- absorption
def absorption_loop(x, codes, W_dec, probe, main, *, cos_fraction=0.1, share=0.4, max_absorbers=3,
                    rule: str = "right") -> list[float]:
    """The absorption fraction of each token, the rule written out in plain Python (float64). ``rule``
    names a variant that reproduces a usual mistake (:func:`check_absorption`)."""
    x, z, W = (np.asarray(a, dtype=np.float64) for a in (x, codes, W_dec))
    p = np.asarray(probe, dtype=np.float64)
    p = p / math.sqrt(float(p @ p))
    cos = [float(w @ p) / math.sqrt(float(w @ w)) for w in W]
    out = []
    for t in range(len(x)):
        s = [z[t, j] * cos[j] for j in range(len(cos))]
        P = float(x[t] @ p) if rule != "reconstruction" else float((z[t] @ W) @ p)
        M = sum(s[j] for j in main)
        if rule == "abs_absorbers":
            others = [abs(s[j]) for j in range(len(s)) if j not in main and cos[j] >= cos_fraction]
        elif rule == "main_included":
            others = [s[j] for j in range(len(s)) if cos[j] >= cos_fraction and s[j] > 0]
        elif rule == "no_cos":
            others = [s[j] for j in range(len(s)) if j not in main and s[j] > 0]
        else:
            others = [s[j] for j in range(len(s)) if j not in main and cos[j] >= cos_fraction and s[j] > 0]
        top = sorted(others, reverse=True)
        T = sum(top) if rule == "all_absorbers" else sum(top[:max_absorbers])
        if M >= P or (rule != "no_share" and T / P < share):
            out.append(0.0)
        elif M <= 0:
            out.append(1.0)
        else:
            a = min(T, P - M)
            out.append(min(max(a / (a + M), 0.0), 1.0))
    return out


_ABSORPTION_MISTAKES = {
    "no_share": "a token counts as absorbed only when the other latents carry at least 0.4 of P (T / P >= 0.4); "
                "below that its fraction is 0",
    "abs_absorbers": "absorbing latents must project positively on the probe (s_j > 0), not by |s_j|",
    "main_included": "the main latents are not absorbers: leave them out of T",
    "no_cos": "an absorber must be aligned with the probe (cos(p̂, W_dec[j]) >= 0.1) before it counts",
    "all_absorbers": "T sums at most the 3 largest projections among the absorbers, not all of them",
    "reconstruction": "P is the residual's own projection x·p̂, not the reconstruction's",
}


def _absorption_cases():
    """Latents along the probe e0: 0 (the main one, cos 1), 1-5 (cos 0.5), 6 (cos 0.05, a large code), 7 (cos -0.6);
    signed codes on latent 1 for every fifth token, as AbsTopK writes them; residuals = reconstruction + noise."""
    g = torch.Generator().manual_seed(34)
    d, n = 10, 40
    W = torch.zeros(8, d)
    W[0, 0] = 1.0
    for j in range(1, 6):
        W[j, 0], W[j, j] = 0.5, math.sqrt(0.75)
    W[6, 0], W[6, 6] = 0.05, math.sqrt(1 - 0.05 ** 2)
    W[7, 0], W[7, 7] = -0.6, 0.8
    z = torch.randn(n, 8, generator=g).relu()
    z[:, 0] = (torch.randn(n, generator=g) * 1.5).relu()  # the main latent: silent on about half the tokens
    z[::5, 0] = z[::5, 0] + 4.0
    z[:, 1:6] *= 2.5
    z[:, 6] *= 40.0
    z[::5, 1] = -2.0 * z[::5, 1] - 4.0  # large negative codes on an aligned latent
    x = z @ W + 0.3 * torch.randn(n, d, generator=g) + 0.3 * W[0]
    probe = 2.0 * W[0] + 0.1 * torch.randn(d, generator=g)
    perm = torch.randperm(8, generator=g)  # latents in no special order
    return [("40 tokens, main latent 0 of 8, five latents along the probe, signed codes on one", x, z[:, perm],
             W[perm], probe, [int((perm == 0).nonzero())]),
            ("the same tokens with two main latents", x, z[:, perm], W[perm], probe,
             [int((perm == 0).nonzero()), int((perm == 2).nonzero())]),
            ("the first case, residuals and codes three times larger", 3 * x, 3 * z[:, perm], W[perm], probe,
             [int((perm == 0).nonzero())])]


def check_absorption(fn) -> None:
    r"""``fn(x, codes, W_dec, probe, main)``: each token's absorption fraction (module docstring).
    shape: x [n, d], codes [n, F], W_dec [F, d], probe [d], main: list of latent indices -> [n] float"""
    __tracebackhide__ = True
    from ..saebench.absorption import absorption_scores

    for n, (said, x, z, W, probe, main) in enumerate(_absorption_cases(), 1):
        where = f"case {n} ({said})"
        out = call_tensor(fn, x.clone(), z.clone(), W.clone(), probe.clone(), list(main), what="absorption")
        if out.shape != (len(x),):
            raise AssertionError(f"{where}: returned shape {tuple(out.shape)}; expected one fraction per token, [{len(x)}]")
        want = absorption_scores(x, z, W, probe, main)[0]
        ref = torch.tensor(absorption_loop(x, z, W, probe, main), dtype=torch.float64)
        if not torch.allclose(want, ref, rtol=1e-5, atol=1e-6):  # fp32 sums of <= 30 terms against float64
            raise PackageDisagrees(f"{where}: the package and the loop differ by {float((want - ref).abs().max()):.3g}")
        got = out.double()
        if torch.allclose(got, ref, rtol=1e-5, atol=1e-6):
            continue
        for rule, said_mistake in _ABSORPTION_MISTAKES.items():
            variant = torch.tensor(absorption_loop(x, z, W, probe, main, rule=rule), dtype=torch.float64)
            if not torch.allclose(variant, ref, rtol=1e-5, atol=1e-6) and torch.allclose(got, variant, rtol=1e-5, atol=1e-6):
                raise AssertionError(f"{where}: {said_mistake}")
        t = int((got - ref).abs().argmax())
        raise AssertionError(f"{where}: token {t}: your fraction is {float(got[t]):.4g}, expected {float(ref[t]):.4g} "
                             f"({reader_name(fn)} differs on {int(((got - ref).abs() > 1e-5).sum())} of {len(x)} tokens)")
    passed(fn, "absorption", "every token's absorption fraction on three cases, as the package and a loop compute it")


# ----------------------------------------------------------------------------- TPP's effects
def effects_loop(codes, y, directions, weight, *, rule: str = "right") -> list[float]:
    """Each latent's effect on the probe, latent by latent in plain Python (float64); ``rule`` names a
    variant that reproduces a usual mistake (:func:`check_tpp_effects`)."""
    a, D, w = (np.asarray(t, dtype=np.float64) for t in (codes, directions, weight))
    y = np.asarray(y)
    out = []
    for j in range(a.shape[1]):
        pos = [a[i, j] for i in range(len(y)) if y[i] == 1]
        neg = [a[i, j] for i in range(len(y)) if y[i] == 0]
        diff = (sum(pos) - sum(neg)) if rule == "sums" else (sum(pos) / len(pos) - sum(neg) / len(neg))
        align = float(D[j] @ w)
        if rule == "no_clip":
            out.append(diff * align)
        elif rule == "abs_diff":
            out.append(abs(diff) * align)
        elif rule == "no_align":
            out.append(max(diff, 0.0))
        elif rule == "abs_align":
            out.append(max(diff, 0.0) * abs(align))
        elif rule == "clip_product":
            out.append(max(diff * align, 0.0))
        else:
            out.append(max(diff, 0.0) * align)
    return out


_EFFECT_MISTAKES = {
    "no_clip": "SAEBench keeps only latents whose mean rises on the class: clip the mean difference at 0 "
               "(max(mean⁺ − mean⁻, 0)) before multiplying",
    "abs_diff": "the mean difference is clipped at 0, not taken in absolute value: a latent that falls on the "
                "class gets effect 0",
    "no_align": "multiply by the latent's alignment with the probe, w · d̂_j: a latent the probe does not read "
                "has no effect on it",
    "abs_align": "the alignment w · d̂_j keeps its sign: a latent that points against the probe lowers its logit",
    "clip_product": "clip the mean difference, not the product: a latent higher on the class that points against "
                    "the probe keeps its negative effect",
    "sums": "you compared sums, not means: with unequal class sizes the larger class wins; divide by each class's size",
}


def _effects_cases():
    """Pooled codes of 24 texts (10 of the class), 9 latents: some higher on the class, some lower, signed
    codes on two (as AbsTopK writes them), directions some along the probe, some against, one orthogonal."""
    g = torch.Generator().manual_seed(56)
    n, F, d = 24, 9, 6
    y = (torch.arange(n) < 10).int()[torch.randperm(n, generator=g)]
    a = torch.randn(n, F, generator=g).abs()
    a[y == 1, 0] += 2.0          # rises on the class
    a[y == 1, 1] -= 1.5          # falls on the class
    a[y == 1, 2] += 1.0
    a[:, 3] = -a[:, 3]           # a signed latent, negative everywhere ...
    a[y == 1, 3] -= 2.0          # ... and more negative on the class
    a[y == 1, 5] += 0.7
    D = torch.randn(F, d, generator=g)
    D[4] = torch.zeros(d)
    D[4, 5] = 1.0                # orthogonal to the probe below
    D = D / D.norm(dim=1, keepdim=True)
    w = torch.randn(d, generator=g)
    w[5] = 0.0
    D[2] = -D[0]                 # points against the probe where latent 0 points along it
    return [("24 texts (10 of the class), 9 latents, two signed", a, y, D, w),
            ("the same texts, the probe three times larger", a, y, D, 3 * w)]


def check_tpp_effects(fn) -> None:
    r"""``fn(codes, y, directions, weight)``: each latent's effect on the probe,
    :math:`\max(\bar a^+_j - \bar a^-_j, 0)\,(w\cdot\hat d_j)` (module docstring).
    shape: codes [n, F], y [n] int (1: the class), directions [F, d] unit rows, weight [d] -> [F] float"""
    __tracebackhide__ = True
    from ..saebench.tpp import latent_effects

    for n, (said, a, y, D, w) in enumerate(_effects_cases(), 1):
        where = f"case {n} ({said})"
        out = call_tensor(fn, a.clone(), y.clone(), D.clone(), w.clone(), what="effects")
        if out.shape != (a.shape[1],):
            raise AssertionError(f"{where}: returned shape {tuple(out.shape)}; expected one effect per latent, [{a.shape[1]}]")
        want = latent_effects(a, y, D, w).double()
        ref = torch.tensor(effects_loop(a, y, D, w), dtype=torch.float64)
        if not torch.allclose(want, ref, rtol=1e-5, atol=1e-6):  # fp32 means of 24 terms against float64
            raise PackageDisagrees(f"{where}: the package and the loop differ by {float((want - ref).abs().max()):.3g}")
        got = out.double()
        if torch.allclose(got, ref, rtol=1e-5, atol=1e-6):
            continue
        for rule, said_mistake in _EFFECT_MISTAKES.items():
            variant = torch.tensor(effects_loop(a, y, D, w, rule=rule), dtype=torch.float64)
            if torch.allclose(got, variant, rtol=1e-5, atol=1e-6):
                raise AssertionError(f"{where}: {said_mistake}")
        j = int((got - ref).abs().argmax())
        raise AssertionError(f"{where}: latent {j}: your effect is {float(got[j]):.4g}, expected {float(ref[j]):.4g} "
                             f"({reader_name(fn)} differs on {int(((got - ref).abs() > 1e-5).sum())} of {len(ref)} latents)")
    passed(fn, "effects", "every latent's effect on two cases, as the package and a loop compute it")
