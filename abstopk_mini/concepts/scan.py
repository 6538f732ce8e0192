r"""The all-latent scan: which latents take opposite signs on the two sides of a concept, in natural text?

Input: two :class:`~abstopk_mini.concepts.occurrences.Occurrences` (train and test, split by
document with :func:`~abstopk_mini.concepts.occurrences.split_occurrences`). With
:math:`z = \mathrm{SAE}(x) \in \mathbb{R}^{m}` at each occurrence and orientation :math:`o_j \in \{\pm 1\}`:

* mean sign of latent j on word w: :math:`\bar s_{wj} = \operatorname{mean}_{r \in w} \operatorname{sign}(z_{rj})`;
* **pair share**: the share of pairs (a, b) with occurrences of both words in the split on which
  :math:`o_j \bar s_{aj} > 0 > o_j \bar s_{bj}` (opposite mean signs, side a the positive one);
* **occurrence share**: the balanced share of occurrences with the pair-consistent sign,
  :math:`\tfrac12\,[P_a(o_j z_j > 0) + P_b(o_j z_j < 0)]` (a zero is wrong);
* coverage: share of test occurrences with :math:`z_j \ne 0`.

:math:`o_j` and the ranking (pair share, then occurrence share, then index) are chosen on train;
the test numbers of the chosen latents are the result. For a non-negative SAE (TopK, ReLU, ...)
no latent can take both signs: every pair share is 0 and the occurrence share is at most 0.5.
The like-for-like comparison is then the **best pair of latents** (i fires on side a, j on side
b, scored as one signed latent :math:`v = z_i - z_j`): i and j are taken from the
``n_candidates`` latents leaning most to their side (train firing rate :math:`P(z > 0)` on that
side minus on the other); the pair with the best train (pair share, occurrence share) wins. It
is reported for every SAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .axis import encode_samples
from .occurrences import Occurrences

__all__ = ["sign_shares", "LatentScan", "scan_latents"]

NONNEG_NOTE = ("non-negative SAE: a latent cannot take both signs, so every single-latent pair share is 0 "
               "and the occurrence share is at most 0.5; compare best_pair (two latents, one per side)")


def sign_shares(signs: torch.Tensor, occ: Occurrences, orientation=1) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Pair share and occurrence share (module docstring) of each column of ``signs``.

    orientation: +1, −1 or a tensor [k] of ±1. Pairs without occurrences of both words are left out.
    shape: signs [n, k] (values in {−1, 0, +1}) -> pair_share [k], occurrence_share [k] (float64), n_pairs
    """
    if (occ.side == 1).sum() == 0 or (occ.side == -1).sum() == 0:
        raise ValueError(f"the occurrences hold {int((occ.side == 1).sum())} side-a and {int((occ.side == -1).sum())} "
                         "side-b rows; both sides are needed: pass more text or a larger max_tokens")
    s = signs.double() * torch.as_tensor(orientation, dtype=torch.float64)
    words = sorted({w for p in occ.pairs for w in p})
    index = {w: i for i, w in enumerate(words)}
    member = torch.zeros(len(words), len(occ), dtype=torch.float64)
    member[[index[w] for w in occ.word], torch.arange(len(occ))] = 1.0
    count = member.sum(1)
    mean_sign = member @ s / count.clamp_min(1)[:, None]  # [n_words, k]
    pairs = [(index[a], index[b]) for a, b in occ.pairs if count[index[a]] > 0 and count[index[b]] > 0]
    if pairs:
        a, b = zip(*pairs)
        pair_share = ((mean_sign[list(a)] > 0) & (mean_sign[list(b)] < 0)).double().mean(0)
    else:
        pair_share = torch.zeros(s.shape[1], dtype=torch.float64)
    male = occ.side == 1
    occ_share = ((s[male] > 0).double().mean(0) + (s[~male] < 0).double().mean(0)) / 2
    return pair_share, occ_share, len(pairs)


def _rank(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Indices sorted by ``first`` descending, then ``second`` descending, then index ascending."""
    order = second.argsort(descending=True, stable=True)
    return order[first[order].argsort(descending=True, stable=True)]


@dataclass
class LatentScan:
    """The scan of every latent (definitions in the module docstring).

    shape: orientation [m] long; pair_share_*, occurrence_share_*, coverage_test [m] float64;
    order [m]: latents ranked on train. best_pair: ``{"latents": [i, j], "train_pair_share", ...}``.
    """

    signed: bool
    orientation: torch.Tensor
    pair_share_train: torch.Tensor
    pair_share_test: torch.Tensor
    occurrence_share_train: torch.Tensor
    occurrence_share_test: torch.Tensor
    coverage_test: torch.Tensor
    order: torch.Tensor
    n_train: int
    n_test: int
    n_pairs_train: int
    n_pairs_test: int
    best_pair: dict
    note: str = ""

    def latent(self, j: int) -> dict:
        """All numbers of latent ``j``."""
        return {"latent": int(j), "orientation": int(self.orientation[j]),
                "train_pair_share": float(self.pair_share_train[j]), "test_pair_share": float(self.pair_share_test[j]),
                "train_occurrence_share": float(self.occurrence_share_train[j]),
                "test_occurrence_share": float(self.occurrence_share_test[j]), "test_coverage": float(self.coverage_test[j])}

    def summary(self, n_top: int = 10) -> dict:
        """JSON-able: ``top`` (chosen on train, held-out numbers: the result) and ``top_by_test``
        (ranked on the held-out numbers themselves: an optimistic upper bound, selection on test)."""
        by_test = _rank(self.pair_share_test, self.occurrence_share_test)
        return {"signed": self.signed, "n_latents": len(self.order), "n_train": self.n_train, "n_test": self.n_test,
                "n_pairs_train": self.n_pairs_train, "n_pairs_test": self.n_pairs_test,
                "top": [self.latent(j) for j in self.order[:n_top].tolist()],
                "top_by_test": [self.latent(j) for j in by_test[:n_top].tolist()],
                "n_latents_test_pair_share_ge_0.8": int((self.pair_share_test >= 0.8).sum()),
                "best_pair": self.best_pair, "note": self.note}


def _best_pair(z_tr, z_te, occ_train, occ_test, n_candidates):
    """Two latents, i firing on side a and j on side b, scored as v = z_i − z_j (module docstring)."""
    male = occ_train.side == 1
    fire = (z_tr > 0).double()
    lean = fire[male].mean(0) - fire[~male].mean(0)  # [m]: fires more on a (> 0) or on b (< 0)
    c = min(n_candidates, z_tr.shape[1])
    cand_a, cand_b = lean.argsort(descending=True, stable=True)[:c], (-lean).argsort(descending=True, stable=True)[:c]
    signs = lambda z: torch.sign(z[:, cand_a, None] - z[:, None, cand_b]).reshape(len(z), -1)  # noqa: E731
    ps, os_, _ = sign_shares(signs(z_tr), occ_train)
    same = (cand_a[:, None] == cand_b[None, :]).reshape(-1)
    ps, os_ = ps.masked_fill(same, -1.0), os_.masked_fill(same, -1.0)
    best = int(_rank(ps, os_)[0])
    i, j = int(cand_a[best // c]), int(cand_b[best % c])
    ps_te, os_te, _ = sign_shares(torch.sign(z_te[:, [i]] - z_te[:, [j]]), occ_test)
    return {"latents": [i, j], "train_pair_share": float(ps[best]), "test_pair_share": float(ps_te[0]),
            "train_occurrence_share": float(os_[best]), "test_occurrence_share": float(os_te[0])}


def scan_latents(sae, occ_train: Occurrences, occ_test: Occurrences, *, n_candidates: int = 16) -> LatentScan:
    """Pair share and occurrence share of every latent on train and test; orientation and ranking
    chosen on train (module docstring). Codes come from :func:`~abstopk_mini.concepts.axis.encode_samples`.

    shape: occ_train.acts [n_train, d_in], occ_test.acts [n_test, d_in] -> LatentScan over m = d_sae latents
    """
    for name, occ in (("occ_train", occ_train), ("occ_test", occ_test)):
        if not isinstance(occ, Occurrences):
            raise TypeError(f"{name} must be an Occurrences (find_occurrences + split_occurrences); got {type(occ).__name__}")
        if len(occ) == 0:
            raise ValueError(f"{name} holds no occurrences; pass more text (or a larger max_tokens)")
    z_tr, z_te = encode_samples(sae, occ_train.acts)[1], encode_samples(sae, occ_test.acts)[1]
    up, down = sign_shares(torch.sign(z_tr), occ_train, 1), sign_shares(torch.sign(z_tr), occ_train, -1)
    flip = (down[0] > up[0]) | ((down[0] == up[0]) & (down[1] > up[1]))
    orientation = torch.where(flip, -1, 1).long()
    ps_tr, os_tr = torch.where(flip, down[0], up[0]), torch.where(flip, down[1], up[1])
    ps_te, os_te, n_pairs_test = sign_shares(torch.sign(z_te), occ_test, orientation)
    signed = bool(getattr(sae.cfg, "signed", True))
    return LatentScan(signed=signed, orientation=orientation, pair_share_train=ps_tr, pair_share_test=ps_te,
                      occurrence_share_train=os_tr, occurrence_share_test=os_te,
                      coverage_test=(z_te != 0).double().mean(0), order=_rank(ps_tr, os_tr),
                      n_train=len(occ_train), n_test=len(occ_test), n_pairs_train=up[2], n_pairs_test=n_pairs_test,
                      best_pair=_best_pair(z_tr, z_te, occ_train, occ_test, n_candidates),
                      note="" if signed else NONNEG_NOTE)
