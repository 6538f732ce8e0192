"""Runs: the content-addressed store of harvests and SAEs, the reproduce job, the sweep, and the jobs the
command line (:mod:`abstopk_mini.cli`) runs: each a config dataclass and a run function.

Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
