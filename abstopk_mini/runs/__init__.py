"""Runs: the content-addressed store of harvests and SAEs, the reproduce job, the sweep, and the command line.

Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
