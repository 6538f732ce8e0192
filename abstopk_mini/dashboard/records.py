r"""What a signed dashboard shows, as small JSON-serialisable records.

:class:`DashboardData` holds one :class:`LatentDashboard` per latent plus where the numbers came
from (the SAE, the harvest, the settings) and the display string of every token id it uses.
``data.to_dict()`` / ``DashboardData.from_dict(d)`` round-trip through JSON; ``save``/``load``
write and read a JSON file (atomically), gzip-compressed when its name ends in ``.gz``
(the book's records in ``results/dashboards/`` are ``.json.gz``: ~4× smaller).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_write
from ..strict_json import dumps
from .logits import LogitEffects

__all__ = ["Context", "LatentDashboard", "DashboardData", "load_union"]


@dataclass
class Context:
    """One top context: a window of tokens around the token it was chosen for.

    token_ids, values: [W] ints and floats, the window's tokens and this latent's code z at each
    (0.0 where it is silent); the window stays inside the token's chunk (one model input).
    max_pos: index in the window of the chosen token; value: its z (signed: < 0 on the negative
    side), the value the context was ranked by. token_index: its index in the harvest;
    doc, chunk, position: its document, chunk and position in the model input (BOS = 0).
    """

    token_ids: list
    values: list
    max_pos: int
    value: float
    token_index: int
    doc: int
    chunk: int
    position: int


@dataclass
class LatentDashboard:
    r"""Everything the dashboard of latent ``latent`` shows.

    n_pos, n_neg: tokens with z > 0 / z < 0; pos_rate, neg_rate: the same over n_tokens.
    hist_width w and hist_counts [2m]: bin j holds z in [(j − m) w, (j − m + 1) w) for j ≥ m and
    z in ((j − m) w, (j − m + 1) w] for j < m (each side counts |z| in [k w, (k+1) w)); zeros are
    not counted (there are n_tokens − n_pos − n_neg of them).
    top_pos, top_neg: the contexts of the N largest z and of the N most negative z.
    logits: :class:`~abstopk_mini.dashboard.logits.LogitEffects` of +d_i and −d_i.
    summary_pos, summary_neg: the most frequent chosen tokens of each side's contexts, "tok ×n · ...".
    antipode, antipode_cos: the latent j ≠ i whose decoder row has the smallest cosine with row i
    (both None for an SAE with a single latent: there is no other row).
    """

    latent: int
    n_pos: int
    n_neg: int
    pos_rate: float
    neg_rate: float
    hist_width: float
    hist_counts: list
    top_pos: list
    top_neg: list
    logits: LogitEffects
    summary_pos: str
    summary_neg: str
    antipode: int | None
    antipode_cos: float | None

    @property
    def hist_edges(self) -> list:
        """The 2m + 1 bin edges, (j − m) w for j = 0..2m."""
        m = len(self.hist_counts) // 2
        return [(j - m) * self.hist_width for j in range(2 * m + 1)]


@dataclass
class DashboardData:
    """Dashboards of several latents of one SAE on one harvest.

    latents: the :class:`LatentDashboard` records; requested: the latents asked for (the others are
    their antipodal partners, shown as the "other side" of an unsigned SAE's latent).
    tokens: token id -> display string (``tokenizer.decode([id])``) for every id used.
    sae, harvest, settings: provenance (activation, k, d_sae, model, hook, input scale; harvest
    dir, model, layer, tokens, content hash; n_top, window, bins, logits, selection rule).
    """

    latents: list
    requested: list
    tokens: dict
    n_tokens: int
    sae: dict = field(default_factory=dict)
    harvest: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def latent(self, i: int) -> LatentDashboard:
        """The record of latent ``i`` (ValueError if it was not computed)."""
        for rec in self.latents:
            if rec.latent == i:
                return rec
        raise ValueError(f"latent={i} is not in this DashboardData (it holds {[r.latent for r in self.latents][:20]}); "
                         "compute it: compute_dashboards(..., latents=[...])")

    def union(self, other: "DashboardData") -> "DashboardData":
        """The latents of both, read by the same SAE on the same harvest with the same context settings
        (e.g. the book's 200 most bidirectional latents and its gendered latents, for one browser):
        this one's requested latents first, then ``other``'s that are new. ValueError if the two
        differ in SAE, harvest, tokens read or settings (the selection rule aside)."""
        if not isinstance(other, DashboardData):
            raise TypeError(f"other must be a DashboardData; got {type(other).__name__}")
        mine, theirs = ({k: v for k, v in d.settings.items() if k != "selection"} for d in (self, other))
        for what, a, b in (("sae", self.sae, other.sae), ("harvest", self.harvest, other.harvest),
                           ("n_tokens", self.n_tokens, other.n_tokens), ("settings", mine, theirs)):
            if a != b:
                raise ValueError(f"other.{what} = {b!r} differs from this data's {a!r}; only dashboards of the same SAE "
                                 "on the same harvest with the same settings can be shown together")
        have = {r.latent for r in self.latents}
        both = [s for s in (self.settings.get("selection"), other.settings.get("selection")) if s]
        return DashboardData(
            latents=self.latents + [r for r in other.latents if r.latent not in have],
            requested=list(dict.fromkeys(list(self.requested) + list(other.requested))),
            tokens={**self.tokens, **other.tokens}, n_tokens=self.n_tokens, sae=dict(self.sae),
            harvest=dict(self.harvest), settings={**self.settings, "selection": " + ".join(both)})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for rec in d["latents"]:
            rec["logits"] = {k: [list(p) for p in v] for k, v in zip(LogitEffects._fields, rec["logits"])}
        d["tokens"] = {str(k): v for k, v in self.tokens.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DashboardData":
        latents = []
        for rec in d["latents"]:
            rec = dict(rec)
            rec["top_pos"] = [Context(**c) for c in rec["top_pos"]]
            rec["top_neg"] = [Context(**c) for c in rec["top_neg"]]
            lg = rec["logits"]
            lg = lg if isinstance(lg, dict) else dict(zip(LogitEffects._fields, lg))
            rec["logits"] = LogitEffects(**{k: [tuple(p) for p in lg[k]] for k in LogitEffects._fields})
            latents.append(LatentDashboard(**rec))
        return cls(latents=latents, requested=list(d["requested"]), tokens={int(k): v for k, v in d["tokens"].items()},
                   n_tokens=d["n_tokens"], sae=d.get("sae", {}), harvest=d.get("harvest", {}),
                   settings=d.get("settings", {}))

    def to_bytes(self, gz: bool = False) -> bytes:
        """The JSON of :meth:`to_dict` (strict: no NaN / Infinity), gzip-compressed with mtime 0 if ``gz``."""
        text = dumps(self.to_dict(), what="the dashboard data").encode("utf-8")
        return gzip.compress(text, mtime=0) if gz else text

    def save(self, path) -> Path:
        """Write the JSON of :meth:`to_dict` to ``path`` (temp file + rename); gzip if it ends in ``.gz``
        (written with mtime 0, so the same data gives the same bytes)."""
        path = Path(path)
        raw = self.to_bytes(path.suffix == ".gz")
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(raw))

    @classmethod
    def load(cls, path) -> "DashboardData":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path={str(path)!r} is not a file; write one with DashboardData.save(path)")
        raw = path.read_bytes()
        return cls.from_dict(json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw))


def load_union(*paths) -> DashboardData:
    """The :meth:`DashboardData.union` of the files ``paths`` (same SAE, harvest and settings), in order:
    e.g. the book's browsers, the most bidirectional latents then the gendered and the named ones."""
    if not paths:
        raise ValueError("paths is empty; pass at least one DashboardData file (.json or .json.gz)")
    data = DashboardData.load(paths[0])
    for p in paths[1:]:
        data = data.union(DashboardData.load(p))
    return data
