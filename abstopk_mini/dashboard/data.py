r"""Signed dashboards from a harvest and an SAE: :func:`compute_dashboards`.

    data = compute_dashboards(sae, "runs/acts/gemma-3-270m/L6", loaded, latents=[0, 5, 17])
    data = compute_dashboards(sae, acts_dir, loaded, top_bidirectional=200)

Steps (the harvest is read twice, the second time only the few tokens the contexts need):

1. one streaming pass, all latents at once (:func:`~abstopk_mini.dashboard.stream.latent_stats`):
   firing counts of each sign, top-N tokens of each side, signed histogram;
2. the latents to show: ``latents``, or the ``top_bidirectional`` ones (:func:`select_bidirectional`),
   plus, for an unsigned SAE, each one's antipodal partner
   :math:`j^* = \arg\min_{j \ne i} \cos(W_{dec}[i], W_{dec}[j])`, its "other side";
3. the context windows around each top token (inside its chunk), re-encoded to get the latent's
   value at every token of the window;
4. the logit effects of :math:`\pm d_i`, :math:`d_i = W_{dec}[i]/s`
   (:func:`~abstopk_mini.dashboard.logits.logit_effects`), and a one-line summary of each side.

Codes are computed with ``sae.encode`` in eval mode (the batch variants then use their threshold
per token, so a token's code does not depend on its batch).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch

from .logits import LogitEffects, top_logit_tokens
from .records import Context, DashboardData, LatentDashboard
from .stream import LatentStats, latent_stats

__all__ = ["compute_dashboards", "select_bidirectional", "antipodes", "harvest_batches"]


def harvest_batches(ds, batch_size: int):
    """Activations of a ShardDataset in harvest order. shape: yields [≤ batch_size, d_model] float32"""
    for i in range(len(ds.shards)):
        yield from ds.read_shard(i).split(batch_size)


@torch.no_grad()
def antipodes(W_dec: torch.Tensor, latents=None, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    r"""For each latent i, :math:`\arg\min_{j \ne i} \cos(W_{dec}[i], W_{dec}[j])` and that cosine (float64).

    An SAE with one latent has no other row: its partner is −1 and its cosine NaN (no partner).
    shape: W_dec [P, d], latents [L] (default all) -> partner [L] int64, cos [L] float64
    """
    if W_dec.shape[0] < 2:
        n = W_dec.shape[0] if latents is None else len(list(latents))
        return torch.full((n,), -1, dtype=torch.long), torch.full((n,), float("nan"), dtype=torch.float64)
    W = W_dec.detach().double()
    W = W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows = torch.arange(W.shape[0]) if latents is None else torch.as_tensor(list(latents), dtype=torch.long)
    parts, cos = [], []
    for r in rows.split(chunk):
        C = W[r.to(W.device)] @ W.T
        C[torch.arange(len(r)), r.to(W.device)] = float("inf")
        v, j = C.min(dim=1)
        parts.append(j.cpu())
        cos.append(v.cpu())
    return torch.cat(parts), torch.cat(cos)


def select_bidirectional(stats: LatentStats, n: int, *, signed: bool, W_dec=None, min_count: int = 1) -> list:
    r"""The ``n`` most bidirectional latents.

    Signed SAE: latents whose weaker side fires on ≥ ``min_count`` tokens, ranked by the balance
    :math:`\min(n^+, n^-)/(n^+ + n^-)` (descending), then by :math:`\min(n^+, n^-)`, then id.
    Unsigned SAE (no negative codes): the latents whose decoder row has the most antipodal
    partner (smallest cosine, :func:`antipodes`), both firing on ≥ ``min_count`` tokens, one latent
    per pair (its partner becomes its "other side").
    """
    n_pos, n_neg = stats.n_pos, stats.n_neg
    if signed:
        weak = torch.minimum(n_pos, n_neg)
        ok = (weak >= min_count).nonzero().flatten().tolist()
        balance = {i: int(weak[i]) / int(n_pos[i] + n_neg[i]) for i in ok}
        return sorted(ok, key=lambda i: (-balance[i], -int(weak[i]), i))[:n]
    if W_dec is None:
        raise ValueError("select_bidirectional(signed=False) needs W_dec (the SAE's decoder rows) to pair latents")
    alive = n_pos >= min_count
    partner, cos = antipodes(W_dec)
    chosen, seen = [], set()
    for i in torch.argsort(cos, stable=True).tolist():
        j = int(partner[i])
        if j >= 0 and alive[i] and alive[j] and i not in seen and j not in seen:
            chosen.append(i)
            seen.update((i, j))
            if len(chosen) == n:
                break
    return chosen


def _windows(stats: LatentStats, latents, before: int, after: int, n_total: int):
    """(latent, side, rank, token index) of every top context, and the sorted token indices its windows need."""
    tops, need = [], set()
    for side, index in ((0, stats.top_pos_index), (1, stats.top_neg_index)):
        for i in latents:
            for rank, g in enumerate(index[:, i].tolist()):
                if g >= 0:
                    tops.append((i, side, rank, g))
                    need.update(range(max(0, g - before), min(n_total, g + after + 1)))
    return tops, torch.tensor(sorted(need), dtype=torch.long)


def _gather(ds, sae, wanted: torch.Tensor, latents, batch_size: int) -> dict:
    """Token ids, chunk/doc/position and codes of ``latents`` at the harvest rows ``wanted``.
    shape: wanted [M] -> dict of [M] tensors, and "z" [M, len(latents)]"""
    keys = ("token_ids", "chunk_index", "doc_index", "position")
    out = {k: [] for k in keys + ("activations",)}
    start = 0
    for s, rec in enumerate(ds.shards):
        stop = start + rec["n_tokens"]
        rows = wanted[(wanted >= start) & (wanted < stop)] - start
        if len(rows):
            for k in out:
                out[k].append(ds.read_shard(s, k)[rows])
        start = stop
    out = {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}
    cols = torch.as_tensor(list(latents), dtype=torch.long, device=sae.W_dec.device)
    x = out.pop("activations")
    out["z"] = torch.cat([sae.encode(b.to(sae.W_dec.device))[:, cols].float().cpu()
                          for b in x.split(batch_size)]) if len(x) else torch.empty(0, len(cols))
    return out


def _summary(contexts: list, tokens: dict, n: int = 3) -> str:
    """'tok ×count · ...' for the most frequent chosen tokens (ties: the better-ranked first)."""
    counts = Counter(tokens[c.token_ids[c.max_pos]].strip() or repr(tokens[c.token_ids[c.max_pos]]) for c in contexts)
    return " · ".join(f"{t} ×{k}" for t, k in counts.most_common(n))


def _histogram(stats: LatentStats, i: int) -> tuple[float, list]:
    """Trimmed signed histogram of latent i: (w, counts [2m]) from the negative end to the positive end."""
    pos, neg = stats.hist[i, 0], stats.hist[i, 1]
    nz = ((pos + neg) > 0).nonzero()
    m = int(nz.max()) + 1 if len(nz) else 0
    return stats.bin_width(i), neg[:m].flip(0).tolist() + pos[:m].tolist()


@torch.no_grad()
def compute_dashboards(sae, acts, model=None, *, latents=None, top_bidirectional: int | None = None,
                       n_top: int = 10, before: int = 10, after: int = 4, n_bins: int = 64, n_logits: int = 8,
                       batch_size: int = 1024, progress: bool = False) -> DashboardData:
    """Signed dashboards of ``latents`` (or of the ``top_bidirectional`` most bidirectional latents).

    sae: an :class:`~abstopk_mini.sae.SAE`; acts: a harvest directory or ShardDataset of the activations
    it reads; model: the LoadedModel of that harvest (default: ``load_model(manifest["model"])``),
    for the tokenizer and the logit lens. n_top contexts per side, each ``before`` tokens before and
    ``after`` after its token; n_bins histogram bins (a power of two); n_logits tokens per logit list.
    progress: a tqdm bar on stderr over the harvest's tokens. The SAE, the harvest and the model
    must agree on model, layer, hook and width (:func:`abstopk_mini.lm.compat.check_inputs`).
    """
    from ..lm.compat import check_inputs
    from ..lm.models import load_model
    from ..lm.shards import ShardDataset

    for name, v in (("n_top", n_top), ("batch_size", batch_size), ("n_logits", n_logits)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    ds = acts if isinstance(acts, ShardDataset) else ShardDataset(acts)
    names = {"sae": "sae", "harvest": f"the harvest acts={str(ds.dir)!r}", "model": "model"}
    check_inputs(sae, ds, model, names=names, reads_model=model is not None)  # model, layer, hook and width agree
    if (latents is None) == (top_bidirectional is None):
        raise ValueError(f"pass exactly one of latents= (a list of ids) or top_bidirectional= (a count); "
                         f"got latents={latents!r}, top_bidirectional={top_bidirectional!r}")
    if latents is not None:
        latents = [int(i) for i in latents]
        bad = [i for i in latents if not 0 <= i < sae.cfg.d_sae]
        if bad or not latents:
            raise ValueError(f"latents must be a non-empty list of ids in [0, d_sae={sae.cfg.d_sae}); got {latents!r}")
    for name, v in (("before", before), ("after", after)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0 (tokens of context); got {v!r}")
    if top_bidirectional is not None and (isinstance(top_bidirectional, bool) or not isinstance(top_bidirectional, int)
                                          or top_bidirectional < 1):
        raise ValueError(f"top_bidirectional must be a positive int; got {top_bidirectional!r}")
    if model is None:
        loaded = load_model(ds.manifest["model"])
        check_inputs(sae, ds, loaded, names=names)
    else:
        loaded = model
    with _eval(sae):
        bar = _bar(len(ds), progress)
        try:
            stats = latent_stats(sae, harvest_batches(ds, batch_size), n_top=n_top, n_bins=n_bins,
                                 progress=bar.update if bar else None)
        finally:  # the bar's line ends before anything else is printed (an error message included)
            if bar:
                bar.close()
        signed = sae.cfg.signed
        if latents is None:
            latents = select_bidirectional(stats, top_bidirectional, signed=signed, W_dec=sae.W_dec, min_count=n_top)
            if not latents:
                raise ValueError(f"top_bidirectional={top_bidirectional}: no latent fires on >= n_top={n_top} tokens of "
                                 "each side (or of both partners); lower n_top or use a larger harvest")
        partner, cos = antipodes(sae.W_dec, latents)
        shown = list(dict.fromkeys(latents + ([] if signed else partner.tolist())))
        tops, wanted = _windows(stats, shown, before, after, len(ds))
        got = _gather(ds, sae, wanted, shown, batch_size)
    all_partner, all_cos = antipodes(sae.W_dec, shown)
    scale = sae.cfg.input_scale
    # ±d_i = ±W_dec[i]/s; a standardising SAE (cfg.input_unit_norm) moves token x by σ(x)·d_i, the same
    # direction at a token-dependent length, which the logit lens's final norm divides out (see .logits)
    effects = top_logit_tokens(loaded, torch.cat([sae.W_dec[shown], -sae.W_dec[shown]]).detach().float().cpu() / scale,
                               n_logits)
    L = len(shown)
    col = {i: c for c, i in enumerate(shown)}
    where = {int(g): r for r, g in enumerate(wanted.tolist())}
    contexts = {(i, s): [] for i in shown for s in (0, 1)}
    for i, side, rank, g in tops:
        chunk = int(got["chunk_index"][where[g]])
        rows = [where[t] for t in range(g - before, g + after + 1) if t in where and int(got["chunk_index"][where[t]]) == chunk]
        top_v = (stats.top_pos_value if side == 0 else -stats.top_neg_value)[rank, i]
        r = where[g]
        contexts[(i, side)].append(Context(
            token_ids=got["token_ids"][rows].tolist(), values=got["z"][rows, col[i]].tolist(),
            max_pos=rows.index(r), value=float(top_v), token_index=g, doc=int(got["doc_index"][r]),
            chunk=chunk, position=int(got["position"][r])))
    ids = {t for ctx in contexts.values() for c in ctx for t in c.token_ids}
    records = []
    for c, i in enumerate(shown):
        (pb, ps), (nb, ns) = effects[c], effects[L + c]
        ids.update(t for t, _ in pb + ps + nb + ns)
        width, counts = _histogram(stats, i)
        records.append(LatentDashboard(
            latent=i, n_pos=int(stats.n_pos[i]), n_neg=int(stats.n_neg[i]),
            pos_rate=int(stats.n_pos[i]) / stats.n_tokens, neg_rate=int(stats.n_neg[i]) / stats.n_tokens,
            hist_width=width, hist_counts=counts, top_pos=contexts[(i, 0)], top_neg=contexts[(i, 1)],
            logits=LogitEffects(pb, ps, nb, ns), summary_pos="", summary_neg="",
            # an SAE with one latent has no other decoder row: no antipode (None, not inf)
            antipode=int(all_partner[c]) if all_partner[c] >= 0 else None,
            antipode_cos=float(all_cos[c]) if all_partner[c] >= 0 else None))
    tokens = {t: loaded.tokenizer.decode([t]) for t in sorted(ids)}
    for rec in records:
        rec.summary_pos, rec.summary_neg = _summary(rec.top_pos, tokens), _summary(rec.top_neg, tokens)
    cfg, m = sae.cfg, ds.manifest
    return DashboardData(
        latents=records, requested=latents, tokens=tokens, n_tokens=stats.n_tokens,
        sae={"activation": cfg.activation, "k": cfg.k, "d_sae": cfg.d_sae, "d_in": cfg.d_in, "signed": signed,
             "input_scale": scale, "model_name": cfg.model_name, "hook_name": cfg.hook_name},
        harvest={"dir": _portable(ds.dir), "model": m["model"], "layer": m["layer"], "hook_name": m["hook_name"],
                 "n_tokens": len(ds), "content_sha256": m.get("content_sha256")},
        settings={"n_top": n_top, "before": before, "after": after, "n_bins": n_bins, "n_logits": n_logits,
                  "selection": "latents" if top_bidirectional is None else f"top_bidirectional={top_bidirectional}"})


def _portable(path) -> str:
    """``path`` relative to the runs directory when it lies inside it (records name no machine's folder)."""
    from pathlib import Path

    from ..io import runs_dir

    try:
        return str(Path(path).resolve().relative_to(runs_dir().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _eval(sae):
    was = sae.training
    sae.eval()
    try:
        yield
    finally:
        sae.train(was)


def _bar(total: int, on: bool):
    if not on:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tok", unit_scale=True, desc="dashboard", dynamic_ncols=True)
