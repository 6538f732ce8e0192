"""Training data: the batches :func:`~abstopk_mini.train.train_sae` reads, from any source.

:class:`Batches` turns a tensor ``[N, d_in]`` (a seeded permutation per epoch), a
:class:`~abstopk_mini.lm.shards.ShardDataset` (its own shuffle per epoch, ``iter_epoch``) or an
iterable of ``[b, d_in]`` tensors (re-batched to ``batch_size``; a one-shot iterator is read once)
into training batches from any step on, deterministically, so a resumed run reads the same rows
as one that never stopped. Rows holding NaN/Inf are refused, or dropped and counted
(``drop_nonfinite``).
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Iterator

import torch

__all__ = ["Batches", "check_tensor", "finite_rows"]


def check_tensor(x, d_in: int, where: str) -> None:
    """Raise unless ``x`` is a real floating-point tensor [N, d_in]; ``where`` names it in the message."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor [N, d_in] or an iterable of them; got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{where} has dtype {x.dtype}; SAEs train on real floating-point activations — use x.float()")
    if x.ndim != 2:
        raise ValueError(f"{where} must be 2-D [N, d_in]; got shape {tuple(x.shape)} (flatten tokens first: x.reshape(-1, d_in))")
    if x.shape[1] != d_in:
        raise ValueError(f"{where} has width {x.shape[1]} but cfg.d_in={d_in}; build the SAEConfig with d_in={x.shape[1]}")


def finite_rows(x: torch.Tensor, drop: bool, where: str) -> tuple[torch.Tensor, int]:
    """The rows of x without NaN/Inf and how many were dropped (``drop=False``: raise if any).

    shape: x [N, d] -> ([N - n_bad, d], n_bad)
    """
    ok = torch.isfinite(x).all(dim=1)
    n_bad = int((~ok).sum())
    if n_bad and not drop:
        raise ValueError(
            f"{where} has {n_bad} row(s) with NaN or Inf out of {x.shape[0]}; clean them or pass "
            "drop_nonfinite=True (CLI: train --drop-nonfinite) to drop them (the count goes into "
            "history['n_dropped_nonfinite'])"
        )
    return (x[ok] if n_bad else x), n_bad


class Batches:
    """Yields training batches from step ``start`` on, deterministically, and counts dropped rows."""

    def __init__(self, data, d_in: int, batch_size: int, seed: int, drop_nonfinite: bool):
        self.d_in, self.B, self.seed, self.drop = d_in, batch_size, seed, drop_nonfinite
        self.n_dropped = 0
        if isinstance(data, torch.Tensor):
            check_tensor(data, d_in, "activations")
            data, self.n_dropped = finite_rows(data, drop_nonfinite, "activations")
            if data.shape[0] == 0:
                raise ValueError("activations is empty (0 usable rows); pass at least one row")
            self.tensor, self.source = data, None
        else:
            if not (isinstance(data, Iterable) or hasattr(data, "iter_epoch")):
                raise TypeError(f"activations must be a tensor [N, d_in] or an iterable of batches; got {type(data).__name__}")
            self.tensor, self.source = None, data
        self.epochs = hasattr(data, "iter_epoch")  # e.g. a ShardDataset: its own order per epoch
        self.reiterable = self.tensor is not None or self.epochs or iter(data) is not data

    def sample(self, n: int) -> torch.Tensor:
        """Up to n rows from the start of the data (for the input scale and b_dec)."""
        if self.tensor is not None:
            gen = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(self.tensor.shape[0], generator=gen)[:n]
            return self.tensor[idx]
        if not self.reiterable:  # a one-shot iterator: keep what we read and put it back in front
            it, head, got = iter(self.source), [], 0
            for batch in it:
                head.append(batch)
                got += batch.shape[0] if isinstance(batch, torch.Tensor) else 0
                if got >= n:
                    break
            self.source = itertools.chain(head, it)
            self._head = head
        rows, got = [], 0
        for batch in self._raw_batches(epoch=0, peek=True):
            rows.append(batch)
            got += batch.shape[0]
            if got >= n:
                break
        if not rows:
            raise ValueError("activations is empty (the iterable yielded no rows)")
        return torch.cat(rows)[:n]

    def _raw_batches(self, epoch: int, peek: bool = False) -> Iterator[torch.Tensor]:
        if peek and not self.reiterable:
            source = self._head
        elif self.epochs:
            source = self.source.iter_epoch(epoch, seed=self.seed)
        else:
            source = self.source
        for i, batch in enumerate(source):
            where = f"batch {i} of epoch {epoch} of activations"
            check_tensor(batch, self.d_in, where)
            batch, n_bad = finite_rows(batch, self.drop, where)
            if not peek:
                self.n_dropped += n_bad
            if batch.shape[0]:
                yield batch

    def __call__(self, start: int, tokens: int | None = None) -> Iterator[torch.Tensor]:
        """Batches from step ``start`` on; for an iterable, ``tokens`` (the rows consumed by the
        first ``start`` steps) says how many rows to skip, since passes end in a partial batch."""
        if self.tensor is not None:
            N = self.tensor.shape[0]
            per_epoch = math.ceil(N / self.B)
            epoch, offset = divmod(start, per_epoch)
            while True:
                perm = torch.randperm(N, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
                for j in range(offset, per_epoch):
                    yield self.tensor[perm[j * self.B : (j + 1) * self.B]]
                epoch, offset = epoch + 1, 0
        skip, epoch = (start * self.B if tokens is None else tokens), 0
        n_dropped_before = self.n_dropped  # on resume: the count saved with the checkpoint
        while True:
            buf, n_buf = [], 0
            for batch in self._raw_batches(epoch):
                if skip:
                    cut = min(skip, batch.shape[0])
                    batch, skip = batch[cut:], skip - cut
                    if not skip:  # the rows skipped were counted before the checkpoint
                        self.n_dropped = n_dropped_before
                buf.append(batch)
                n_buf += batch.shape[0]
                while n_buf >= self.B:
                    cat = torch.cat(buf)
                    yield cat[: self.B]
                    buf, n_buf = [cat[self.B :]], n_buf - self.B
            if n_buf:
                yield torch.cat(buf)
            if not self.reiterable:
                return
            epoch += 1

    def count_steps(self) -> int:
        """Steps of ``batch_size`` in one pass over a finite re-iterable source (read once to count,
        unless it knows its length, as a ShardDataset does)."""
        if self.epochs and hasattr(self.source, "__len__"):
            return max(1, math.ceil(len(self.source) / self.B))
        n = sum(b.shape[0] for b in self._raw_batches(epoch=0))
        self.n_dropped = 0
        return max(1, math.ceil(n / self.B))
