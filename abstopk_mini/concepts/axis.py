r"""Concept-axis metrics on tensors: which latent separates two sides, by threshold or by sign.

The functions here take activations (``[n_words, n_templates, d]`` or ``[n, d]``) and an SAE
and need no language model; :mod:`abstopk_mini.concepts.words` builds the activations and runs them.

Metrics (:func:`evaluate_axis`; test numbers are on the test split)
-------------------------------------------------------------------
Every ``*_accuracy`` is a **per-word, absolute, balanced per-sample accuracy**: each (word,
template) sample is classified on its own by a fixed rule, and the share of side-a samples
classified a and the share of side-b samples classified b are averaged (equal to the plain
accuracy for pairs, where both sides have the same count). ``*_vote`` variants classify a *word*
by the majority of its templates (a tie counts 0.5) and average the same way over words.
``*relative_accuracy`` is the easier **per-pair, relative** task: for each test (pair, template),
is the score of the a word above the score of the b word (a tie counts 0.5)? For unpaired sides,
over all (a, b) combinations, i.e. the ROC AUC. Expect a large gap between the two on raw
residual streams: word-to-word variation along a direction can exceed the gap between the sides
even when every pair is ordered correctly.

* threshold rule of latent j: side a iff ``o·(z_j − θ) > 0``, with orientation ``o ∈ {±1}`` and
  threshold θ chosen on train (θ the midpoint between consecutive sorted train values).
  **Best latent** = the latent with the best train threshold accuracy (first index on ties).
* sign rule of latent j: side a iff ``o·z_j > 0``, side b iff ``o·z_j < 0``; **a zero counts as a
  coin flip (0.5)** in ``sign_accuracy`` and as **wrong** in ``sign_accuracy_strict``. ``o`` is
  chosen on train. A one-sided detector (non-zero on one side, zero on the other) therefore
  scores 0.75 (0.5 strict) even when its threshold accuracy is 1. For a nonnegative SAE the sign
  rule can only say "a" or "zero", so it is at most 0.75.
* ``test_accuracy`` is ``sign_accuracy`` of the best latent (the headline number).
* coverage_a / coverage_b: share of test samples of that side on which ``z_j ≠ 0``.
* preact_sign_accuracy: the sign rule applied to the pre-activation ``u_j`` (before the top-k or
  the ReLU), orientation chosen on train.
* bidirectional_share: share of test (pair, template) samples with ``o·z_j > 0`` on the a word
  **and** ``o·z_j < 0`` on the b word (sign-rule orientation o); for unpaired sides (sentiment),
  the share over all (a, b) combinations, ``P_a(o z > 0)·P_b(o z < 0)``. ``bidirectional`` is
  ``bidirectional_share ≥ 0.8``.
* sign latent: the latent with the best *train sign accuracy* (reported with the same metrics);
  for AbsTopK it answers "is there a latent that separates the sides by its sign", which the
  threshold-best latent need not be.
* relative_accuracy (of a latent): the relative task with score ``o·z_j`` (sign orientation o).
* two-latent rule ``best_pair = (i, j)``: side a iff ``z_i > z_j``, b iff ``z_i < z_j``, a tie
  (typically both zero) a coin flip (``best_pair_accuracy``; ``_strict``: wrong). Chosen on
  train among ordered pairs of the ``n_candidates`` latents with the best train threshold
  accuracy.
* Difference in Means: ``d = (mean(a_train) − mean(b_train)) / ‖·‖`` over train samples in
  activation space; side a iff ``x·d > m`` with m the midpoint of the two train side means of
  ``x·d`` (``dim_test_accuracy``; ``dim_relative_accuracy`` scores by ``x·d``). Positions on this axis are normalised as ``(x·d − m) / h`` (h half the gap), so the
  train side-a mean sits at +1 and side b at −1; neutral words (person, parent, child, ...) get
  the mean of their templates' positions.
* cos_to_dim: cosine between ``o·W_dec[j]`` (threshold orientation o, so positive means the
  latent's side-a direction points from b to a) and d.

SAE-level: :func:`sign_summary` gives the share of alive latents that are bidirectional on a token
sample (:func:`abstopk_mini.metrics.bidirectional_mask`: each sign ≥ 10 % of a latent's non-zeros).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..codestats import code_stats

__all__ = ['encode_samples', 'dim_direction', 'threshold_scores', 'sign_accuracy', 'best_latent', 'best_pair', 'relative_accuracy', 'AxisResult', 'evaluate_axis', 'sign_summary']


def _samples(acts: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(acts, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [n, T, d] or [n, d]; got {type(acts).__name__}")
    if acts.ndim == 2:
        acts = acts.unsqueeze(1)
    if acts.ndim != 3 or acts.shape[0] == 0:
        raise ValueError(f"{name} must have shape [n, T, d] or [n, d] with n >= 1; got {tuple(acts.shape)}")
    return acts


@torch.no_grad()
def encode_samples(sae, acts: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activations and codes of the SAE in eval mode.  shape: acts [..., d_in] -> u, z [..., d_sae] (CPU)"""
    was_training = sae.training
    sae.eval()
    try:
        flat = acts.reshape(-1, acts.shape[-1])
        device = sae.W_enc.device
        us, zs = [], []
        for chunk in flat.split(batch_size):
            u = sae.pre_acts(chunk.to(device))
            us.append(u.float().cpu())
            zs.append(sae.act(u).float().cpu())
    finally:
        sae.train(was_training)
    shape = (*acts.shape[:-1], -1)
    return torch.cat(us).reshape(shape), torch.cat(zs).reshape(shape)


def dim_direction(acts_a: torch.Tensor, acts_b: torch.Tensor) -> torch.Tensor:
    """Difference in Means: unit vector along mean(a) − mean(b) over all samples.

    shape: acts_a [..., d], acts_b [..., d] -> [d] (float64)
    """
    d = acts_a.reshape(-1, acts_a.shape[-1]).double().mean(0) - acts_b.reshape(-1, acts_b.shape[-1]).double().mean(0)
    norm = d.norm()
    if norm == 0:
        raise ValueError("the two sides have the same mean; the Difference-in-Means direction is undefined")
    return d / norm


def threshold_scores(v_a: torch.Tensor, v_b: torch.Tensor, block: int = 4096):
    """Best threshold rule of every column: side a iff ``o·(v − θ) > 0``.

    Balanced accuracy ``(share of a classified a + share of b classified b) / 2`` at every cut
    between distinct sorted values (and below / above all), both orientations.
    Returns (accuracy [m] float64, orientation [m] long in {+1, −1}, threshold [m] float64);
    on ties, the lowest cut and orientation +1.
    shape: v_a [n_a, m], v_b [n_b, m]
    """
    n_a, n_b = v_a.shape[0], v_b.shape[0]
    label = torch.cat([torch.ones(n_a), torch.zeros(n_b)]).double()
    accs, orients, thrs = [], [], []
    for s in range(0, v_a.shape[1], block):
        v = torch.cat([v_a[:, s:s + block], v_b[:, s:s + block]]).double()  # [N, m]
        vs, order = v.sort(dim=0)
        la = label[order]
        zero = torch.zeros(1, v.shape[1], dtype=torch.float64)
        a_below = torch.cat([zero, la.cumsum(0)])  # [N + 1, m]: a-samples among the c lowest
        b_below = torch.cat([zero, (1 - la).cumsum(0)])
        acc_up = ((n_a - a_below) / n_a + b_below / n_b) / 2  # o = +1: a above the cut
        valid = torch.ones_like(acc_up, dtype=torch.bool)
        valid[1:-1] = vs[1:] > vs[:-1]
        best = torch.where(valid, torch.maximum(acc_up, 1 - acc_up), torch.full_like(acc_up, -1.0))
        acc, cut = best.max(0)
        up = acc_up.gather(0, cut[None])[0] >= 0.5
        N = v.shape[0]
        lo = torch.where(cut > 0, vs.gather(0, (cut - 1).clamp_min(0)[None])[0], vs[0] - 1)
        hi = torch.where(cut < N, vs.gather(0, cut.clamp_max(N - 1)[None])[0], vs[-1] + 1)
        accs.append(acc)
        orients.append(torch.where(up, 1, -1))
        thrs.append((lo + hi) / 2)
    return torch.cat(accs), torch.cat(orients).long(), torch.cat(thrs)


def _sign_correct(v: torch.Tensor, want: int, zero: str) -> torch.Tensor:
    """Per sample: 1 if sign(v) == want, 0.5 (coin) or 0 (wrong) if v == 0, else 0."""
    return (torch.sign(v) == want).double() + (0.5 if zero == "coin" else 0.0) * (v == 0).double()


def sign_accuracy(v_a: torch.Tensor, v_b: torch.Tensor, orientation: int = 1, zero: str = "coin") -> torch.Tensor:
    """Balanced accuracy of the sign rule (a iff o·v > 0, b iff o·v < 0; zero: "coin" = 0.5, "wrong" = 0).

    shape: v_a [n_a, ...], v_b [n_b, ...] -> [...] (per column)
    """
    if zero not in ("coin", "wrong"):
        raise ValueError(f"zero must be 'coin' or 'wrong'; got {zero!r}")
    return (_sign_correct(orientation * v_a, 1, zero).mean(0) + _sign_correct(orientation * v_b, -1, zero).mean(0)) / 2


def best_latent(z_a: torch.Tensor, z_b: torch.Tensor, rule: str = "threshold") -> dict:
    """The latent with the best balanced train accuracy under ``rule``.

    rule "threshold": side a iff ``o·(z_j − θ) > 0`` (:func:`threshold_scores`); "sign": side a iff
    ``o·z_j > 0`` with zero a coin flip (:func:`sign_accuracy`). First index on ties.
    Returns ``{"latent", "orientation", "threshold" (None for "sign"), "train_accuracy"}``.
    shape: z_a [n_a, m], z_b [n_b, m]
    """
    if rule == "threshold":
        acc, orient, thr = threshold_scores(z_a, z_b)
        j = int(acc.argmax())
        return {"latent": j, "orientation": int(orient[j]), "threshold": float(thr[j]), "train_accuracy": float(acc[j])}
    if rule == "sign":
        acc = sign_accuracy(z_a, z_b)  # orientation -1 scores 1 - acc
        j = int(torch.maximum(acc, 1 - acc).argmax())
        o = 1 if float(acc[j]) >= 0.5 else -1
        return {"latent": j, "orientation": o, "threshold": None, "train_accuracy": max(float(acc[j]), 1 - float(acc[j]))}
    raise ValueError(f"rule must be 'threshold' or 'sign'; got {rule!r}")


def _pair_correct(z: torch.Tensor, i: int, j: int, side: int, zero: str) -> torch.Tensor:
    return _sign_correct(side * (z[..., i] - z[..., j]), 1, zero)


def best_pair(z_a: torch.Tensor, z_b: torch.Tensor, n_candidates: int = 64) -> tuple[int, int, float]:
    """Best two-latent rule "a iff z_i > z_j" (tie = coin flip) among ordered pairs of the
    ``n_candidates`` latents with the best threshold accuracy.  shape: z_a [n_a, m], z_b [n_b, m]
    Returns (i, j, balanced train accuracy)."""
    acc, _, _ = threshold_scores(z_a, z_b)
    cand = acc.argsort(descending=True, stable=True)[:max(2, n_candidates)]
    ca, cb = z_a[:, cand].double(), z_b[:, cand].double()
    diff_a = ca[:, :, None] - ca[:, None, :]  # [n_a, c, c]: z_i - z_j
    diff_b = cb[:, :, None] - cb[:, None, :]
    score = (_sign_correct(diff_a, 1, "coin").mean(0) + _sign_correct(diff_b, -1, "coin").mean(0)) / 2
    score.fill_diagonal_(-1.0)
    flat = int(score.reshape(-1).argmax())
    i, j = divmod(flat, len(cand))
    return int(cand[i]), int(cand[j]), float(score[i, j])


def relative_accuracy(s_a: torch.Tensor, s_b: torch.Tensor, paired: bool = True) -> float:
    """Share of (a, b) sample pairs with ``s_a > s_b`` (a tie counts 0.5): the pair task "which of
    the two is side a". paired: row-aligned pairs (same word pair, same template); else every
    (a, b) combination (the ROC AUC of the score).  shape: s_a [n_a, T], s_b [n_b, T]"""
    if paired:
        return float(_sign_correct(s_a.double() - s_b.double(), 1, "coin").mean())
    return float(_sign_correct(s_a.double().reshape(-1, 1) - s_b.double().reshape(1, -1), 1, "coin").mean())


def _balanced(correct_a: torch.Tensor, correct_b: torch.Tensor) -> float:
    return float((correct_a.double().mean() + correct_b.double().mean()) / 2)


def _vote(correct_a: torch.Tensor, correct_b: torch.Tensor) -> float:
    """Word-level: a word [T templates] is right if most of its templates are (tie = 0.5)."""
    def words(c):
        m = c.double().mean(1)
        return ((m > 0.5).double() + 0.5 * (m == 0.5).double()).mean()
    return float((words(correct_a) + words(correct_b)) / 2)


@dataclass
class AxisResult:
    """All measurements of one concept axis (definitions in the module docstring).

    Counts are samples (word × template). Accuracies are balanced, on the test split unless named
    ``train_*``. ``sign_latent`` holds the same metrics for the latent with the best train sign
    accuracy. Positions are on the normalised DiM axis (train side a = +1, side b = −1).
    """

    n_train_a: int
    n_train_b: int
    n_test_a: int
    n_test_b: int
    paired: bool
    best_latent: int
    orientation: int
    threshold: float
    train_threshold_accuracy: float
    threshold_accuracy: float
    threshold_accuracy_vote: float
    sign_orientation: int
    sign_accuracy: float
    sign_accuracy_strict: float
    sign_accuracy_vote: float
    coverage_a: float
    coverage_b: float
    mean_z_a: float
    mean_z_b: float
    preact_sign_accuracy: float
    preact_sign_orientation: int
    mean_u_a: float
    mean_u_b: float
    bidirectional_share: float
    bidirectional: bool
    relative_accuracy: float
    cos_to_dim: float
    sign_latent: dict
    best_pair: tuple[int, int]
    train_best_pair_accuracy: float
    best_pair_accuracy: float
    best_pair_accuracy_strict: float
    dim_train_accuracy: float
    dim_test_accuracy: float
    dim_accuracy_vote: float
    dim_relative_accuracy: float
    test_position_a: float
    test_position_b: float
    neutral_positions: list[float] | None = None
    neutral_z: list[float] | None = None

    @property
    def test_accuracy(self) -> float:
        """The headline number: test sign accuracy of the best latent (zero = coin flip)."""
        return self.sign_accuracy

    def to_dict(self) -> dict:
        d = asdict(self)
        d["best_pair"] = list(self.best_pair)
        d["test_accuracy"] = self.test_accuracy
        return d


def _latent_metrics(j, o_sign, z_a, z_b, u_a, u_b, u_a_tr, u_b_tr, paired, min_bidirectional):
    """Sign-rule metrics of latent j on test codes z_a [n_a, T, m] (and pre-activations u)."""
    za, zb = z_a[..., j].double(), z_b[..., j].double()
    ca, cb = _sign_correct(o_sign * za, 1, "coin"), _sign_correct(o_sign * zb, -1, "coin")
    o_pre = 1 if float(sign_accuracy(u_a_tr[..., j].reshape(-1), u_b_tr[..., j].reshape(-1))) >= 0.5 else -1
    if paired:
        share = float(((o_sign * za > 0) & (o_sign * zb < 0)).double().mean())
    else:
        share = float((o_sign * za > 0).double().mean() * (o_sign * zb < 0).double().mean())
    return dict(
        sign_orientation=o_sign, sign_accuracy=_balanced(ca, cb),
        sign_accuracy_strict=float(sign_accuracy(za.reshape(-1), zb.reshape(-1), o_sign, "wrong")),
        sign_accuracy_vote=_vote(ca, cb),
        coverage_a=float((za != 0).double().mean()), coverage_b=float((zb != 0).double().mean()),
        mean_z_a=float(za.mean()), mean_z_b=float(zb.mean()),
        preact_sign_accuracy=float(sign_accuracy(u_a[..., j].reshape(-1), u_b[..., j].reshape(-1), o_pre)),
        preact_sign_orientation=o_pre, mean_u_a=float(u_a[..., j].mean()), mean_u_b=float(u_b[..., j].mean()),
        bidirectional_share=share, bidirectional=share >= min_bidirectional,
        relative_accuracy=relative_accuracy(o_sign * za, o_sign * zb, paired),
    )


def evaluate_axis(sae, acts_a_train: torch.Tensor, acts_b_train: torch.Tensor, acts_a_test: torch.Tensor,
                  acts_b_test: torch.Tensor, *, neutral_acts: torch.Tensor | None = None, paired: bool = True,
                  n_candidates: int = 64, min_bidirectional: float = 0.8) -> AxisResult:
    """Choose latents and the DiM direction on train, measure them on test (see the module docstring).

    paired: row i of side a pairs with row i of side b (same template columns); False for two
    unpaired sets such as positive / negative sentences.
    shape: acts_* [n, T, d_in] or [n, d_in]; neutral_acts [n_neutral, T', d_in]
    """
    A_tr, B_tr = _samples(acts_a_train, "acts_a_train"), _samples(acts_b_train, "acts_b_train")
    A_te, B_te = _samples(acts_a_test, "acts_a_test"), _samples(acts_b_test, "acts_b_test")
    if paired and (A_tr.shape != B_tr.shape or A_te.shape != B_te.shape):
        raise ValueError(f"paired=True needs equal shapes per split; got a {tuple(A_tr.shape)} / b "
                         f"{tuple(B_tr.shape)} (train), a {tuple(A_te.shape)} / b {tuple(B_te.shape)} (test); "
                         "pass paired=False for unpaired sides")
    u_a_tr, z_a_tr = encode_samples(sae, A_tr)
    u_b_tr, z_b_tr = encode_samples(sae, B_tr)
    u_a, z_a = encode_samples(sae, A_te)
    u_b, z_b = encode_samples(sae, B_te)
    m = z_a.shape[-1]
    flat = lambda t: t.reshape(-1, m)  # noqa: E731

    # best latent by train threshold accuracy, then its sign orientation on train
    best_thr = best_latent(flat(z_a_tr), flat(z_b_tr), "threshold")
    j, o, theta = best_thr["latent"], best_thr["orientation"], best_thr["threshold"]
    o_sign = 1 if float(sign_accuracy(flat(z_a_tr)[:, j], flat(z_b_tr)[:, j])) >= 0.5 else -1
    ta = (o * (z_a[..., j].double() - theta) > 0).double()
    tb = (o * (z_b[..., j].double() - theta) < 0).double()
    best = _latent_metrics(j, o_sign, z_a, z_b, u_a, u_b, u_a_tr, u_b_tr, paired, min_bidirectional)

    # latent with the best train sign accuracy
    best_sgn = best_latent(flat(z_a_tr), flat(z_b_tr), "sign")
    js, o_js = best_sgn["latent"], best_sgn["orientation"]
    sign_latent = dict(latent=js, train_sign_accuracy=best_sgn["train_accuracy"],
                       **_latent_metrics(js, o_js, z_a, z_b, u_a, u_b, u_a_tr, u_b_tr, paired, min_bidirectional))

    # two-latent rule
    pi, pj, pair_train = best_pair(flat(z_a_tr), flat(z_b_tr), n_candidates)
    pa, pb = _pair_correct(z_a.double(), pi, pj, 1, "coin"), _pair_correct(z_b.double(), pi, pj, -1, "coin")
    pa_s, pb_s = _pair_correct(z_a.double(), pi, pj, 1, "wrong"), _pair_correct(z_b.double(), pi, pj, -1, "wrong")

    # Difference in Means
    d = dim_direction(A_tr, B_tr)
    proj = lambda x: x.double() @ d.to(x.device)  # noqa: E731  [n, T]
    mean_a, mean_b = float(proj(A_tr).mean()), float(proj(B_tr).mean())
    mid, half = (mean_a + mean_b) / 2, (mean_a - mean_b) / 2
    pos = lambda x: (proj(x) - mid) / half  # noqa: E731
    da, db = (proj(A_te) > mid).double(), (proj(B_te) < mid).double()
    dim_train = _balanced(proj(A_tr) > mid, proj(B_tr) < mid)
    row = sae.W_dec[j].detach().double().cpu() * o
    cos = float(row @ d / row.norm().clamp_min(1e-12))
    row_s = sae.W_dec[js].detach().double().cpu() * o_js
    sign_latent["cos_to_dim"] = float(row_s @ d / row_s.norm().clamp_min(1e-12))

    neutral_positions = neutral_z = None
    if neutral_acts is not None:
        N = _samples(neutral_acts, "neutral_acts")
        neutral_positions = pos(N).mean(1).tolist()
        neutral_z = encode_samples(sae, N)[1][..., j].mean(1).tolist()

    return AxisResult(
        n_train_a=A_tr.shape[0] * A_tr.shape[1], n_train_b=B_tr.shape[0] * B_tr.shape[1],
        n_test_a=A_te.shape[0] * A_te.shape[1], n_test_b=B_te.shape[0] * B_te.shape[1], paired=paired,
        best_latent=j, orientation=o, threshold=theta, train_threshold_accuracy=best_thr["train_accuracy"],
        threshold_accuracy=_balanced(ta, tb), threshold_accuracy_vote=_vote(ta, tb), **best, cos_to_dim=cos,
        sign_latent=sign_latent, best_pair=(pi, pj), train_best_pair_accuracy=pair_train,
        best_pair_accuracy=_balanced(pa, pb), best_pair_accuracy_strict=_balanced(pa_s, pb_s),
        dim_train_accuracy=dim_train, dim_test_accuracy=_balanced(da, db), dim_accuracy_vote=_vote(da, db),
        dim_relative_accuracy=relative_accuracy(proj(A_te), proj(B_te), paired),
        test_position_a=float(pos(A_te).mean()), test_position_b=float(pos(B_te).mean()),
        neutral_positions=neutral_positions, neutral_z=neutral_z,
    )


def sign_summary(sae, token_acts: torch.Tensor, *, batch_size: int = 4096, min_share: float = 0.1) -> dict:
    """Alive and bidirectional latents on a token sample (:func:`abstopk_mini.codestats.code_stats`).

    ``bidirectional_fraction`` = bidirectional latents / alive latents, with a latent
    bidirectional when each sign holds ≥ ``min_share`` of its non-zeros
    (:func:`abstopk_mini.metrics.bidirectional_mask`). shape: token_acts [N, d_in]
    """
    st = code_stats(sae, token_acts, batch_size)
    return {"n_tokens": st.n_rows, "alive_fraction": int(st.alive.sum()) / st.n_pos.numel(),
            "n_bidirectional": int(st.bidirectional(min_share).sum()),
            "bidirectional_fraction": st.bidirectional_fraction(min_share)}


# =========================================================================== runners
