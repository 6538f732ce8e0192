r"""Sparse kernels for top-k codes: the autograd pieces behind :mod:`abstopk_mini.kernels.fast`.

A top-k code of a batch has N non-zeros: rows :math:`r_n`, latents :math:`c_n`, values
:math:`v_n` (a :class:`Pattern` plus a value vector). With :math:`g = \partial L/\partial \hat x`,
:math:`\tilde x = s\,x - b_{dec}` and :math:`\delta_n = \partial L / \partial u_{r_n c_n}`:

.. math::
    \hat x_b &= \textstyle\sum_{n:\,r_n = b} v_n\, W_{dec}[c_n]
        && \text{embedding\_bag over the rows of } W_{dec},\ N d_{in} \\
    \partial L/\partial v_n &= \langle g_{r_n},\, W_{dec}[c_n] \rangle
        && \text{a matmul sampled at the pattern (sampled\_addmm)} \\
    \partial L/\partial W_{dec}[c] &= \textstyle\sum_{n:\,c_n = c} v_n\, g_{r_n}
        && \text{embedding\_bag over the rows of } g \text{, entries grouped by latent} \\
    \partial L/\partial W_{enc}[:, c] &= \textstyle\sum_{n:\,c_n = c} \delta_n\, \tilde x_{r_n}
        && \text{the same, over the rows of } \tilde x \\
    \partial L/\partial b_{enc} = \textstyle\sum_n \delta_n e_{c_n}, &\quad
    \partial L/\partial b_{dec}\big|_{enc} = -W_{enc}\, \partial L/\partial b_{enc}
        && \text{one mat-vec: no per-row gradient is formed}

Each costs N·d_in (N = B·k) instead of the dense B·d_sae·d_in. Grouping by latent needs one
stable sort of the N latent indices (:meth:`Pattern.by_col`), shared by both weight gradients.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Pattern", "sparse_decode", "sddmm", "GatherPreacts", "DeadBlockDecode"]


# ----------------------------------------------------------------------------- sparsity pattern
class Pattern:
    """Where the N non-zeros of a [B, d_sae] code sit, in CSR order (grouped by row).

    shape: rows [N], cols [N] (long), crow [B+1] (row r owns entries crow[r]:crow[r+1]).
    The latent-grouped order (for the weight gradients) is computed once, on first use.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, crow: torch.Tensor, n_latents: int):
        self.rows, self.cols, self.crow, self.n_latents = rows, cols, crow, int(n_latents)
        self._by_col = None

    @property
    def n_rows(self) -> int:
        return self.crow.numel() - 1

    @classmethod
    def per_row(cls, idx: torch.Tensor, n_latents: int) -> "Pattern":
        """k entries in every row.  shape: idx [B, k] -> Pattern with N = B·k"""
        B, k = idx.shape
        dev = idx.device
        rows = torch.arange(B, device=dev).repeat_interleave(k)
        crow = torch.arange(0, B * k + 1, k, device=dev)
        return cls(rows, idx.reshape(-1), crow, n_latents)

    @classmethod
    def from_flat(cls, flat: torch.Tensor, n_rows: int, n_latents: int) -> "Pattern":
        """Entries given as flat indices row·d_sae + col (any order).  shape: flat [N]"""
        flat = flat.sort().values
        rows, cols = flat // n_latents, flat % n_latents
        return cls(rows, cols, _crow(rows, n_rows), n_latents)

    def by_col(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(order [N], ccol [d_sae+1]): entries order[ccol[c]:ccol[c+1]] belong to latent c."""
        if self._by_col is None:
            self._by_col = (_stable_argsort(self.cols, self.n_latents), _crow(self.cols, self.n_latents))
        return self._by_col

    def csr_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The pattern as a sparse CSR tensor of ones (for the sampled matmul)."""
        ones = torch.ones(self.cols.numel(), dtype=dtype, device=self.cols.device)
        with warnings.catch_warnings():  # "CSR support is in beta": we use only sampled_addmm, tested
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(self.crow, self.cols, ones, (self.n_rows, self.n_latents), check_invariants=False)


def _stable_argsort(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Stable argsort of integer keys in [0, n).

    On CPU with n <= 2**16, numpy's radix sort on uint16 keys: ~10x faster than torch.argsort
    and single-threaded (torch's parallel sort slows down 50x when another process holds a core).
    """
    if keys.device.type == "cpu" and n <= 2**16:
        return torch.from_numpy(np.argsort(keys.numpy().astype(np.uint16), kind="stable"))
    return torch.argsort(keys.int() if n < 2**31 else keys, stable=True)


def _crow(sorted_keys: torch.Tensor, n: int) -> torch.Tensor:
    """Compressed offsets [n+1] of a key vector whose entries are grouped (counts need no order)."""
    counts = torch.bincount(sorted_keys, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


# ----------------------------------------------------------------------------- kernels
def _rows_sum(table: torch.Tensor, idx: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """out[i] = Σ_{j in offsets[i]:offsets[i+1]} weights[j] · table[idx[j]].  shape: -> [len(offsets)-1, d]"""
    return F.embedding_bag(
        idx, table, offsets, mode="sum", per_sample_weights=weights.to(table.dtype), include_last_offset=True
    )


#: dtypes ``torch.sparse.sampled_addmm`` rejects (on CPU); :func:`sddmm` computes them in float32
LOW_PRECISION = (torch.bfloat16, torch.float16)


def sddmm(A: torch.Tensor, T: torch.Tensor, pat: Pattern) -> torch.Tensor:
    """out[n] = ⟨A[rows n], T[cols n]⟩ (a matmul sampled at the pattern).  shape: A [B, d], T [d_sae, d] -> [N]

    bfloat16 / float16 operands (an SAE with ``dtype="bfloat16"``, as GPUs train) are cast to
    float32 at the boundary, the sampled product is computed in float32, and the result is cast
    back: ``sampled_addmm`` has no half-precision kernel, and each dot product then rounds once
    (at the final cast) instead of once per partial sum, which is as accurate as the dense bf16
    matmul of the reference path (fp32 accumulation) or better. The cost is one float32 copy of
    A and T per call.
    """
    if pat.cols.numel() == 0:
        return A.new_zeros(0)
    if A.dtype in LOW_PRECISION or T.dtype in LOW_PRECISION:
        return sddmm(A.float(), T.float(), pat).to(A.dtype)
    out = torch.sparse.sampled_addmm(pat.csr_mask(A.dtype), A, T.t(), beta=0.0)
    return out.values()


def _by_latent(src: torch.Tensor, weights: torch.Tensor, pat: Pattern) -> torch.Tensor:
    """out[c] = Σ_{n: c_n = c} weights[n] · src[r_n].  shape: src [B, d], weights [N] -> [d_sae, d]"""
    order, ccol = pat.by_col()
    return _rows_sum(src, pat.rows[order], ccol, weights[order])


class SparseDecode(torch.autograd.Function):
    """x̂_b = Σ_{n: r_n = b} v_n W_dec[c_n] (no bias).  shape: vals [N], W_dec [d_sae, d] -> [B, d]"""

    @staticmethod
    def forward(ctx, vals, W_dec, pat):
        ctx.save_for_backward(vals, W_dec)
        ctx.pat = pat
        return _rows_sum(W_dec, pat.cols, pat.crow, vals)

    @staticmethod
    def backward(ctx, g):
        vals, W_dec = ctx.saved_tensors
        pat = ctx.pat
        g = g.contiguous()
        grad_vals = sddmm(g, W_dec, pat) if ctx.needs_input_grad[0] else None
        grad_W = _by_latent(g, vals, pat) if ctx.needs_input_grad[1] else None
        return grad_vals, grad_W, None


class GatherPreacts(torch.autograd.Function):
    """u_n = ⟨x_in[r_n] − b_dec, W_enc[:, c_n]⟩ + b_enc[c_n], values precomputed; sparse backward.

    shape: u_sel [N], x_in [B, d], b_dec [d], W_enc [d, d_sae], b_enc [d_sae] -> [N]
    """

    @staticmethod
    def forward(ctx, u_sel, x_in, b_dec, W_enc, b_enc, pat):
        ctx.save_for_backward(x_in, b_dec, W_enc)
        ctx.pat = pat
        return u_sel.clone()

    @staticmethod
    def backward(ctx, delta):
        x_in, b_dec, W_enc = ctx.saved_tensors
        pat = ctx.pat
        need = ctx.needs_input_grad
        delta = delta.contiguous()
        grad_b_enc = torch.zeros(pat.n_latents, dtype=delta.dtype, device=delta.device).index_add_(0, pat.cols, delta)
        grad_x = grad_b_dec = grad_W = None
        if need[3]:
            grad_W = _by_latent(x_in - b_dec, delta, pat).t()  # [d, d_sae] view; autograd lays it out
        if need[2]:
            grad_b_dec = -(W_enc @ grad_b_enc)
        if need[1]:
            grad_x = _rows_sum(W_enc.t().contiguous(), pat.cols, pat.crow, delta)
        return None, grad_x, grad_b_dec, grad_W, grad_b_enc if need[4] else None, None


class DeadBlockDecode(torch.autograd.Function):
    """AuxK decode on the block of dead latents, dense inside the block.

    u_D = (x_in − b_dec) W_enc[:, D] + b_enc[D]; z_D keeps ``local`` [B, k] of each row (ReLU'd
    unless ``signed``); returns z_D W_dec[D]. The backward writes only the D rows/columns.

    shape: x_in [B, d], dead_idx [n_dead], local [B, k] (positions in the block) -> [B, d]
    """

    @staticmethod
    def forward(ctx, x_in, b_dec, W_enc, b_enc, W_dec, dead_idx, local, signed):
        xc = x_in - b_dec
        W_enc_D = W_enc.index_select(1, dead_idx)
        W_dec_D = W_dec.index_select(0, dead_idx)
        vals = (xc @ W_enc_D + b_enc[dead_idx]).gather(1, local)
        gate = None if signed else vals > 0
        z = torch.zeros(x_in.shape[0], dead_idx.numel(), dtype=xc.dtype, device=xc.device)
        z.scatter_(1, local, vals if signed else vals * gate)
        ctx.save_for_backward(xc, W_enc_D, W_dec_D, z, dead_idx, local, gate)
        ctx.shapes = (W_enc.shape, W_dec.shape)
        return z @ W_dec_D

    @staticmethod
    def backward(ctx, g):
        xc, W_enc_D, W_dec_D, z, dead_idx, local, gate = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_kept = (g @ W_dec_D.t()).gather(1, local)  # ∂L/∂u at the kept entries
        if gate is not None:
            grad_kept = grad_kept * gate
        G = torch.zeros_like(z).scatter_(1, local, grad_kept)  # [B, n_dead]
        G_sum = G.sum(0)
        grads = [None] * 8
        if need[0]:
            grads[0] = G @ W_enc_D.t()
        if need[1]:
            grads[1] = -(W_enc_D @ G_sum)
        if need[2]:
            grads[2] = xc.new_zeros(ctx.shapes[0])
            grads[2][:, dead_idx] = xc.t() @ G
        if need[3]:
            grads[3] = xc.new_zeros(ctx.shapes[0][1])
            grads[3][dead_idx] = G_sum
        if need[4]:
            grads[4] = xc.new_zeros(ctx.shapes[1])
            grads[4][dead_idx] = z.t() @ g
        return tuple(grads)


def sparse_decode(vals: torch.Tensor, W_dec: torch.Tensor, pat: Pattern) -> torch.Tensor:
    """Differentiable Σ_n v_n W_dec[c_n] per row (no bias).  shape: vals [N] -> [B, d_in]"""
    return SparseDecode.apply(vals, W_dec, pat)

