"""Sparse coding: proximal maps, solvers (ISTA/FISTA/IHT), one-step and unrolled encoders, the [D, -D] doubling, toy data with signed ground truth.

Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
