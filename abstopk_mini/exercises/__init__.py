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
* :func:`check_sign_accuracy` — the sign rule's balanced accuracy of one latent on two word groups (chapter 7);
* :func:`check_top_contexts` — the tokens a signed dashboard shows on each side of a latent (chapter 7);
* :func:`check_dim_direction` — the Difference-in-Means direction between two word groups (chapter 7);
* :func:`check_bidirectional_share` — which latents use both signs, and their share of the alive ones (chapter 9);
* :func:`check_fold` — the [D, −D] twin's codes folded back to AbsTopK codes (chapter 9).

A new check is a function in a module of this folder that calls :func:`harness.call` (or
``call_tensor``) on the reader's function, raises AssertionError with the mistake in words, and ends
with :func:`harness.passed`; it is listed here. Nothing in the package uses these checks.
"""

from .coding import check_abs_topk, check_iht, check_ista, check_prox_l0_nonneg
from .concepts import check_dim_direction, check_sign_accuracy, check_top_contexts
from .harness import NotWrittenYet, PackageDisagrees, is_reference, reference
from .signs import check_bidirectional_share, check_fold
from .twin import check_twin
from . import tiny  # noqa: E402  the tiny random Gemma-3 of the model checks

__all__ = ["check_abs_topk", "check_prox_l0_nonneg", "check_iht", "check_ista", "check_twin",
           "check_sign_accuracy", "check_top_contexts", "check_dim_direction", "check_bidirectional_share", "check_fold",
           "reference", "is_reference", "NotWrittenYet", "PackageDisagrees"]
