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

* :func:`check_iht` — iterative hard thresholding (chapter 1);
* :func:`check_abs_topk` — the projection onto :math:`\{\|z\|_0 \le k\}` (chapter 2);
* :func:`check_prox_l0_nonneg` — the prox of :math:`\lambda\|z\|_0 + \iota_{z \ge 0}` (chapter 2);
* :func:`check_ista` — ISTA with a non-negativity option, the T-step encoder (chapter 3);
* :func:`check_twin` — the TopK SAE with latents :math:`[D, -D]` that computes what an AbsTopK SAE does (chapter 4);
* :func:`check_residual_stream` — the truncated forward: a hook on block L that stops the model there (chapter 5);
* :func:`check_mean_share` — the share of the mean squared norm held by the mean activation (chapter 5);
* :func:`check_sae_forward` — the AbsTopK SAE's code and reconstruction, input scale and b_dec included (chapter 6);
* :func:`check_decoder_step` — the training step that keeps decoder rows at unit norm (chapter 6);
* :func:`check_fvu` — the fraction of variance unexplained, :math:`\sum\|x - \hat x\|^2 / \sum\|x - \bar x\|^2` (chapter 6);
* :func:`check_spliced_ce` — the next-token CE with an SAE spliced into the residual stream (chapter 6);
* :func:`check_sign_accuracy` — the sign rule's balanced accuracy of one latent on two word groups (chapter 7);
* :func:`check_top_contexts` — the tokens a signed dashboard shows on each side of a latent (chapter 7);
* :func:`check_dim_direction` — the Difference-in-Means direction between two word groups (chapter 7);
* :func:`check_clamp_edit` — the residual-stream edit that clamps one SAE latent, error term kept (chapter 8);
* :func:`check_match_norm` — a steering direction at the norm of a latent's decoder row (chapter 8);
* :func:`check_log_odds` — the female-vs-male log-odds of the next token in a padded batch (chapter 8);
* :func:`check_bidirectional_share` — which latents use both signs, and their share of the alive ones (chapter 9);
* :func:`check_fold` — the [D, −D] twin's codes folded back to AbsTopK codes (chapter 9);
* :func:`check_protocol_gaps` — the AbsTopK − TopK gap at equal steps and with TopK stopped early (chapter 10);
* :func:`check_batch_abstopk` — BatchAbsTopK's training selection, the k·B largest |u| of a batch (chapter 10);
* :func:`check_threshold_update` — BatchAbsTopK's running threshold, a moving average of the smallest kept |z| (chapter 10);
* :func:`check_batch_abstopk_eval` — BatchAbsTopK at inference, |u| > θ token by token (chapter 10);
* :func:`check_antipodes` — each TopK latent's antipode, the decoder row of smallest cosine (chapter 11);
* :func:`check_verdict` — the rules that judge whether a latent's two sides mean opposite things (chapter 11);
* :func:`check_top_k` — the k latents a sparse probe reads, the largest |mean⁺ − mean⁻| (chapter 12);
* :func:`check_absorption` — one token's absorption fraction for a letter's probe (chapter 12);
* :func:`check_tpp_effects` — each latent's effect on a class's probe, the rule TPP ablates by (chapter 12).

A new check is a function in a module of this folder that calls :func:`harness.call` (or
``call_tensor``) on the reader's function, raises AssertionError with the mistake in words, and ends
with :func:`harness.passed`; it is listed here. Nothing in the package uses these checks.
"""

from . import tiny  # the tiny random Gemma-3 of the model checks
from .batch import check_batch_abstopk, check_batch_abstopk_eval, check_threshold_update
from .coding import check_abs_topk, check_iht, check_ista, check_prox_l0_nonneg
from .concepts import check_dim_direction, check_sign_accuracy, check_top_contexts
from .harness import NotWrittenYet, PackageDisagrees, is_reference, reference
from .lm_hooks import check_mean_share, check_residual_stream
from .opposites import check_antipodes, check_verdict
from .protocol import check_protocol_gaps
from .sae_steps import check_decoder_step, check_fvu, check_sae_forward
from .signs import check_bidirectional_share, check_fold
from .splice import check_spliced_ce
from .steering import check_clamp_edit, check_log_odds, check_match_norm
from .twin import check_twin
from .yardstick import check_absorption, check_top_k, check_tpp_effects

__all__ = ["check_iht", "check_abs_topk", "check_prox_l0_nonneg", "check_ista", "check_twin",  # chapters 1-4
           "check_residual_stream", "check_mean_share",  # chapter 5
           "check_sae_forward", "check_decoder_step", "check_fvu", "check_spliced_ce",  # chapter 6
           "check_sign_accuracy", "check_top_contexts", "check_dim_direction",  # chapter 7
           "check_clamp_edit", "check_match_norm", "check_log_odds",  # chapter 8
           "check_bidirectional_share", "check_fold",  # chapter 9
           "check_protocol_gaps", "check_batch_abstopk", "check_threshold_update", "check_batch_abstopk_eval",  # 10
           "check_antipodes", "check_verdict",  # chapter 11
           "check_top_k", "check_absorption", "check_tpp_effects",  # chapter 12
           "reference", "is_reference", "NotWrittenYet", "PackageDisagrees", "tiny"]
