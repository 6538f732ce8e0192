r"""Statistics of residual-stream activations and of SAE codes (chapters 5 and 6).

Activations, layer by layer. One forward with a hook on every block
(:func:`abstopk_mini.lm.hooks.residual_streams`) reads the residual stream after each block in
``layers`` (``blocks.L.hook_resid_post``), BOS position included and marked,
so the BOS outlier can be measured instead of silently dropped::

    la = am.stats.layer_activations(loaded, chunks, layers=range(18))   # la.acts[L]: [N, d]
    rows = am.stats.layer_table(la)                                     # one dict per layer

For activations :math:`x_1, \dots, x_N \in \mathbb{R}^d` with mean :math:`\mu` and covariance
:math:`\Sigma` (population, 1/N):

* **norm quantiles** of :math:`\|x_n\|_2`;
* **mean share** :math:`\|\mu\|^2 / \frac1N\sum_n \|x_n\|^2`: the part of the second moment that
  is one constant vector (:math:`\frac1N\sum\|x_n\|^2 = \|\mu\|^2 + \operatorname{tr}\Sigma`).
  An SAE's ``b_dec`` absorbs it; FVU is measured around it;
* **excess kurtosis** of each coordinate, :math:`E[(x_j - \mu_j)^4] / \Sigma_{jj}^2 - 3` (0 for a
  Gaussian): a few coordinates with huge kurtosis are the "massive activation" dimensions;
* **top-dimension share**: the share of :math:`\sum_n\|x_n\|^2` in the ``n`` coordinates with the
  largest mean square, and the share of the variance :math:`\operatorname{tr}\Sigma` in the ``n``
  coordinates of largest variance;
* **participation ratio** :math:`(\operatorname{tr}\Sigma)^2 / \operatorname{tr}(\Sigma^2)
  = (\sum_i \lambda_i)^2 / \sum_i \lambda_i^2` over the eigenvalues of :math:`\Sigma`: how many
  directions the variance is spread over (1 to d).

SAE codes: :func:`firing_stats` streams activations through an SAE and counts, per latent, how
often it is non-zero and how often negative (the dead-latent and sign statistics of chapter 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..codestats import code_stats
from .checks import check_layers, check_positive
from .hooks import encode, pad, require_loaded, residual_streams

__all__ = [
    "LayerActivations", "layer_activations", "norm_quantiles", "mean_share",
    "excess_kurtosis", "top_dim_share", "participation_ratio", "activation_summary", "layer_table",
    "group_mean", "harvest_columns", "corpus_table", "firing_stats",
]

QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)


# --------------------------------------------------------------------------- reading every layer
@dataclass
class LayerActivations:
    """Activations of the same tokens at several layers.

    shape: acts {layer: [N, d_model]} float32 on the CPU; token_ids, doc, pos [N] (position in the
    model input, BOS = 0); is_bos [N] bool.
    """

    acts: dict[int, torch.Tensor]
    token_ids: torch.Tensor
    doc: torch.Tensor
    pos: torch.Tensor
    is_bos: torch.Tensor

    @property
    def layers(self) -> list[int]:
        return sorted(self.acts)

    def __len__(self) -> int:
        return len(self.token_ids)


def layer_activations(model, texts, layers: Iterable[int] | None = None, *, context_length: int = 128,
                      batch_size: int = 8, prepend_bos: bool = True) -> LayerActivations:
    """Activations of every real token of ``texts`` (pads dropped, BOS kept and marked) after each
    block in ``layers`` (default: all). ``texts``: strings (BOS prepended, truncated to
    ``context_length``) or token-id lists such as the chunks of :func:`abstopk_mini.lm.corpus.chunk`.
    """
    loaded = require_loaded(model)
    info = loaded.info
    layers = check_layers(range(info.n_layers) if layers is None else layers, info.n_layers)
    check_positive(batch_size=batch_size, context_length=context_length)
    seqs = encode(loaded.tokenizer, texts, context_length, prepend_bos)
    pad_id = info.pad_token_id if info.pad_token_id is not None else 0
    parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    ids_l, doc_l, pos_l = [], [], []
    for start in range(0, len(seqs), batch_size):
        ids, mask = pad(seqs[start:start + batch_size], pad_id)
        xs = residual_streams(loaded, ids, layers, mask)
        keep = mask.bool()
        seq, pos = keep.nonzero(as_tuple=True)
        for layer in layers:
            x = xs[layer]
            parts[layer].append(x[seq.to(x.device), pos.to(x.device)].float().cpu())
        ids_l.append(ids[seq, pos])
        doc_l.append(seq + start)
        pos_l.append(pos)
    token_ids = torch.cat(ids_l)
    pos = torch.cat(pos_l)
    bos = info.bos_token_id
    is_bos = (pos == 0) & (token_ids == bos) if bos is not None else torch.zeros_like(pos, dtype=torch.bool)
    return LayerActivations({layer: torch.cat(p) for layer, p in parts.items()}, token_ids, torch.cat(doc_l), pos, is_bos)


# --------------------------------------------------------------------------- one set of activations
def _check_2d(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, d]; got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be 2-D [N, d] with N >= 1; got shape {tuple(x.shape)}")
    return x.double()


def norm_quantiles(x: torch.Tensor, qs: Sequence[float] = QUANTILES) -> dict[float, float]:
    """Quantiles of the row norms (linear interpolation, as ``numpy.quantile``).
    shape: x [N, d] -> {q: value}"""
    x = _check_2d(x)
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError(f"qs must be fractions in [0, 1]; got {list(qs)}")
    values = torch.quantile(x.norm(dim=1), torch.tensor(list(qs), dtype=torch.float64))
    return {float(q): float(v) for q, v in zip(qs, values)}


def mean_share(x: torch.Tensor) -> float:
    """‖μ‖² / mean‖x‖²: the share of the second moment in the mean vector.  shape: x [N, d] -> float"""
    x = _check_2d(x)
    second = x.pow(2).sum(1).mean().item()
    return x.mean(0).pow(2).sum().item() / second if second > 0 else math.nan


def excess_kurtosis(x: torch.Tensor) -> torch.Tensor:
    """Per-coordinate excess kurtosis E[(x_j − μ_j)⁴] / σ_j⁴ − 3 (population moments, as
    ``scipy.stats.kurtosis(x, fisher=True, bias=True)``); NaN for a constant coordinate.
    shape: x [N, d] -> [d] float64"""
    x = _check_2d(x)
    c = x - x.mean(0)
    var = c.pow(2).mean(0)
    out = c.pow(4).mean(0) / var.pow(2) - 3.0
    return torch.where(var > 0, out, torch.full_like(out, math.nan))


def top_dim_share(x: torch.Tensor, n: int = 1, centered: bool = False) -> float:
    """Share of Σ‖x‖² held by the ``n`` coordinates with the largest mean square; with
    ``centered``, the share of the variance tr Σ held by the ``n`` coordinates of largest variance.
    shape: x [N, d] -> float"""
    x = _check_2d(x)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= x.shape[1]:
        raise ValueError(f"n must be an int in [1, d={x.shape[1]}]; got {n!r}")
    ms = (x - x.mean(0) if centered else x).pow(2).mean(0)
    total = ms.sum().item()
    return ms.topk(n).values.sum().item() / total if total > 0 else math.nan


def participation_ratio(x: torch.Tensor) -> float:
    """(tr Σ)² / tr(Σ²) of the population covariance Σ: effective number of directions of the
    variance (1 for a line, d for isotropic data).  shape: x [N, d] -> float"""
    x = _check_2d(x)
    c = x - x.mean(0)
    cov = c.T @ c / x.shape[0]
    tr2 = cov.pow(2).sum().item()  # tr(Σ²) = ‖Σ‖_F² for a symmetric Σ
    return torch.trace(cov).item() ** 2 / tr2 if tr2 > 0 else math.nan


def activation_summary(x: torch.Tensor, n_top: int = 1) -> dict:
    """All of the above for one set of activations (a dict of floats).  shape: x [N, d]"""
    q = norm_quantiles(x)
    kurt = excess_kurtosis(x)
    finite = kurt[torch.isfinite(kurt)]
    return {
        "n": x.shape[0],
        "norm_q01": q[0.01], "norm_q25": q[0.25], "norm_median": q[0.5], "norm_q75": q[0.75], "norm_q99": q[0.99],
        "mean_norm": float(_check_2d(x).mean(0).norm()),
        "mean_share": mean_share(x),
        "kurtosis_median": float(finite.median()) if len(finite) else math.nan,
        "kurtosis_max": float(finite.max()) if len(finite) else math.nan,
        "kurtosis_argmax": int(torch.nan_to_num(kurt, nan=-math.inf).argmax()),
        "top_dim": int(_check_2d(x).pow(2).mean(0).argmax()),
        "top_dim_share": top_dim_share(x, n_top),
        "top_var_dim": int(_check_2d(x).var(0, unbiased=False).argmax()),
        "top_var_share": top_dim_share(x, n_top, centered=True),
        "participation_ratio": participation_ratio(x),
    }


def layer_table(la: LayerActivations, n_top: int = 1) -> list[dict]:
    """One row per layer: :func:`activation_summary` of the non-BOS tokens, plus ``bos_norm``
    (mean norm at the BOS position, NaN if there is none) and ``bos_ratio`` = bos_norm / median."""
    rows = []
    for layer in la.layers:
        x = la.acts[layer]
        rest = x[~la.is_bos]
        if len(rest) == 0:
            raise ValueError("la holds BOS positions only; pass texts with real tokens")
        row = {"layer": layer, **activation_summary(rest, n_top)}
        bos = x[la.is_bos]
        row["bos_norm"] = float(bos.double().norm(dim=1).mean()) if len(bos) else math.nan
        row["bos_ratio"] = row["bos_norm"] / row["norm_median"]
        rows.append(row)
    return rows


def group_mean(values: torch.Tensor, index: torch.Tensor, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and count of ``values`` per group ``index`` (e.g. the position in the context, or the
    token id), for groups 0..n-1; the mean is NaN for a group that never occurs.
    shape: values [N], index [N] (int) -> mean [n] float64, count [n] int64"""
    if values.shape != index.shape or values.ndim != 1:
        raise ValueError(f"values and index must be 1-D of the same length; got {tuple(values.shape)} and {tuple(index.shape)}")
    index = index.long()
    if len(index) and index.min() < 0:
        raise ValueError("index holds negative group numbers; groups are 0..n-1")
    n = (int(index.max()) + 1 if len(index) else 0) if n is None else n
    keep = index < n
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, index[keep], values[keep].double())
    counts = torch.bincount(index[keep], minlength=n)[:n]
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, math.nan)), counts


def harvest_columns(ds, max_shards: int | None = None) -> dict[str, torch.Tensor]:
    """Per-token columns of a harvest read shard by shard (the activations are never all in
    memory): ``norm`` (float32), ``token_ids``, ``position``, ``doc_index``, ``chunk_index``.
    ds: a :class:`~abstopk_mini.lm.shards.ShardDataset` or a harvest directory.
    shape: {name: [N]}"""
    from .shards import ShardDataset

    if not isinstance(ds, ShardDataset):
        ds = ShardDataset(ds)
    n = len(ds.shards) if max_shards is None else min(max_shards, len(ds.shards))
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("norm", "token_ids", "position", "doc_index", "chunk_index")}
    for i in range(n):
        cols["norm"].append(ds.read_shard(i).norm(dim=1))
        for key in ("token_ids", "position", "doc_index", "chunk_index"):
            cols[key].append(ds.read_shard(i, key))
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in cols.items()}


def corpus_table(tokenizer, train: Sequence, heldout: Sequence) -> list[dict]:
    """Documents and tokens (without special tokens) per source on each side of the split.

    train, heldout: lists of :class:`~abstopk_mini.lm.corpus.Document`. Returns one row per source
    (first-seen order) and a final ``total`` row: source, train_docs, train_tokens, heldout_docs,
    heldout_tokens."""
    rows: dict[str, dict] = {}
    for side, docs in (("train", train), ("heldout", heldout)):
        docs = list(docs)
        lengths = [len(ids) for ids in tokenizer([d.text for d in docs], add_special_tokens=False)["input_ids"]] if docs else []
        for doc, n in zip(docs, lengths):
            row = rows.setdefault(doc.source, {"source": doc.source, "train_docs": 0, "train_tokens": 0,
                                               "heldout_docs": 0, "heldout_tokens": 0})
            row[f"{side}_docs"] += 1
            row[f"{side}_tokens"] += n
    total = {"source": "total"} | {k: sum(r[k] for r in rows.values())
                                   for k in ("train_docs", "train_tokens", "heldout_docs", "heldout_tokens")}
    return list(rows.values()) + [total]


# --------------------------------------------------------------------------- SAE codes
@torch.no_grad()
def firing_stats(sae, x: torch.Tensor, batch_size: int = 4096) -> dict[str, torch.Tensor]:
    """How often each latent of ``sae`` fires on activations ``x``, streamed in batches
    (:func:`abstopk_mini.codestats.code_stats`, as a dict for the figures of chapter 6).

    Returns ``n_fire`` and ``n_neg`` (int64 counts of z != 0 and z < 0), ``rate`` = n_fire / N
    (float64) and ``n_tokens``. A latent with rate 0 is dead on x.
    shape: x [N, d_in] -> dict of [d_sae] tensors
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a tensor [N, d_in]; got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    if x.shape[1] != sae.cfg.d_in:
        raise ValueError(f"x has width {x.shape[1]} but the SAE reads d_in={sae.cfg.d_in}; pass activations it was trained on")
    check_positive(batch_size=batch_size)
    st = code_stats(sae, x, batch_size)
    return {"n_fire": st.n_fire, "n_neg": st.n_neg, "rate": st.rate, "n_tokens": torch.tensor(st.n_rows)}
