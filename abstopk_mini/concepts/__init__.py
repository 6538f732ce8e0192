"""Concept axes (male <-> female, ...): word pairs and their activations, axis metrics, Difference-in-Means.

Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
