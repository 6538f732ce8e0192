"""Language models: registry and loading, the truncated forward, corpus, harvest, shards, splicing, steering and its controls, activation statistics,
and the one check that an SAE, a harvest and a model belong together (``compat``).

Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
