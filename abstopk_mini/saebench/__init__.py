"""The field's yardstick: SAEBench's sparse probing, feature absorption and TPP, offline, on our SAEs.

* :mod:`~abstopk_mini.saebench.probing`: sparse probing on pooled features (SAEBench's selection,
  balancing and probe; tensors only);
* :mod:`~abstopk_mini.saebench.texts`: the offline labelled texts (sentiment, newsgroups) and pooling;
* :mod:`~abstopk_mini.saebench.first_letter`: the first-letter task (words, prompts, residuals, probes);
* :mod:`~abstopk_mini.saebench.absorption`: absorption scores and the signed split view (tensors only);
* :mod:`~abstopk_mini.saebench.tpp`: targeted probe perturbation (SAEBench's probes, effects, ablations);
* :mod:`~abstopk_mini.saebench.evaluate`: the metrics for one SAE (:func:`absorption`, :func:`probing`, :func:`tpp`).

``tests/test_saebench_*.py`` check each step against the installed ``sae-bench`` package on shared
inputs. Submodules load on first use.
"""

from .._lazy import lazy_submodules

__getattr__, __dir__ = lazy_submodules(__name__, __path__)
