r"""One streaming pass over a harvest: per-latent signed statistics in bounded memory.

For every latent :math:`i` of an SAE and the codes :math:`z_{t,i}` of all tokens :math:`t` of a
harvest (read shard by shard, encoded in batches), :func:`latent_stats` keeps

* the counts :math:`n^+_i = \#\{t: z_{t,i} > 0\}` and :math:`n^-_i = \#\{t: z_{t,i} < 0\}`;
* the top-N tokens of each side: the N largest :math:`z_{t,i}` with :math:`z_{t,i} > 0`, and the
  N largest :math:`-z_{t,i}` with :math:`z_{t,i} < 0`; ties are broken by the smaller token
  index, so the result is the first N of the stable sort by (value desc, index asc) whatever
  the batch size;
* a signed histogram with fixed bins: on each side, :math:`H` bins of width :math:`w_i = R_i/H`
  holding :math:`|z| \in [j w_i, (j+1) w_i)`, with :math:`R_i = 2^{e_i}` the smallest power of
  two above :math:`\max_t |z_{t,i}|`.

Why this histogram is exact in one pass. :math:`R_i` is not known until the end, so it starts at
the first batch's power of two and doubles when a larger value arrives; doubling :math:`R_i`
merges bins pairwise (:math:`\lfloor |z|/2w \rfloor = \lfloor\lfloor |z|/w\rfloor / 2\rfloor`),
and with :math:`H` a power of two every :math:`|z|/w` is a multiplication by a power of two,
exact in floating point. So the counts equal a histogram of all values made at the end with the
final bins (``numpy.histogram`` on each side with edges :math:`0, w, \dots, R`).

Top-N keys. A value :math:`v` (fp32) and a token index :math:`g < 2^{32}` are packed into one
int64, ``ord(v) · 2^32 + (2^32 − 1 − g)``, where ``ord`` maps fp32 bits to an int32 of the same
order; ``torch.topk`` on the keys then sorts by (value desc, index asc) with no ties.

Memory: the state is O(d_sae · (N + H)); one batch costs O(batch_size · d_sae).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["LatentStats", "latent_stats", "pack_keys", "unpack_keys"]

_LOW = (1 << 32) - 1
_EMPTY = torch.iinfo(torch.int64).min


def pack_keys(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 keys of (fp32 value, token index): larger value first, then smaller index.

    shape: values [..., P] float32, index [..., 1] or [..., P] int64 (< 2**32) -> keys [..., P] int64
    """
    bits = values.float().contiguous().view(torch.int32)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).long()
    return ordered * (1 << 32) + (_LOW - index)


def unpack_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_keys`. shape: keys [...] int64 -> values [...] float32, index [...] int64"""
    ordered = torch.div(keys, 1 << 32, rounding_mode="floor")
    index = _LOW - (keys - ordered * (1 << 32))
    o32 = ordered.to(torch.int32)
    bits = torch.where(o32 >= 0, o32, o32 ^ 0x7FFFFFFF)
    return bits.view(torch.float32), index


@dataclass
class LatentStats:
    """What one pass over a harvest knows about every latent.

    n_tokens: tokens read. n_pos, n_neg [P] int64: tokens with z > 0 / z < 0.
    top_pos_value, top_neg_value [N, P] float32: the N largest z (positive side) and the N
    largest −z (negative side) per latent, descending; NaN where a side has fewer than N.
    top_pos_index, top_neg_index [N, P] int64: their token indices in the harvest (−1 where NaN).
    hist [P, 2, H] int64: side 0 = positive, 1 = negative; bin j holds |z| in [j w, (j+1) w).
    hist_exp [P] int64: R = 2**hist_exp, w = R / H (−10**6 for a latent that never fires).
    """

    n_tokens: int
    n_pos: torch.Tensor
    n_neg: torch.Tensor
    top_pos_value: torch.Tensor
    top_pos_index: torch.Tensor
    top_neg_value: torch.Tensor
    top_neg_index: torch.Tensor
    hist: torch.Tensor
    hist_exp: torch.Tensor

    def bin_width(self, latent: int) -> float:
        """w = 2**hist_exp / H of one latent (0.0 if it never fires)."""
        e = int(self.hist_exp[latent])
        return 0.0 if e <= _NEVER else 2.0 ** e / self.hist.shape[-1]


_NEVER = -10**6


class _Accumulator:
    """The running state of :func:`latent_stats` (all tensors on ``device``)."""

    def __init__(self, d_sae: int, n_top: int, half_bins: int, device):
        self.n = 0
        self.n_pos = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.n_neg = torch.zeros_like(self.n_pos)
        self.keys = torch.full((2, n_top, d_sae), _EMPTY, dtype=torch.long, device=device)
        self.hist = torch.zeros(d_sae, 2, half_bins, dtype=torch.long, device=device)
        self.exp = torch.full((d_sae,), _NEVER, dtype=torch.long, device=device)
        self.log2_h = half_bins.bit_length() - 1

    def add(self, z: torch.Tensor, start: int) -> None:
        """Fold one batch of codes in. shape: z [B, P] (tokens start .. start + B − 1)"""
        B, P = z.shape
        self.n += B
        self.n_pos += (z > 0).sum(0)
        self.n_neg += (z < 0).sum(0)
        index = torch.arange(start, start + B, device=z.device)[:, None]
        n_top = self.keys.shape[1]
        for side, v in enumerate((z, -z)):
            batch = torch.topk(pack_keys(v, index), min(n_top, B), dim=0).values
            merged = torch.cat([self.keys[side], batch])
            self.keys[side] = torch.topk(merged, n_top, dim=0).values
        self._add_hist(z)

    def _add_hist(self, z: torch.Tensor) -> None:
        rows, cols = z.nonzero(as_tuple=True)
        if len(cols) == 0:
            return
        v = z[rows, cols].double()
        a = v.abs()
        amax = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device).scatter_reduce_(0, cols, a, "amax")
        fired = amax > 0
        need = torch.frexp(amax)[1].long()          # amax < 2**need
        new_exp = torch.where(fired, torch.maximum(self.exp, need), self.exp)
        shift = (new_exp - self.exp).clamp(0, 62)
        grow = fired & (self.exp > _NEVER) & (shift > 0)
        if grow.any():                               # merge 2**shift old bins into one
            old = self.hist[grow]
            H = old.shape[-1]
            target = (torch.arange(H, device=z.device)[None, :] >> shift[grow][:, None]).clamp_max(H - 1)
            merged = torch.zeros_like(old).scatter_add_(2, target[:, None, :].expand_as(old), old)
            self.hist[grow] = merged
        self.exp = new_exp
        scale = torch.ldexp(torch.ones_like(a), (self.log2_h - self.exp[cols]))
        j = torch.floor(a * scale).long().clamp_max(self.hist.shape[-1] - 1)
        side = (v < 0).long()
        flat = (cols * 2 + side) * self.hist.shape[-1] + j
        self.hist.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def result(self) -> LatentStats:
        tops = []
        for side in range(2):
            values, index = unpack_keys(self.keys[side])
            keep = (self.keys[side] != _EMPTY) & (values > 0)
            tops += [torch.where(keep, values, float("nan")).cpu(), torch.where(keep, index, -1).cpu()]
        return LatentStats(self.n, self.n_pos.cpu(), self.n_neg.cpu(), *tops, self.hist.cpu(), self.exp.cpu())


@torch.no_grad()
def latent_stats(sae, batches, *, n_top: int = 10, n_bins: int = 64,
                 progress: Callable[[int], None] | None = None) -> LatentStats:
    """Stream ``batches`` of activations through ``sae.encode`` and keep :class:`LatentStats`.

    batches: an iterable of float tensors [B, d_in] in harvest order (token t of the harvest is
    the t-th row overall). n_top: N contexts per side. n_bins: histogram bins over [−R, R], a
    power of two ≥ 4 (n_bins / 2 per side). progress: called with the rows of each batch.
    shape: batches of x [B, d_in] -> LatentStats with P = d_sae
    """
    if isinstance(n_top, bool) or not isinstance(n_top, int) or n_top < 1:
        raise ValueError(f"n_top must be a positive int; got {n_top!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 4 or n_bins & (n_bins - 1):
        raise ValueError(f"n_bins must be a power of two >= 4 (exact bins, see the module docstring); got {n_bins!r}")
    device = sae.W_dec.device
    acc = _Accumulator(sae.cfg.d_sae, n_top, n_bins // 2, device)
    for x in batches:
        acc.add(sae.encode(x.to(device)).float(), acc.n)
        if progress is not None:
            progress(len(x))
    return acc.result()
