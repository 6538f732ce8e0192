r"""What an SAE's forward pass reads and what its training forward returns, below the SAE
(:mod:`abstopk_mini.sae`) and its sparse kernels (:mod:`abstopk_mini.kernels.fast`), which both use it.

* :func:`check_input` — the one check of the activations an SAE is given.
* :class:`TrainOutput` — what ``sae.forward_train(x)`` returns, whichever kernel ran: ``x_in``,
  ``u``, ``x_hat`` and the batch's ``code``, which is a :class:`DenseCode` (the dense reference
  path, z [B, d_sae]) or a :class:`~abstopk_mini.kernels.fast.SparseCode` (the sparse kernels of
  the top-k family). Both codes answer the training loop's questions alike: ``to_dense()`` (z, on
  demand), ``fired()``, ``l0()``, ``mean_l0()`` and ``auxk_loss(...)`` (on their own kernel), so
  :func:`~abstopk_mini.train.train_sae` never asks which one it holds. The sparsity penalty is
  the activation's own (``sae.act.penalty_term(out)``, :mod:`abstopk_mini.nonlinearities`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import losses

__all__ = ["check_input", "DenseCode", "TrainOutput"]


def check_input(x, cfg) -> None:
    """TypeError unless ``x`` is a tensor; ValueError unless its last dim is the SAE's ``cfg.d_in``.

    shape: x [..., d_in]
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.shape[-1] != cfg.d_in:
        raise ValueError(
            f"x has last dim {x.shape[-1]} but this SAE reads d_in={cfg.d_in} "
            f"(hook {cfg.hook_name!r}); pass activations of the width it was trained on"
        )


class DenseCode(NamedTuple):
    """The code of a batch as the dense z (the reference path). ``z`` may carry gradients.

    shape: z [B, d_sae]
    """

    z: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.z.shape)

    def to_dense(self) -> torch.Tensor:
        """z itself (with its graph).  shape: -> z [B, d_sae]"""
        return self.z

    @torch.no_grad()
    def fired(self) -> torch.Tensor:
        """Latents with a non-zero value in some row.  shape: -> bool [d_sae]"""
        return (self.z != 0).any(0)

    @torch.no_grad()
    def l0(self) -> torch.Tensor:
        """Non-zeros per row.  shape: -> long [B]"""
        return (self.z != 0).sum(-1)

    def mean_l0(self) -> float:
        return self.l0().double().mean().item()

    def auxk_loss(self, sae, out: "TrainOutput", dead: torch.Tensor, k_aux: int, signed: bool | None = None) -> torch.Tensor:
        """AuxK on the dense path: :func:`~abstopk_mini.losses.auxk_loss` of this batch's residual and u.
        ``signed=None``: as the SAE selects (``sae.cfg.signed``).  shape: dead [d_sae] bool -> scalar"""
        signed = sae.cfg.signed if signed is None else bool(signed)
        return losses.auxk_loss(out.x_in - out.x_hat, out.u, sae.W_dec, dead, k_aux, signed)


class _TrainFields(NamedTuple):
    x_in: torch.Tensor
    u: torch.Tensor
    code: object
    x_hat: torch.Tensor


class TrainOutput(_TrainFields):
    """What a training step needs, all in the SAE's scaled space (x_in = s·x), whichever kernel ran.

    x_in: the input in the SAE's space; u: the pre-activations (with their graph on the dense path,
    which the JumpReLUs' l0 penalty needs; without on the sparse path, where only AuxK's selection
    reads them); code: a :class:`DenseCode` or a :class:`~abstopk_mini.kernels.fast.SparseCode`
    (a tensor given here is taken as the dense z); x_hat: the reconstruction, not mapped back to
    the raw space. ``z`` is the dense code, built on demand on the sparse path.

    shape: x_in [B, d_in], u [B, d_sae], code [B, d_sae], x_hat [B, d_in]
    """

    __slots__ = ()

    def __new__(cls, x_in: torch.Tensor, u: torch.Tensor, code, x_hat: torch.Tensor):
        return super().__new__(cls, x_in, u, DenseCode(code) if isinstance(code, torch.Tensor) else code, x_hat)

    @property
    def z(self) -> torch.Tensor:
        """The dense code (differentiable).  shape: -> [B, d_sae]"""
        return self.code.to_dense()

    def fired(self) -> torch.Tensor:
        """Latents that fired on some row of this batch.  shape: -> bool [d_sae]"""
        return self.code.fired()

    def mean_l0(self) -> float:
        """Non-zeros per row, averaged over the batch."""
        return self.code.mean_l0()

    def auxk_loss(self, sae, dead: torch.Tensor, k_aux: int, signed: bool | None = None) -> torch.Tensor:
        r"""AuxK (Gao et al., 2024) on the kernel that made this output: among the ``dead`` latents,
        the ``k_aux`` largest scores per row (|u| with sign when ``signed``, else ReLU(u); None: as
        ``sae`` selects) decoded without bias regress the detached residual, scaled by
        :math:`\min(n_\text{dead}/k_\text{aux}, 1)`.  shape: dead [d_sae] bool -> scalar"""
        return self.code.auxk_loss(sae, self, dead, k_aux, signed)
