"""Concept axes (male <-> female, ...): does one SAE latent separate a concept's two sides, by sign?

* :mod:`~abstopk_mini.concepts.pairs`: word pairs, sentence templates, the split by pair, sentiment data;
* :mod:`~abstopk_mini.concepts.words`: word and sentence activations, :func:`run_concepts`, :func:`run_sentiment`;
* :mod:`~abstopk_mini.concepts.axis`: the axis metrics and Difference-in-Means (pure tensor functions);
* :mod:`~abstopk_mini.concepts.occurrences`: gender words in natural text (:data:`GENDER_PAIRS`,
  :func:`count_words`, :func:`find_occurrences`, :func:`split_occurrences`);
* :mod:`~abstopk_mini.concepts.swap`: gender-swapped copies for a gender-balanced training text
  (:func:`swap_gender`, :func:`gender_balanced`);
* :mod:`~abstopk_mini.concepts.scan`: the all-latent scan of opposite signs (:func:`scan_latents`);
* :mod:`~abstopk_mini.concepts.contexts`: top contexts of a latent against a gender lexicon, with a null;
* :mod:`~abstopk_mini.concepts.natural`: the occurrence test and the scan end to end (:func:`run_natural`).

The names in each submodule's ``__all__`` are also reachable here (``am.concepts.load_pairs``,
``am.concepts.run_concepts``, ``am.concepts.evaluate_axis``). Submodules load on first use."""

import importlib

from .._lazy import lazy_submodules

_PUBLIC_FROM = ("pairs", "words", "axis", "occurrences", "swap", "scan", "contexts", "natural")  # submodules whose __all__ this package re-exports
_submodule, _submodules = lazy_submodules(__name__, __path__)


def __getattr__(name: str):
    if name in _submodules():
        return _submodule(name)
    for sub in _PUBLIC_FROM:
        module = importlib.import_module(f"{__name__}.{sub}")
        if name in module.__all__:
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(_submodules()).union(*(importlib.import_module(f"{__name__}.{s}").__all__ for s in _PUBLIC_FROM)))
