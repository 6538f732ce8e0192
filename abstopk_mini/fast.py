r"""Fast paths for the top-k family: sparse codes, sparse decode, sparse encoder backward.

The reference path (:meth:`~abstopk_mini.sae.SAE.forward_train`, :func:`~abstopk_mini.losses.auxk_loss`)
builds a dense code z [B, d_sae] and multiplies it densely, so with k ≪ d_sae almost all of its
work is on zeros. A top-k code has N = B·k non-zeros: rows :math:`r_n`, latents :math:`c_n`,
values :math:`v_n`. With :math:`\tilde x = s\,x - b_{dec}`, :math:`g = \partial L/\partial \hat x`
and :math:`\delta_n = \partial L / \partial u_{r_n c_n}`:

.. math::
    \hat x_b &= \textstyle\sum_{n:\,r_n = b} v_n\, W_{dec}[c_n] + b_{dec}
        && \text{(embedding\_bag, } N d_{in}) \\
    \partial L/\partial v_n &= \langle g_{r_n},\, W_{dec}[c_n] \rangle
        && \text{(sampled matmul, } N d_{in}) \\
    \partial L/\partial W_{dec}[c] &= \textstyle\sum_{n:\,c_n = c} v_n\, g_{r_n}
        && \text{(embedding\_bag grouped by latent)} \\
    \partial L/\partial W_{enc}[:, c] &= \textstyle\sum_{n:\,c_n = c} \delta_n\, \tilde x_{r_n}
        && \text{(the same)} \\
    \partial L/\partial b_{enc} = \textstyle\sum_n \delta_n e_{c_n}, &\quad
    \partial L/\partial b_{dec}\big|_{enc} = -W_{enc}\, \partial L/\partial b_{enc}
        && \text{(one mat-vec, no per-row gradient)}

Only the encoder product :math:`u = \tilde x W_{enc} + b_{enc}` (B·d_in·d_sae) stays dense: an
exact top-k needs every :math:`u`. It is computed once, without autograd; the selected entries
re-enter the graph through :class:`_GatherPreacts`, whose backward is the sparse one above.
The reference path does that product about five more times (decoder forward, the gradients of
z, W_enc, W_dec, the AuxK decode and its backward).

Precision: fp32 on CPU. On CUDA the dense product runs under bf16 autocast (it only chooses
*which* latents fire) and the kept values are recomputed exactly in fp32 (``low_precision``).

Entry points: :func:`forward_train` and :func:`auxk_loss` (used by :func:`~abstopk_mini.train.train_sae`
when ``TrainConfig.fast`` is true, the default), :func:`encode_sparse` and :func:`reconstruct`
(used by ``SAE.forward`` when ``sae.fast`` is true). The dense reference stays the test oracle
(``tests/test_fast.py``).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .nonlinearities import K_ACTIVATIONS

__all__ = [
    "Pattern",
    "SparseCode",
    "FastOutput",
    "select",
    "sparse_decode",
    "gather_preacts",
    "forward_train",
    "auxk_loss",
    "encode_sparse",
    "reconstruct",
]

PER_ROW = ("topk", "abstopk")
#: AuxK decodes the dead block densely when its kept entries fill at least this fraction of it
AUX_DENSE_FRACTION = 0.1
BATCH = ("batchtopk", "batchabstopk")


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


def _sddmm(A: torch.Tensor, T: torch.Tensor, pat: Pattern) -> torch.Tensor:
    """out[n] = ⟨A[rows n], T[cols n]⟩ (a matmul sampled at the pattern).  shape: A [B, d], T [d_sae, d] -> [N]"""
    if pat.cols.numel() == 0:
        return A.new_zeros(0)
    out = torch.sparse.sampled_addmm(pat.csr_mask(A.dtype), A, T.t(), beta=0.0)
    return out.values()


def _by_latent(src: torch.Tensor, weights: torch.Tensor, pat: Pattern) -> torch.Tensor:
    """out[c] = Σ_{n: c_n = c} weights[n] · src[r_n].  shape: src [B, d], weights [N] -> [d_sae, d]"""
    order, ccol = pat.by_col()
    return _rows_sum(src, pat.rows[order], ccol, weights[order])


class _SparseDecode(torch.autograd.Function):
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
        grad_vals = _sddmm(g, W_dec, pat) if ctx.needs_input_grad[0] else None
        grad_W = _by_latent(g, vals, pat) if ctx.needs_input_grad[1] else None
        return grad_vals, grad_W, None


class _GatherPreacts(torch.autograd.Function):
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


class _DeadBlockDecode(torch.autograd.Function):
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
    return _SparseDecode.apply(vals, W_dec, pat)


def gather_preacts(sae, u_sel: torch.Tensor, x_in: torch.Tensor, pat: Pattern) -> torch.Tensor:
    """Put the kept pre-activations (values ``u_sel``) back into the graph of ``sae``'s encoder.

    shape: u_sel [N], x_in [B, d_in] (already scaled) -> [N]
    """
    return _GatherPreacts.apply(u_sel, x_in, sae.b_dec, sae.W_enc, sae.b_enc, pat)


# ----------------------------------------------------------------------------- the code
class SparseCode(NamedTuple):
    """A sparse code: ``vals`` [N] at ``pat`` (rows, cols). ``vals`` may carry gradients."""

    vals: torch.Tensor
    pat: Pattern

    @property
    def shape(self) -> tuple[int, int]:
        return (self.pat.n_rows, self.pat.n_latents)

    def to_dense(self) -> torch.Tensor:
        """shape: -> z [B, d_sae]"""
        z = self.vals.new_zeros(self.shape)
        return z.index_put((self.pat.rows, self.pat.cols), self.vals)

    @torch.no_grad()
    def fired(self) -> torch.Tensor:
        """Latents with a non-zero value in some row.  shape: -> bool [d_sae]"""
        out = torch.zeros(self.pat.n_latents, dtype=torch.bool, device=self.vals.device)
        out[self.pat.cols[self.vals != 0]] = True
        return out

    @torch.no_grad()
    def l0(self) -> torch.Tensor:
        """Non-zeros per row.  shape: -> long [B]"""
        nz = (self.vals != 0).long()
        return torch.zeros(self.pat.n_rows, dtype=torch.long, device=nz.device).index_add_(0, self.pat.rows, nz)

    def mean_l0(self) -> float:
        return self.l0().double().mean().item() if self.pat.n_rows else 0.0


class FastOutput(NamedTuple):
    """What :func:`forward_train` returns (the sparse sibling of :class:`~abstopk_mini.sae.SAEOutput`).

    shape: x_in [B, d_in], u [B, d_sae] (no graph), code (N non-zeros), x_hat [B, d_in]
    """

    x_in: torch.Tensor
    u: torch.Tensor
    code: SparseCode
    x_hat: torch.Tensor


# ----------------------------------------------------------------------------- selection
@torch.no_grad()
def select(act, u: torch.Tensor, sync=None) -> Pattern:
    """The non-zeros the activation module ``act`` keeps in ``u``, as a :class:`Pattern`.

    Per-row top-k uses ``act.select`` itself. The batch variants mirror
    :class:`~abstopk_mini.nonlinearities.BatchTopK` (training: the k·B largest scores of the
    batch and the running threshold update; eval: score > threshold). With ``sync`` (a
    :class:`~abstopk_mini.distributed.Sync`) the batch budget and the threshold are global
    across ranks, so DDP keeps exactly the entries one process would keep on the whole batch.

    shape: u [B, d_sae] -> Pattern
    """
    B, P = u.shape
    if act.name in PER_ROW:
        return Pattern.per_row(act.select(u)[1], P)
    if act.name not in BATCH:
        raise ValueError(f"fast.select handles {PER_ROW + BATCH}; got activation {act.name!r}")
    score = u.abs() if act.signed else torch.relu(u)
    if not act.training:
        if act.threshold < 0:  # never trained: per-row top-k of positive scores, like the reference
            idx = score.topk(act.k, dim=-1, sorted=False).indices
            keep = torch.zeros_like(score, dtype=torch.bool).scatter(-1, idx, True) & (score > 0)
        else:
            keep = score > act.threshold
        return Pattern.from_flat(keep.reshape(-1).nonzero().squeeze(1), B, P)
    flat = score.reshape(-1)
    world = sync.world_size if sync is not None else 1
    n_keep = min(act.k * B * world, flat.numel() * world)
    vals, idx = flat.topk(min(n_keep, flat.numel()), sorted=False)
    if world > 1:  # the global n_keep-th score decides, on every rank alike
        top = sync.all_gather(vals).topk(n_keep, sorted=False).values
        keep = (vals >= top.min()) & (vals > 0)
        kept_all = top[top > 0]
    else:
        keep = vals > 0
        kept_all = vals[keep]
    if kept_all.numel():
        smallest = kept_all.min().to(act.threshold.dtype)
        if act.threshold < 0:
            act.threshold.copy_(smallest)
        else:
            act.threshold.mul_(act.momentum).add_((1 - act.momentum) * smallest)
    return Pattern.from_flat(idx[keep], B, P)


def _low_precision_default(x: torch.Tensor) -> bool:
    return x.is_cuda


@torch.no_grad()
def _preacts(sae, x: torch.Tensor, low_precision: bool) -> torch.Tensor:
    """The dense u (no graph); bf16 autocast when ``low_precision``.  shape: [B, d_in] -> [B, d_sae]"""
    if low_precision:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return sae.pre_acts(x).to(sae.W_enc.dtype)
    sae._check_input(x)  # sae.pre_acts with the bias added in place (one [B, d_sae] buffer less)
    u = (x.to(sae.W_enc.dtype) * sae.cfg.input_scale - sae.b_dec) @ sae.W_enc
    return u.add_(sae.b_enc)


def _kept_preacts(sae, u: torch.Tensor, x_in: torch.Tensor, pat: Pattern, exact: bool) -> torch.Tensor:
    """u at the pattern, from ``u`` or (``exact``) recomputed in full precision.  shape: -> [N]"""
    if not exact:
        return u[pat.rows, pat.cols]
    with torch.no_grad():
        return _sddmm(x_in - sae.b_dec, sae.W_enc.t(), pat) + sae.b_enc[pat.cols]


def _check_fast(sae) -> None:
    if sae.cfg.activation not in K_ACTIVATIONS:
        raise ValueError(
            f"the fast path serves the top-k family {K_ACTIVATIONS}; this SAE has activation="
            f"{sae.cfg.activation!r} — use sae.forward_train / sae.encode (the reference path)"
        )


# ----------------------------------------------------------------------------- training
def forward_train(sae, x: torch.Tensor, sync=None, low_precision: bool | None = None) -> FastOutput:
    """The fast training forward: dense u without graph, sparse code, sparse decode.

    Equals ``sae.forward_train(x)`` (same x_in, u, x̂; z = ``out.code.to_dense()``) and gives the
    same gradients. ``low_precision``: None = bf16 selection on CUDA, fp32 elsewhere.

    shape: x [B, d_in] -> FastOutput(x_in [B, d_in], u [B, d_sae], code, x_hat [B, d_in])
    """
    _check_fast(sae)
    low = _low_precision_default(x) if low_precision is None else low_precision
    u = _preacts(sae, x, low)
    x_in = x.to(sae.W_enc.dtype) * sae.cfg.input_scale
    pat = select(sae.act, u, sync)
    u_sel = gather_preacts(sae, _kept_preacts(sae, u, x_in, pat, exact=low), x_in, pat)
    vals = u_sel if sae.cfg.signed else torch.relu(u_sel)
    x_hat = sparse_decode(vals, sae.W_dec, pat) + sae.b_dec
    return FastOutput(x_in, u, SparseCode(vals, pat), x_hat)


def auxk_loss(sae, out: FastOutput, dead: torch.Tensor, k_aux: int) -> torch.Tensor:
    r"""AuxK on a :class:`FastOutput`: :func:`~abstopk_mini.losses.auxk_loss` without the dense z.

    Among dead latents only, keep the ``k_aux`` largest scores per row (|u| with sign when the SAE
    is signed, else ReLU(u)), decode them without bias, regress the detached residual, scale by
    :math:`\min(n_\text{dead}/k_\text{aux}, 1)`. Same value and gradients as the reference.

    The selection reads the no-graph ``out.u`` restricted to the dead columns. When the kept
    entries fill more than ``AUX_DENSE_FRACTION`` of that block (few dead latents), the block is
    recomputed and decoded densely (a few [B, n_dead] matmuls, faster than gathers at that
    density); otherwise the sparse kernels are used.

    shape: dead [d_sae] bool -> scalar
    """
    n_dead = int(dead.sum())
    if n_dead == 0:
        return out.x_hat.new_zeros(())
    k = min(k_aux, n_dead)
    signed = sae.cfg.signed
    with torch.no_grad():
        dead_idx = dead.nonzero().squeeze(1)
        u_dead = out.u.index_select(1, dead_idx)  # [B, n_dead]
        score = u_dead.abs() if signed else torch.relu(u_dead)
        local = score.topk(k, dim=-1, sorted=False).indices  # [B, k]
        del score
    if k >= AUX_DENSE_FRACTION * n_dead:
        e_hat = _DeadBlockDecode.apply(out.x_in, sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec, dead_idx, local, signed)
    else:
        pat = Pattern.per_row(dead_idx[local], sae.cfg.d_sae)
        u_sel = gather_preacts(sae, u_dead.gather(1, local).reshape(-1), out.x_in, pat)
        e_hat = sparse_decode(u_sel if signed else torch.relu(u_sel), sae.W_dec, pat)
    residual = (out.x_in - out.x_hat).detach()
    return min(n_dead / k_aux, 1.0) * (e_hat - residual).pow(2).sum(-1).mean()


# ----------------------------------------------------------------------------- inference
def encode_sparse(sae, x: torch.Tensor, low_precision: bool | None = None) -> SparseCode:
    """The code of ``x`` as (values, pattern), without a dense z.  shape: x [B, d_in] -> SparseCode"""
    _check_fast(sae)
    if x.ndim != 2:
        raise ValueError(f"encode_sparse needs x [B, d_in]; got shape {tuple(x.shape)} (use x.reshape(-1, d_in))")
    low = _low_precision_default(x) if low_precision is None else low_precision
    u = _preacts(sae, x, low)
    x_in = x.to(sae.W_enc.dtype) * sae.cfg.input_scale
    pat = select(sae.act, u)
    u_sel = _kept_preacts(sae, u, x_in, pat, exact=low)
    if torch.is_grad_enabled():
        u_sel = gather_preacts(sae, u_sel, x_in, pat)
    return SparseCode(u_sel if sae.cfg.signed else torch.relu(u_sel), pat)


def decode_sparse(sae, code: SparseCode) -> torch.Tensor:
    """x̂ = (Σ v W_dec + b_dec) / s.  shape: code [B, d_sae] -> [B, d_in]"""
    return (sparse_decode(code.vals, sae.W_dec, code.pat) + sae.b_dec) / sae.cfg.input_scale


def reconstruct(sae, x: torch.Tensor, low_precision: bool | None = None) -> torch.Tensor:
    """``sae.decode(sae.encode(x))`` through the sparse code.  shape: x [..., d_in] -> x_hat [..., d_in]"""
    sae._check_input(x)
    lead = x.shape[:-1]
    x_hat = decode_sparse(sae, encode_sparse(sae, x.reshape(-1, x.shape[-1]), low_precision))
    return x_hat.reshape(*lead, x_hat.shape[-1])


@contextlib.contextmanager
def reference_path(sae):
    """Within the block ``sae(x)`` takes the dense reference path (``sae.fast = False``)."""
    old = getattr(sae, "fast", True)
    sae.fast = False
    try:
        yield sae
    finally:
        sae.fast = old
