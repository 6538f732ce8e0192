"""The fast path of the top-k family: sparse decode and sparse backward, tested against the dense reference in :mod:`abstopk_mini.sae`.

Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
