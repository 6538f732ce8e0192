"""The book's support: figures, tables, widgets and chapter experiments (not part of the library API).

Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
