"""abstopk_mini: sparse autoencoders from sparse coding, built around the AbsTopK SAE.

    import abstopk_mini as am
    cfg = am.SAEConfig(d_in=640, d_sae=4096, activation="abstopk", k=32)
    sae, history = am.train_sae(cfg, activations)      # activations: [N, d_in]

Layout (each folder is a subpackage; every module loads on first use, so ``import abstopk_mini``
stays fast and does not import transformers until a model is needed):

* the SAE core at the top: ``sae``, ``forward`` (its training output, one type on every kernel),
  ``nonlinearities`` (one spec per activation, each with its penalty), ``losses``,
  ``metrics``, ``codestats`` (sign counts streamed), ``evaluate`` (one SAE on held-out data), ``budget``
  (how a top-k SAE spreads its non-zeros over the tokens of a batch), ``tables``,
  ``train``, ``data``, ``checkpoint``, ``distributed``, ``interop``, ``recipes``, ``io``, ``strict_json``
  (JSON output without NaN or Infinity), ``device``;
* ``repo``: where the repository's files are (``results/``, ``sweeps/``); ``pretrained``: the SAEs
  shipped with the book, ``am.pretrained.load(name)``;
* ``coding``: proximal maps, solvers, one-step and unrolled encoders, doubling, toy data
  (``am.prox``, ``am.unroll`` and ``am.toy`` are short names for ``am.coding.prox`` ...);
* ``kernels``: the fast path of the top-k family;
* ``lm``: language models, the truncated forward, corpus, harvest, shards, splice, steering, stats;
* ``concepts``: concept pairs and axis metrics; ``dashboard``: signed latent dashboards;
* ``runs``: the content-addressed store, reproduce, sweep and the command line;
* ``chapters``: figures, tables, widgets and experiments of the book (not library API).
"""

from __future__ import annotations

from ._lazy import lazy_submodules

__version__ = "0.1.0"

# public names re-exported from a submodule (the stable API of shared/CONVENTIONS.md)
_EXPORTS = {
    "SAEConfig": "sae",
    "SAE": "sae",
    "ACTIVATIONS": "sae",
    "train_sae": "train",
    "TrainConfig": "train",
    "load_model": "lm.models",
    "get_device": "device",
}
# short names kept for the sparse-coding modules: am.prox, am.unroll, am.toy
_ALIASES = {"prox": "coding.prox", "unroll": "coding.unroll", "toy": "coding.toy"}

_getattr, _dir = lazy_submodules(__name__, __path__)


def __getattr__(name: str):
    import importlib

    if name in _ALIASES:
        value = importlib.import_module(f"{__name__}.{_ALIASES[name]}")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    else:
        value = _getattr(name)
    globals()[name] = value
    return value


__all__ = sorted(set(_dir()) | set(_EXPORTS) | set(_ALIASES))


def __dir__():
    return __all__
