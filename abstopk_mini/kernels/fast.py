r"""Fast paths for the top-k family: no dense code, sparse decode, sparse backward.

The reference path (:meth:`~abstopk_mini.sae.SAE.forward_train`, :func:`~abstopk_mini.losses.auxk_loss`)
builds z [B, d_sae] and multiplies it densely about six times per step (the decoder; the
gradients of z, W_dec, W_enc and of the encoder input; the AuxK decode and its backward). With
k ≪ d_sae almost all of that work is on zeros. Here a training step is:

1. :math:`u = (s\,x - b_{dec}) W_{enc} + b_{enc}`, once, densely, without autograd (an exact
   top-k needs every :math:`u_j`; this product is now most of the step);
2. the activation's selection on u gives a :class:`~abstopk_mini.kernels.sparse.Pattern`
   (k entries per row, or a flat list for the batch variants);
3. the kept pre-activations re-enter the graph through ``GatherPreacts``, whose backward
   touches only the kept columns of W_enc (and gives b_dec its gradient by one mat-vec);
4. the decode is ``sparse_decode`` (embedding_bag), whose backward touches only used rows of W_dec;
5. AuxK selects among dead latents on the same u and decodes densely inside the dead block when
   the block is small (``DeadBlockDecode``), sparsely otherwise.

The kernels and their maths are in :mod:`abstopk_mini.kernels.sparse`. Kept because they were
measured to help on CPU (``benchmarks/bench_train.py --reference``): no dense z, the sparse
decode and backward, the dense-block AuxK, numpy's radix sort for grouping by latent, fused
Adam in :func:`~abstopk_mini.train.train_sae`. Tried and dropped: a block-max top-k (no faster
than ``torch.topk``), row-chunked inference (no faster), CSR ``torch.sparse.mm`` for the weight
gradients (slower than embedding_bag), ``index_add_`` scatters (5–10x slower).

Recipe options (:mod:`abstopk_mini.recipes`) run here natively: ``use_b_enc=False`` is a zero,
untrained b_enc (the kernels add it and skip its gradient); ``input_unit_norm=True`` enters through
``sae.to_sae_space`` (x_in, where selection, decode and losses live) and ``sae.from_sae_space``
(back to the raw space in :func:`decode_sparse`); ``enc_init_scale`` only changes the initial weights.

Precision: fp32 on CPU. On CUDA the dense product runs under bf16 autocast (it only chooses
*which* latents fire) and the kept values are recomputed exactly in fp32 (``low_precision``).
An SAE stored in bfloat16 / float16 (``SAEConfig(dtype="bfloat16")``) trains on this path too:
the dense products and embedding_bag run in that dtype, as the reference path's would, and the
one kernel without a half-precision version (the sampled matmul ``sddmm``) computes in float32
with casts at its boundary. Its gradients agree with the reference path's to bf16 rounding
(``tests/test_defects_cli.py``), not bit for bit.

Entry points: :func:`forward_train` (what ``SAE.forward_train(x, fast=True)`` runs for the top-k
family; :func:`~abstopk_mini.train.train_sae` passes ``TrainConfig.fast`` there, true by default),
whose :class:`SparseCode` computes AuxK with :func:`auxk_loss`; :func:`encode_sparse` and
:func:`reconstruct` (used by ``SAE.forward`` when ``sae.fast`` is true). Both paths return one type,
:class:`~abstopk_mini.forward.TrainOutput`. The dense reference path stays, as the test oracle
(``tests/test_fast.py``) and behind ``fast=False``.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from ..forward import TrainOutput, check_input
from ..nonlinearities import K_ACTIVATIONS, spec
from .sparse import DeadBlockDecode, GatherPreacts, Pattern, sddmm, sparse_decode

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
    "decode_sparse",
    "reconstruct",
    "reference_path",
]

#: AuxK decodes the dead block densely when its kept entries fill at least this fraction of it
AUX_DENSE_FRACTION = 0.1


def gather_preacts(sae, u_sel: torch.Tensor, x_in: torch.Tensor, pat: Pattern) -> torch.Tensor:
    """Put the kept pre-activations (values ``u_sel``) back into the graph of ``sae``'s encoder.

    shape: u_sel [N], x_in [B, d_in] (already scaled) -> [N]
    """
    return GatherPreacts.apply(u_sel, x_in, sae.b_dec, sae.W_enc, sae.b_enc, pat)


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

    def auxk_loss(self, sae, out: TrainOutput, dead: torch.Tensor, k_aux: int, signed: bool | None = None) -> torch.Tensor:
        """AuxK on the sparse path (:func:`auxk_loss`), for :meth:`~abstopk_mini.forward.TrainOutput.auxk_loss`."""
        return auxk_loss(sae, out, dead, k_aux, signed)


#: what :func:`forward_train` returns: the one training output type, with a :class:`SparseCode`
FastOutput = TrainOutput


# ----------------------------------------------------------------------------- selection
@torch.no_grad()
def select(act, u: torch.Tensor, sync=None) -> Pattern:
    """The non-zeros the activation module ``act`` keeps in ``u``, as a :class:`Pattern`.

    Per-row selection (``spec.selection == "row"``) uses ``act.select``; per-batch selection uses
    ``act.keep`` (:meth:`~abstopk_mini.nonlinearities.BatchTopK.keep`: the k·B largest scores of
    the batch and the running threshold in training, score > threshold in eval), the very code
    the module's own forward runs. With ``sync`` (a :class:`~abstopk_mini.distributed.Sync`) the
    batch budget and the threshold are global across ranks, so DDP keeps exactly the entries one
    process would keep on the whole batch.

    shape: u [B, d_sae] -> Pattern
    """
    B, P = u.shape
    s = spec(act.name)
    if s.selection == "row":
        return Pattern.per_row(act.select(u)[1], P)
    if not s.per_batch:
        raise ValueError(f"fast.select handles the top-k family {K_ACTIVATIONS}; got activation {act.name!r}")
    return Pattern.from_flat(act.keep(u, sync), B, P)


def _low_precision_default(x: torch.Tensor) -> bool:
    return x.is_cuda


@torch.no_grad()
def _preacts(sae, x: torch.Tensor, low_precision: bool) -> torch.Tensor:
    """The dense u (no graph); bf16 autocast when ``low_precision``.  shape: [B, d_in] -> [B, d_sae]"""
    if low_precision:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return sae.pre_acts(x).to(sae.W_enc.dtype)
    check_input(x, sae.cfg)  # sae.pre_acts with the bias added in place (one [B, d_sae] buffer less)
    u = (sae.to_sae_space(x) - sae.b_dec) @ sae.W_enc
    return u.add_(sae.b_enc)


def _kept_preacts(sae, u: torch.Tensor, x_in: torch.Tensor, pat: Pattern, exact: bool) -> torch.Tensor:
    """u at the pattern, from ``u`` or (``exact``) recomputed in full precision.  shape: -> [N]"""
    if not exact:
        return u[pat.rows, pat.cols]
    with torch.no_grad():
        return sddmm(x_in - sae.b_dec, sae.W_enc.t(), pat) + sae.b_enc[pat.cols]


def _check_fast(sae) -> None:
    if not spec(sae.cfg.activation).k_based:
        raise ValueError(
            f"the fast path serves the top-k family {K_ACTIVATIONS}; this SAE has activation="
            f"{sae.cfg.activation!r} — use sae.forward_train / sae.encode (the reference path)"
        )


# ----------------------------------------------------------------------------- training
def forward_train(sae, x: torch.Tensor, sync=None, low_precision: bool | None = None) -> TrainOutput:
    """The fast training forward: dense u without graph, sparse code, sparse decode.

    Equals the dense ``sae.forward_train(x)`` (same x_in, u, x̂; z = ``out.z``) and gives the
    same gradients. ``low_precision``: None = bf16 selection on CUDA, fp32 elsewhere.

    shape: x [B, d_in] -> TrainOutput(x_in [B, d_in], u [B, d_sae] (no graph), SparseCode, x_hat [B, d_in])
    """
    _check_fast(sae)
    low = _low_precision_default(x) if low_precision is None else low_precision
    u = _preacts(sae, x, low)
    x_in = sae.to_sae_space(x)
    pat = select(sae.act, u, sync)
    u_sel = gather_preacts(sae, _kept_preacts(sae, u, x_in, pat, exact=low), x_in, pat)
    vals = u_sel if sae.cfg.signed else torch.relu(u_sel)
    x_hat = sparse_decode(vals, sae.W_dec, pat) + sae.b_dec
    return TrainOutput(x_in, u, SparseCode(vals, pat), x_hat)


def auxk_loss(sae, out: TrainOutput, dead: torch.Tensor, k_aux: int, signed: bool | None = None) -> torch.Tensor:
    r"""AuxK on the output of :func:`forward_train`: :func:`~abstopk_mini.losses.auxk_loss` without the dense z.

    Among dead latents only, keep the ``k_aux`` largest scores per row (|u| with sign when
    ``signed``, else ReLU(u); ``signed=None``: as the SAE selects, ``sae.cfg.signed``), decode them
    without bias, regress the detached residual, scale by
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
    signed = sae.cfg.signed if signed is None else bool(signed)
    with torch.no_grad():
        dead_idx = dead.nonzero().squeeze(1)
        u_dead = out.u.index_select(1, dead_idx)  # [B, n_dead]
        score = u_dead.abs() if signed else torch.relu(u_dead)
        local = score.topk(k, dim=-1, sorted=False).indices  # [B, k]
        del score
    if k >= AUX_DENSE_FRACTION * n_dead:
        e_hat = DeadBlockDecode.apply(out.x_in, sae.b_dec, sae.W_enc, sae.b_enc, sae.W_dec, dead_idx, local, signed)
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
    x_in = sae.to_sae_space(x)
    pat = select(sae.act, u)
    u_sel = _kept_preacts(sae, u, x_in, pat, exact=low)
    if torch.is_grad_enabled():
        u_sel = gather_preacts(sae, u_sel, x_in, pat)
    return SparseCode(u_sel if sae.cfg.signed else torch.relu(u_sel), pat)


def decode_sparse(sae, code: SparseCode, stats=None) -> torch.Tensor:
    """x̂ = (Σ v W_dec + b_dec) / s, then ·σ + μ with ``stats = sae.input_stats(x)`` when the SAE
    standardises its input (``cfg.input_unit_norm``; see ``SAE.decode``).  shape: code [B, d_sae] -> [B, d_in]"""
    return sae.from_sae_space(sparse_decode(code.vals, sae.W_dec, code.pat) + sae.b_dec, stats)


def reconstruct(sae, x: torch.Tensor, low_precision: bool | None = None) -> torch.Tensor:
    """``sae.decode(sae.encode(x))`` through the sparse code.  shape: x [..., d_in] -> x_hat [..., d_in]"""
    check_input(x, sae.cfg)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    x_hat = decode_sparse(sae, encode_sparse(sae, x, low_precision), sae.input_stats(x))
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
