r"""How good is an SAE? Reconstruction, sparsity, latent health, signs, and dictionary recovery.

All functions take torch tensors; rows are samples (tokens), the last dim is features or latents.

* FVU (fraction of variance unexplained) :math:`= \sum\|x - \hat x\|^2 / \sum\|x - \bar x\|^2`.
* nMSE :math:`= \sum\|x - \hat x\|^2 / \sum\|x\|^2` (no centring; 1 for the zero reconstruction).
* L0: the mean number of non-zero latents per row (``z != 0``, so negative AbsTopK values count).
* Dead latents never fire on the data seen; dense latents fire on more than a fraction of rows.
* Sign statistics: for each latent, the share of its non-zero activations that are negative; a
  latent is **bidirectional** when each sign has at least ``min_share`` (10 %) of them
  (:func:`bidirectional_mask`, the one definition every count in the package goes through;
  streamed over many tokens by :mod:`abstopk_mini.codestats`).
* MCC (mean correlation coefficient) between a ground-truth dictionary and a learned one: the
  mean |cosine| of atoms matched one-to-one by the Hungarian algorithm.
"""

from __future__ import annotations

import torch

__all__ = [
    "sum_sq_error",
    "sum_sq_centred",
    "fvu",
    "check_variance",
    "RunningFVU",
    "nmse",
    "l0",
    "count_signs",
    "firing_counts",
    "dead_fraction",
    "dense_fraction",
    "bidirectional_mask",
    "alive_share",
    "sign_stats",
    "bidirectional_fraction",
    "cosine_matrix",
    "match_atoms",
    "mcc",
    "signed_axis_recovery",
    "split_axes",
    "antipodal_pairs",
]


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1]).double()


def sum_sq_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum\|x - \hat x\|^2`, in the dtype given (the numerator of :func:`fvu`).
    shape: x, x_hat [..., d] -> scalar tensor"""
    return (x - x_hat).pow(2).sum()


def sum_sq_centred(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum\|x - \bar x\|^2` over rows, in the dtype given (the denominator of :func:`fvu`).
    shape: x [N, d] -> scalar tensor"""
    return (x - x.mean(0)).pow(2).sum()


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained, in float64: :func:`sum_sq_error` / :func:`sum_sq_centred`.
    Streamed (:func:`abstopk_mini.evaluate.evaluate_sae`) and per-batch (:func:`abstopk_mini.losses.batch_fvu`)
    forms call the same two functions.  shape: x, x_hat [..., d] -> float"""
    x, x_hat = _rows(x), _rows(x_hat)
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape")
    return (sum_sq_error(x, x_hat) / check_variance(sum_sq_centred(x), len(x))).item()


def check_variance(centred: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The denominator of :func:`fvu`, or a ValueError when it is 0: FVU is undefined on data without
    variance (every row the same, or one row), neither 0 nor a ratio worth reporting. (NaN data
    still gives NaN.)"""
    if centred == 0:
        raise ValueError(f"FVU is undefined here: x has no variance (Σ‖x − mean(x)‖² = {centred.item():.3g} over "
                         f"{n_rows} rows: every row is the same). Evaluate on activations that vary, e.g. more tokens")
    return centred


class RunningFVU:
    r""":func:`fvu` of rows that come a batch at a time, without keeping them (a spliced model's
    reconstructions, say). The numerator sums :func:`sum_sq_error`; the denominator merges each
    batch's :func:`sum_sq_centred` and mean into those of the rows before it (the pairwise update of
    Chan, Golub & LeVeque): :math:`M_{AB} = M_A + M_B + \|\bar x_B - \bar x_A\|^2 n_A n_B / (n_A + n_B)`,
    which is :math:`\sum\|x - \bar x\|^2` of all the rows, up to rounding. float64.

    :meth:`value` is NaN before any row or when the rows have no variance, where :func:`fvu`
    raises: a streamed measurement is reported beside others, not refused."""

    def __init__(self):
        self.n = 0
        self.err = 0.0
        self.centred = 0.0
        self.mean: torch.Tensor | None = None

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Add a batch.  shape: x, x_hat [..., d]"""
        x, x_hat = _rows(x), _rows(x_hat)
        if x.shape != x_hat.shape:
            raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape")
        if len(x) == 0:
            return
        self.err += sum_sq_error(x, x_hat).item()
        mean, centred = x.mean(0), sum_sq_centred(x).item()
        if self.mean is None:
            self.mean, self.centred = mean, centred
        else:
            delta, n = mean - self.mean, self.n + len(x)
            self.centred += centred + delta.pow(2).sum().item() * self.n * len(x) / n
            self.mean = self.mean + delta * (len(x) / n)
        self.n += len(x)

    def value(self) -> float:
        """FVU of every row added so far (NaN before any row or without variance)."""
        return self.err / self.centred if self.n and self.centred > 0 else float("nan")


def nmse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Squared error relative to the squared norm of x (no centring).  shape: [..., d] -> float"""
    x, x_hat = _rows(x), _rows(x_hat)
    return ((x - x_hat).pow(2).sum() / x.pow(2).sum()).item()


def l0(z: torch.Tensor) -> float:
    """Mean number of non-zero latents per row.  shape: z [..., d_sae] -> float"""
    return (z != 0).reshape(-1, z.shape[-1]).sum(-1).double().mean().item()


def count_signs(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many rows each latent is positive and negative on (the one place codes are counted;
    :class:`abstopk_mini.codestats.CodeStats` sums it over batches).
    shape: z [..., d_sae] -> (n_pos [d_sae], n_neg [d_sae]) int64"""
    z = z.reshape(-1, z.shape[-1])
    return (z > 0).sum(0), (z < 0).sum(0)


def firing_counts(z: torch.Tensor) -> torch.Tensor:
    """How many rows each latent is non-zero on.  shape: z [..., d_sae] -> [d_sae] (int64)"""
    n_pos, n_neg = count_signs(z)
    return n_pos + n_neg


def dead_fraction(counts: torch.Tensor) -> float:
    """Share of latents that never fired.  shape: counts [d_sae] (from :func:`firing_counts`)"""
    return (counts == 0).double().mean().item()


def dense_fraction(counts: torch.Tensor, n_rows: int, above: float = 0.1) -> float:
    """Share of latents that fire on more than ``above`` of the ``n_rows`` rows."""
    return (counts.double() / n_rows > above).double().mean().item()


def bidirectional_mask(n_pos: torch.Tensor, n_neg: torch.Tensor, min_share: float = 0.1) -> torch.Tensor:
    """The bidirectional rule: a latent is bidirectional when it fired and each sign holds at least
    ``min_share`` of its non-zeros, ``n_pos >= min_share·n`` and ``n_neg >= min_share·n`` with
    ``n = n_pos + n_neg > 0``.  shape: n_pos, n_neg [d_sae] (counts) -> [d_sae] bool"""
    n = n_pos + n_neg
    return (n > 0) & (n_pos >= min_share * n) & (n_neg >= min_share * n)


def alive_share(mask: torch.Tensor, alive: torch.Tensor) -> float:
    """Share of the ``alive`` latents that ``mask`` holds (0.0 when none is alive).
    shape: mask, alive [d_sae] bool -> float"""
    n_alive = int(alive.sum())
    return int((mask & alive).sum()) / n_alive if n_alive else 0.0


def sign_stats(z: torch.Tensor, min_share: float = 0.1) -> dict[str, torch.Tensor]:
    """Per-latent sign statistics of the codes.

    Returns ``n_pos``, ``n_neg`` (counts of positive / negative activations), ``frac_negative``
    (negative share of non-zeros; NaN for latents that never fire), ``alive`` (fired at least
    once) and ``bidirectional`` (:func:`bidirectional_mask`).

    shape: z [..., d_sae] -> dict of [d_sae] tensors
    """
    n_pos, n_neg = count_signs(z)
    n = n_pos + n_neg
    frac_neg = torch.where(n > 0, n_neg.double() / n.clamp_min(1), torch.full_like(n, float("nan"), dtype=torch.float64))
    return {"n_pos": n_pos, "n_neg": n_neg, "frac_negative": frac_neg, "alive": n > 0,
            "bidirectional": bidirectional_mask(n_pos, n_neg, min_share)}


def bidirectional_fraction(z: torch.Tensor, min_share: float = 0.1) -> float:
    """Share of alive latents that are bidirectional (see :func:`bidirectional_mask`)."""
    stats = sign_stats(z, min_share)
    return alive_share(stats["bidirectional"], stats["alive"])


def cosine_matrix(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Cosines between the columns of A and the columns of B.  shape: A [d, P], B [d, Q] -> [P, Q]"""
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"the atoms must have the same dimension: A is {tuple(A.shape)}, B is {tuple(B.shape)} (atoms are columns)")
    A = A.double() / A.double().norm(dim=0, keepdim=True).clamp_min(1e-12)
    B = B.double() / B.double().norm(dim=0, keepdim=True).clamp_min(1e-12)
    return A.T @ B


def match_atoms(D_true: torch.Tensor, D_learned: torch.Tensor, signed: bool = False):
    """One-to-one matching of true atoms to learned atoms maximising total (|)cosine(|).

    Returns (true_idx, learned_idx, cos) with cos the signed cosine of each matched pair.
    shape: D_true [d, P], D_learned [d, Q] -> three [min(P, Q)] tensors
    """
    from scipy.optimize import linear_sum_assignment

    C = cosine_matrix(D_true, D_learned)
    score = C if signed else C.abs()
    rows, cols = linear_sum_assignment(score.cpu().numpy(), maximize=True)
    rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
    return rows, cols, C[rows, cols]


def mcc(D_true: torch.Tensor, D_learned: torch.Tensor) -> float:
    """Mean |cosine| of the Hungarian matching of true axes to learned atoms (1 = all recovered).

    The sign of an atom is not identifiable (an AbsTopK latent may point either way), so this
    compares axes. Averaged over the ``min(P, Q)`` matched pairs.
    shape: D_true [d, P], D_learned [d, Q] (atoms are columns) -> float
    """
    return match_atoms(D_true, D_learned)[2].abs().mean().item()


def signed_axis_recovery(D_true: torch.Tensor, D_learned: torch.Tensor, signed_codes: bool) -> float:
    """Mean cosine with which the 2P signed directions ±d_i are reachable by the learned code.

    A signed code (AbsTopK) reaches both −a and +a with one atom a, so its columns are doubled
    to [A, −A] before matching; a nonnegative code reaches only +a. The 2P true directions
    [D, −D] are matched one-to-one (signed cosine, clipped at 0). 1.0 means every direction of
    every axis has its own atom; a nonnegative SAE with one atom per axis scores at most ~0.5.
    shape: D_true [d, P], D_learned [d, Q] -> float
    """
    T = torch.cat([D_true, -D_true], dim=1)
    L = torch.cat([D_learned, -D_learned], dim=1) if signed_codes else D_learned
    cos = match_atoms(T, L, signed=True)[2].clamp_min(0)
    return (cos.sum() / T.shape[1]).item()


def split_axes(D_true: torch.Tensor, D_learned: torch.Tensor, align: float = 0.9, anti: float = -0.9) -> int:
    """How many true axes are split into a ± pair of learned atoms.

    Axis i counts when two learned atoms a, b both align with it (|cos| ≥ ``align``) and point
    opposite ways (cos(a, b) < ``anti``): what a nonnegative SAE must do to code both signs.
    shape: D_true [d, P], D_learned [d, Q] -> int
    """
    C = cosine_matrix(D_true, D_learned)  # [P, Q]
    G = cosine_matrix(D_learned, D_learned)  # [Q, Q]
    n = 0
    for i in range(C.shape[0]):
        pos = torch.nonzero(C[i] >= align).flatten()
        neg = torch.nonzero(C[i] <= -align).flatten()
        if len(pos) and len(neg) and G[pos][:, neg].min() < anti:
            n += 1
    return n


def antipodal_pairs(W_dec: torch.Tensor, below: float = -0.9) -> int:
    """Number of pairs of decoder rows with cosine below ``below`` (no ground truth needed).

    shape: W_dec [d_sae, d_in] -> int
    """
    C = cosine_matrix(W_dec.T, W_dec.T)
    return int(torch.triu(C < below, diagonal=1).sum().item())
