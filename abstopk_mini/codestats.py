r"""Per-latent code statistics streamed over many tokens: counts per sign, firing rates, dead latents.

For the codes :math:`z \in \mathbb{R}^{N \times d_{sae}}` of N tokens, latent j has

* ``n_pos[j]`` :math:`= \#\{n : z_{nj} > 0\}` and ``n_neg[j]`` :math:`= \#\{n : z_{nj} < 0\}`
  (:func:`abstopk_mini.metrics.count_signs`, the one place codes are counted);
* ``n_fire = n_pos + n_neg`` and the firing ``rate = n_fire / N``; it is **dead** on the tokens
  when ``n_fire = 0`` and **dense** when ``rate > above`` (10 %);
* L0 :math:`= \sum_j n\_fire_j / N`, the mean number of non-zeros per token;
* the negative share ``n_neg / n_fire`` of each alive latent, and of all non-zeros together;
* **bidirectional** latents by :func:`abstopk_mini.metrics.bidirectional_mask`, and their share of
  the alive latents.

:func:`code_stats` encodes a tensor of activations, or any iterable of activation batches (e.g.
the shards of a harvest), ``batch_size`` rows at a time: memory is bounded by one batch of codes
plus two ``[d_sae]`` counters, whatever N is. :func:`count_codes` does the same for codes already
in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from . import metrics

__all__ = ["CodeStats", "count_codes", "iter_batches", "code_stats"]


@dataclass
class CodeStats:
    """Sign counts of the codes of ``n_rows`` tokens (module docstring).

    shape: n_pos, n_neg [d_sae] int64 (on the CPU)
    """

    n_pos: torch.Tensor
    n_neg: torch.Tensor
    n_rows: int = 0

    @classmethod
    def zeros(cls, d_sae: int) -> "CodeStats":
        return cls(torch.zeros(d_sae, dtype=torch.long), torch.zeros(d_sae, dtype=torch.long), 0)

    def add(self, z: torch.Tensor) -> "CodeStats":
        """Count one batch of codes in place (and return self).  shape: z [..., d_sae]"""
        if z.shape[-1] != self.n_pos.shape[0]:
            raise ValueError(f"z has {z.shape[-1]} latents but these counts have d_sae={self.n_pos.shape[0]}")
        n_pos, n_neg = metrics.count_signs(z)
        self.n_pos += n_pos.cpu()
        self.n_neg += n_neg.cpu()
        self.n_rows += z.reshape(-1, z.shape[-1]).shape[0]
        return self

    @property
    def n_fire(self) -> torch.Tensor:
        """Non-zeros per latent.  shape: [d_sae] int64"""
        return self.n_pos + self.n_neg

    @property
    def alive(self) -> torch.Tensor:
        """Latents that fired at least once.  shape: [d_sae] bool"""
        return self.n_fire > 0

    @property
    def rate(self) -> torch.Tensor:
        """Share of the tokens each latent fires on.  shape: [d_sae] float64"""
        return self.n_fire.double() / self.n_rows

    @property
    def l0(self) -> float:
        """Mean number of non-zero latents per token."""
        return self.n_fire.sum().item() / self.n_rows

    def dead_fraction(self) -> float:
        """Share of latents that never fired (:func:`abstopk_mini.metrics.dead_fraction`)."""
        return metrics.dead_fraction(self.n_fire)

    def dense_fraction(self, above: float = 0.1) -> float:
        """Share of latents that fire on more than ``above`` of the tokens."""
        return metrics.dense_fraction(self.n_fire, self.n_rows, above)

    def negative_share(self) -> float:
        """Share of all non-zeros that are negative (0.0 when nothing fired)."""
        total = int(self.n_fire.sum())
        return int(self.n_neg.sum()) / total if total else 0.0

    def bidirectional(self, min_share: float = 0.1) -> torch.Tensor:
        """:func:`abstopk_mini.metrics.bidirectional_mask` of the counts.  shape: [d_sae] bool"""
        return metrics.bidirectional_mask(self.n_pos, self.n_neg, min_share)

    def bidirectional_fraction(self, min_share: float = 0.1) -> float:
        """Share of the alive latents that are bidirectional (0.0 when none is alive)."""
        return metrics.alive_share(self.bidirectional(min_share), self.alive)


def count_codes(z: torch.Tensor) -> CodeStats:
    """:class:`CodeStats` of codes already in memory.  shape: z [..., d_sae]"""
    return CodeStats.zeros(z.shape[-1]).add(z)


def iter_batches(data, batch_size: int) -> Iterator[torch.Tensor]:
    """Rows of ``data`` in batches of at most ``batch_size``: a tensor [..., d] (flattened to rows)
    or an iterable of such tensors (each split again if larger).  shape: yields [<= batch_size, d]"""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if isinstance(data, torch.Tensor):
        data = [data]
    elif not isinstance(data, Iterable):
        raise TypeError(f"data must be a tensor [N, d_in] or an iterable of such tensors; got {type(data).__name__}")
    for part in data:
        yield from part.reshape(-1, part.shape[-1]).split(batch_size)


@torch.no_grad()
def code_stats(sae, data, batch_size: int = 4096) -> CodeStats:
    """:class:`CodeStats` of ``sae`` (in eval mode) on activations streamed in batches.

    data: a tensor [N, d_in] or an iterable of tensors [n_i, d_in] (for a harvest on disk:
    ``(ds.read_shard(i) for i in range(len(ds.shards)))``). Each batch is moved to the SAE's
    device; only the counts are kept.
    """
    stats = CodeStats.zeros(sae.cfg.d_sae)
    device = sae.W_enc.device
    was_training = sae.training
    sae.eval()
    try:
        for xb in iter_batches(data, batch_size):
            stats.add(sae.encode(xb.to(device)))
    finally:
        sae.train(was_training)
    return stats
