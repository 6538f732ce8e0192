r"""Checks of chapter 9's exercises: how many latents use both signs, and the codes of the
[D, −D] twin folded back to AbsTopK's.

* :func:`check_bidirectional_share` — for codes :math:`z` [N, P], latent j has
  :math:`n^+_j = \#\{z_{nj} > 0\}` and :math:`n^-_j = \#\{z_{nj} < 0\}`; it is **alive** when
  :math:`n_j = n^+_j + n^-_j > 0` and **bidirectional** when it is alive and each sign holds at
  least ``min_share`` of its non-zeros, :math:`n^\pm_j \ge \text{min\_share}\cdot n_j`
  (:func:`abstopk_mini.metrics.bidirectional_mask`, through :func:`~abstopk_mini.metrics.sign_stats`);
  the **share** is over the alive latents (:func:`abstopk_mini.metrics.bidirectional_fraction`).
* :func:`check_fold` — the TopK twin with latents :math:`[D, -D]` codes :math:`z' = [z^+, z^-]`
  [..., 2P]; the AbsTopK code is :math:`z = z'_{:P} - z'_{P:}`
  (:func:`abstopk_mini.coding.doubling.fold`), and on the twin of an SAE it equals that SAE's code.

Each check compares the reader's answer with the package's and with an independent loop written
here (:func:`bidirectional_loop`, :func:`fold_loop`); if those differ it raises
:class:`~abstopk_mini.exercises.harness.PackageDisagrees`. When the reader's answer differs, the
usual mistakes are recomputed and the one that explains every case is named.
"""

from __future__ import annotations

import numpy as np
import torch

from .harness import PackageDisagrees, call, call_tensor, passed, reader_name

__all__ = ["check_bidirectional_share", "check_fold", "bidirectional_loop", "fold_loop"]


def _disagree(what: str) -> PackageDisagrees:
    return PackageDisagrees(f"{what}: the package and the independent reference differ — a bug in abstopk_mini, "
                            "not in your code; please report it")


# ----------------------------------------------------------------------------- bidirectional latents
def bidirectional_loop(z, min_share: float, *, zero_positive: bool = False, over_rows: bool = False,
                       strict: bool = False, dead_counts: bool = False, one_sided: bool = False,
                       counts: bool = False, over_all: bool = False) -> tuple[list[bool], float]:
    """(mask, share) one latent at a time from the definition (module docstring). The keywords
    recompute the usual mistakes.  shape: z [..., P] -> (P bools, float)"""
    rows = torch.as_tensor(z).double().reshape(-1, z.shape[-1]).T.tolist()  # P lists of N values
    mask, alive = [], []
    for values in rows:
        n_pos = sum(1 for v in values if v > 0 or (zero_positive and v == 0))
        n_neg = sum(1 for v in values if v < 0)
        n = len(values) if over_rows else n_pos + n_neg
        bar = min_share if counts else min_share * n
        ok_pos, ok_neg = (n_pos > bar, n_neg > bar) if strict else (n_pos >= bar, n_neg >= bar)
        bidir = (ok_neg if one_sided else ok_pos and ok_neg) and (dead_counts or n_pos + n_neg > 0)
        mask.append(bool(bidir))
        alive.append(n_pos + n_neg > 0)
    n_alive = len(alive) if over_all else sum(alive)
    return mask, (sum(m for m, a in zip(mask, alive) if a or over_all) / n_alive if n_alive else 0.0)


#: mistakes of the mask, each with the keywords of bidirectional_loop that recompute it
_MASK_MISTAKES = (
    (dict(dead_counts=True), "a latent that never fires is marked bidirectional (0 ≥ min_share · 0 holds); a dead "
                             "latent has no sign at all: require n⁺ + n⁻ > 0"),
    (dict(zero_positive=True), "zeros are counted as positive; count z > 0 and z < 0 only: a zero is no sign, the "
                               "latent did not fire"),
    (dict(over_rows=True), "you divided by all N tokens; the share is of the latent's non-zeros, n⁻ / (n⁺ + n⁻)"),
    (dict(counts=True), "you compared counts with min_share; compare shares: n⁺ ≥ min_share · (n⁺ + n⁻) and "
                        "n⁻ ≥ min_share · (n⁺ + n⁻)"),
    (dict(one_sided=True), "you tested the negative sign only; a bidirectional latent needs both signs, each with at "
                           "least min_share of its non-zeros"),
    (dict(strict=True), "a sign holding exactly min_share of the non-zeros must count (≥, not >)"),
)


def _bool_mask(mask, fn, P: int, case: str, z: torch.Tensor) -> list[bool]:
    __tracebackhide__ = True
    if not isinstance(mask, torch.Tensor):
        raise AssertionError(f"{case}: the mask must be a torch.Tensor [P] of bools; got {type(mask).__name__}")
    if tuple(mask.shape) != (P,):
        n_rows = z.reshape(-1, P).shape[0]
        rows = (" — one entry per token: count over the tokens for each latent"
                if mask.ndim == 1 and mask.shape[0] in (n_rows, z.shape[0]) else "")
        flat = (" — count over every row: flatten z to [-1, P] first" if z.ndim > 2 and tuple(mask.shape) == tuple(z.shape[1:])
                else "")
        raise AssertionError(f"{case}: the mask has shape {tuple(mask.shape)}; expected [P] = [{P}], one entry per "
                             f"latent{rows}{flat}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise AssertionError(f"{case}: the mask holds values other than 0 and 1; return a bool tensor (True = bidirectional)")
    return mask.bool().tolist()


def check_bidirectional_share(fn) -> None:
    r"""``fn(z, min_share)``: (mask, share) — which latents are bidirectional (alive, and each sign
    holds ≥ ``min_share`` of the latent's non-zeros) and their share of the alive latents.
    shape: z [..., P] (codes; every row a token) -> (mask [P] bool, share float)"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..metrics import bidirectional_fraction, sign_stats
    from ..sae import SAE, SAEConfig

    # latent: (n_pos, n_neg) on 40 tokens — dead, one-sided, exactly 10 %, just under, balanced, ...
    plan = [(0, 0), (12, 0), (9, 1), (10, 1), (5, 5), (1, 19), (3, 3), (2, 18), (0, 8), (4, 6)]
    g = torch.Generator().manual_seed(9)
    z = torch.zeros(40, len(plan))
    for j, (n_pos, n_neg) in enumerate(plan):
        rows = torch.randperm(40, generator=g)[:n_pos + n_neg]
        mag = torch.rand(n_pos + n_neg, generator=g) + 0.1
        z[rows, j] = torch.cat([mag[:n_pos], -mag[n_pos:]])
    with torch.random.fork_rng(devices=[]):  # a seeded SAE, the notebook's global RNG left as it was
        torch.manual_seed(9)
        sae = SAE(SAEConfig(d_in=16, d_sae=48, activation="abstopk", k=3)).eval()
        with torch.no_grad():
            z_sae = sae.encode(torch.randn(60, 16, generator=g))
    cases = [("10 hand-made latents on 40 tokens, min_share 0.1", z, 0.1),
             ("the same codes as [4, 10, P] (batch × position), min_share 0.25", z.reshape(4, 10, -1), 0.25),
             ("a random AbsTopK SAE's codes (60 tokens, 48 latents), min_share 0.1", z_sae, 0.1)]
    got = []
    for case, codes, share in cases:
        out = call(fn, codes.clone(), share, what="bidirectional_share")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"{reader_name(fn)} must return a pair (mask [P] bool, share float); it returned "
                                 f"{type(out).__name__}")
        mask = _bool_mask(out[0], fn, codes.shape[-1], case, codes)
        value = out[1]
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
            raise AssertionError(f"{case}: the share must be one number (a float); got {type(value).__name__}")
        got.append((mask, float(value)))
        stats = sign_stats(codes, share)
        want = (stats["bidirectional"].tolist(), bidirectional_fraction(codes, share))
        ref = bidirectional_loop(codes, share)
        if want[0] != ref[0] or abs(want[1] - ref[1]) > 1e-12:
            raise _disagree("bidirectional latents")
    for i, ((case, codes, share), (mask, value)) in enumerate(zip(cases, got)):
        want_mask, want_share = bidirectional_loop(codes, share)
        if mask != want_mask:
            wrong = [j for j in range(len(mask)) if mask[j] != want_mask[j]][:3]
            for kw, said in _MASK_MISTAKES:
                if all(m == bidirectional_loop(c, s, **kw)[0] for (_, c, s), (m, _) in zip(cases, got)):
                    raise AssertionError(f"{case}: latents {wrong} are marked wrongly: {said}")
            raise AssertionError(f"{case}: latents {wrong} are marked wrongly (yours {[mask[j] for j in wrong]}); a latent "
                                 "is bidirectional iff n⁺ + n⁻ > 0, n⁺ ≥ min_share·(n⁺ + n⁻) and n⁻ ≥ min_share·(n⁺ + n⁻)")
        if abs(value - want_share) <= 1e-12:
            continue
        n_bidir = sum(want_mask)
        n_alive = round(n_bidir / want_share) if want_share else 0
        if abs(value - bidirectional_loop(codes, share, over_all=True)[1]) <= 1e-12:
            msg = f"you divided by all {len(mask)} latents; the share is over the {n_alive} alive ones (n⁺ + n⁻ > 0)"
        elif value == n_bidir:
            msg = f"you returned the count {n_bidir}; return the share, count / alive latents"
        elif abs(value - 100 * want_share) <= 1e-9:
            msg = "you returned a percentage; return the share in [0, 1]"
        else:
            msg = f"the share is {value:.6g}, expected {want_share:.6g} = bidirectional / alive latents"
        raise AssertionError(f"{case}: the mask is right but {msg}")
    passed(fn, "bidirectional latents", f"{len(cases)} cases (dead and one-sided latents, signs at exactly min_share, "
           "3-D codes, a random AbsTopK SAE) equal am.metrics.sign_stats / bidirectional_fraction and a per-latent loop")


# ----------------------------------------------------------------------------- fold
def fold_loop(z2: np.ndarray) -> np.ndarray:
    """z_i = z'_i − z'_{P+i}, one latent at a time.  shape: z2 [..., 2P] -> [..., P] (numpy)"""
    P = z2.shape[-1] // 2
    out = np.zeros((*z2.shape[:-1], P))
    for i in range(P):
        out[..., i] = z2[..., i] - z2[..., P + i]
    return out


def _fold_mistake(z: torch.Tensor, z2: torch.Tensor, want: torch.Tensor) -> str:
    P = z2.shape[-1] // 2
    if z.shape != want.shape:
        if z.shape == z2.shape:
            return f"the output has the twin's {2 * P} latents; fold the two halves into P = {P}"
        if z2.ndim > 1 and tuple(z.shape) == (z2.shape[0] // 2, *z2.shape[1:]):
            return f"you folded along the first dimension; the latents are the last dimension (z2[..., :{P}])"
        return f"the output has shape {tuple(z.shape)}; expected {tuple(want.shape)}, the twin's code with P = {P} latents"
    close = lambda a: torch.allclose(z.double(), a.double(), atol=1e-12, rtol=0)  # noqa: E731
    lo, hi = z2[..., :P], z2[..., P:]
    if close(-want):
        return "the sign is flipped: latent P + i of the twin fires where u_i < 0, so z = z'[:P] − z'[P:], not z'[P:] − z'[:P]"
    if close(lo + hi):
        return "you added the halves, which gives |z| (the sign is lost); subtract them: z = z'[:P] − z'[P:]"
    if close(lo):
        return "you kept the first half only, which drops every negative code; subtract the second half: z'[:P] − z'[P:]"
    if close(z2[..., 0::2] - z2[..., 1::2]):
        return ("you paired neighbouring latents (2i, 2i + 1); the twin's halves are blocks: latent i and latent P + i "
                "(z2[..., :P] and z2[..., P:])")
    return f"z differs from z'[:P] − z'[P:] (max |Δ| {float((z.double() - want.double()).abs().max()):.3g})"


def check_fold(fn) -> None:
    r"""``fn(z2)``: the AbsTopK code of the [D, −D] twin's code, :math:`z = z'_{:P} - z'_{P:}`.
    shape: z2 [..., 2P] -> [..., P]"""
    __tracebackhide__ = True  # a reader sees the message, not this frame
    from ..coding.doubling import doubled_topk, fold
    from ..sae import SAE, SAEConfig

    g = torch.Generator().manual_seed(13)
    with torch.random.fork_rng(devices=[]):  # a seeded SAE, the notebook's global RNG left as it was
        torch.manual_seed(13)
        sae = SAE(SAEConfig(d_in=8, d_sae=12, activation="abstopk", k=3, input_scale=1.3, dtype="float64")).eval()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2, generator=g)
        x = torch.randn(20, 8, generator=g, dtype=torch.float64)
        z_sae, z2_twin = sae.encode(x), doubled_topk(sae).eval().encode(x)
    if not torch.allclose(fold(z2_twin), z_sae, atol=1e-12, rtol=0):
        raise _disagree("the [D, −D] twin's codes folded back")
    cases = [("one token, P = 4", torch.tensor([0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0])),
             ("the twin of a random AbsTopK SAE on 20 tokens (P = 12)", z2_twin),
             ("codes [2, 5, 2P] (batch × position), P = 6", torch.relu(torch.randn(2, 5, 12, generator=g)))]
    for case, z2 in cases:
        z = call_tensor(fn, z2.clone(), what="fold")
        want = fold(z2)
        if not np.allclose(want.numpy(), fold_loop(z2.numpy()), atol=1e-12, rtol=0):
            raise _disagree("fold")
        if z.shape == want.shape and torch.allclose(z.double(), want.double(), atol=1e-12, rtol=0):
            continue
        raise AssertionError(f"{case}: {_fold_mistake(z.detach(), z2, want)}")
    passed(fn, "fold", f"{len(cases)} cases (1-D to 3-D codes) equal am.coding.doubling.fold and a per-latent loop; on "
           "the twin of an AbsTopK SAE they are that SAE's codes")
