"""The book's support: figures, tables, widgets and chapter experiments (not part of the library API).

:mod:`~abstopk_mini.chapters.style` is the book's look in one place (palette, labels, figure sizes
and fonts, the one Figure class and the one Table); every figure module draws with it.
Submodules load on first use, like the top-level package's."""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
