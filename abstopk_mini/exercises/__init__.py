r"""Checks for the book's exercises, ARENA-style: write a function, pass it to ``check_*``.

    def my_abs_topk(u, k): ...
    am.exercises.check_abs_topk(my_abs_topk)   # prints "✓ your my_abs_topk is right: ..." or raises
                                               # AssertionError naming the mistake

Each check calls the reader's function on seeded inputs, compares it with the package's own
implementation and with an independent reference (a brute-force search, a numpy loop), and names the
first thing that differs in words: a lost sign, a threshold of λ instead of √(2λ), a step taken with
the wrong sign, one step too few. The book's solution cells mark their function with
:func:`reference`, and the check then says it ran on the book's solution; in a chapter's exercise
version (``python -m abstopk_mini.chapters.exercise_versions``) the function is a stub raising
``NotImplementedError("hint: ...")``, and the check stops with :class:`NotWrittenYet` and that hint.

* :func:`check_abs_topk` — the projection onto :math:`\{\|z\|_0 \le k\}` (chapter 2);
* :func:`check_prox_l0_nonneg` — the prox of :math:`\lambda\|z\|_0 + \iota_{z \ge 0}` (chapter 2);
* :func:`check_iht` — iterative hard thresholding (chapter 1);
* :func:`check_ista` — ISTA with a non-negativity option, the T-step encoder (chapter 3);
* :func:`check_twin` — the TopK SAE with latents :math:`[D, -D]` that computes what an AbsTopK SAE does (chapter 4);
* :func:`check_sae_forward` — the AbsTopK SAE's code and reconstruction, input scale and b_dec included (chapter 6);
* :func:`check_decoder_step` — the training step that keeps decoder rows at unit norm (chapter 6);
* :func:`check_fvu` — the fraction of variance unexplained, :math:`\sum\|x - \hat x\|^2 / \sum\|x - \bar x\|^2` (chapter 6);
* :func:`check_spliced_ce` — the next-token CE with an SAE spliced into the residual stream (chapter 6).

A new check is a function in a module of this folder that calls :func:`harness.call` (or
``call_tensor``) on the reader's function, raises AssertionError with the mistake in words, and ends
with :func:`harness.passed`; it is listed here. Nothing in the package uses these checks.
"""

from .coding import check_abs_topk, check_iht, check_ista, check_prox_l0_nonneg
from .harness import NotWrittenYet, PackageDisagrees, is_reference, reference
from .twin import check_twin
from .sae_steps import check_decoder_step, check_fvu, check_sae_forward
from .splice import check_spliced_ce
from . import tiny  # noqa: E402  the tiny random Gemma-3 of the model checks

__all__ = ["check_abs_topk", "check_prox_l0_nonneg", "check_iht", "check_ista", "check_twin",
           "check_sae_forward", "check_decoder_step", "check_fvu", "check_spliced_ce",
           "reference", "is_reference", "NotWrittenYet", "PackageDisagrees"]
