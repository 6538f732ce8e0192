"""Lazy submodules: ``package.name`` imports ``package/name.py`` (or a subpackage) on first use.

Used by the top-level package and every subpackage, so ``import abstopk_mini`` stays fast and does
not import transformers until a model is needed.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["lazy_submodules"]


def lazy_submodules(name: str, path, exports: dict[str, str] | None = None):
    """Return ``(__getattr__, __dir__)`` for the package ``name`` whose ``__path__`` is ``path``.

    exports: public names re-exported from a submodule, ``{"SAE": "sae"}`` (imported on first use too).
    """
    submodules = {info.name for info in pkgutil.iter_modules(path) if not info.name.startswith("_")}
    exports = dict(exports or {})
    public = sorted(submodules | set(exports))

    def __getattr__(attr: str):
        if attr in submodules:
            return importlib.import_module(f"{name}.{attr}")
        if attr in exports:
            return getattr(importlib.import_module(f"{name}.{exports[attr]}"), attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    def __dir__():
        return public

    return __getattr__, __dir__
