"""Argument checks shared by the concept figures (:mod:`abstopk_mini.chapters.plots_concepts`) and
their widgets (:mod:`abstopk_mini.chapters.widgets_lm`): each returns the value, cleaned, or raises
a ValueError that names the argument, the value received and the fix."""

from __future__ import annotations

__all__ = ["check_pairs", "check_latent"]


def check_pairs(word_acts, pairs) -> list[tuple[str, str]]:
    """``pairs`` as a list of (side a, side b) tuples, every word of which ``word_acts`` holds."""
    pairs = [tuple(p) for p in pairs]
    if not pairs:
        raise ValueError("pairs is empty; pass at least one (side_a, side_b) word pair")
    known = set(word_acts.words)
    missing = [w for p in pairs for w in p if w not in known]
    if missing:
        raise ValueError(f"pairs hold words {missing[:5]} that word_acts has no activations for; "
                         "compute word_acts with these words (am.concepts.pair_word_activations)")
    return pairs


def check_latent(sae, latent) -> int:
    """``latent`` if it is an int index of one of the SAE's ``d_sae`` latents."""
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < sae.cfg.d_sae:
        raise ValueError(f"latent must be an int in [0, d_sae={sae.cfg.d_sae}); got {latent!r}")
    return latent
