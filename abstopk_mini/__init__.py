"""abstopk_mini: sparse autoencoders from sparse coding, built around the AbsTopK SAE.

    import abstopk_mini as am
    cfg = am.SAEConfig(d_in=640, d_sae=4096, activation="abstopk", k=32)
    sae, history = am.train_sae(cfg, activations)      # activations: [N, d_in]

Submodules load on first use (``am.prox``, ``am.unroll``, ``am.metrics``, ``am.toy``, ...), so
``import abstopk_mini`` stays fast and does not import transformers until a model is needed.
"""

from __future__ import annotations

import importlib
import pkgutil

__version__ = "0.1.0"

# submodules, imported lazily by __getattr__ below: every module file of the package
_SUBMODULES = {
    info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")
}
# public names re-exported from a submodule: name -> module
_EXPORTS = {
    "SAEConfig": "sae",
    "SAE": "sae",
    "ACTIVATIONS": "sae",
    "train_sae": "train",
    "TrainConfig": "train",
    "load_model": "models",
    "get_device": "device",
}

__all__ = sorted(_SUBMODULES | set(_EXPORTS))


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'abstopk_mini' has no attribute {name!r}")


def __dir__():
    return __all__
