r"""Do the two sides of a latent mean opposite things? Signed dashboards and their verdicts for the
TopK / AbsTopK pairs of sweep stages, one record per SAE.

    python -m abstopk_mini opposites --config sweeps/steps.json --stages long long-seed1 \
        --out results/dashboards --results results/opposite_meanings.jsonl --json

For each seed's pair (the two SAEs the sweep recorded for those stages), on the sweep's held-out
harvest:

1. the dashboards (:func:`~abstopk_mini.dashboard.compute_dashboards`) of the ``n`` most
   bidirectional latents — AbsTopK: the most balanced between signs; TopK, which has no negative
   codes: the ``n`` most antipodal decoder pairs, each latent's partner its "other side" — saved as
   ``<out>/<activation>-seed<s>-top<n>.json.gz``;
2. their verdicts by the rules of :mod:`abstopk_mini.dashboard.judge` (opposite / different / same /
   one-sided), counted;
3. every latent's top contexts (one-token windows, not saved) and the sides that are mostly gender
   words (:func:`~abstopk_mini.dashboard.judge.lexicon_sides` with
   :func:`~abstopk_mini.concepts.occurrences.gender_lexicon`), with what their other side holds;
4. the dashboards of the latents with a gendered side (and, for TopK, of their antipodes), saved as
   ``<out>/<activation>-seed<s>-gender.json.gz``.

Records name the SAEs by sweep key and the dashboard files relative to the records file, never by
an absolute path.
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .inputs import StagesJob, check_positive, check_runs_dir

__all__ = ["SCHEMA", "run_opposites", "OppositesJob", "run"]

SCHEMA = "abstopk_mini.opposites/1"


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


def measure_sae(sae, held_dir, loaded, out: Path, stem: str, *, n: int, n_top: int, min_share: float) -> dict:
    """Steps 1-4 of the module docstring for one SAE; writes two .json.gz files under ``out``."""
    from .. import dashboard as D
    from ..concepts.occurrences import gender_lexicon

    t0 = time.perf_counter()
    top = D.compute_dashboards(sae, held_dir, loaded, top_bidirectional=n, n_top=n_top)
    verdicts = D.judge(top)
    every = D.compute_dashboards(sae, held_dir, loaded, latents=list(range(sae.cfg.d_sae)), n_top=n_top,
                                 before=0, after=0)
    sides = D.lexicon_sides(every, gender_lexicon(), min_share=min_share)
    gendered = list(dict.fromkeys(r["latent"] for r in sides))
    files = {"top": out / f"{stem}-top{n}.json.gz"}
    top.save(files["top"])
    if gendered:
        files["gender"] = out / f"{stem}-gender.json.gz"
        D.compute_dashboards(sae, held_dir, loaded, latents=gendered, n_top=n_top).save(files["gender"])
    return {"files": files, "requested": top.requested, "verdicts": D.count_verdicts(verdicts),
            "judgements": [j.to_dict() for j in verdicts], "gender_sides": sides, "gendered_latents": gendered,
            "n_tokens": top.n_tokens, "wall_s": time.perf_counter() - t0}


def run_opposites(config, stages, *, out, results=None, runs_root=None, loaded=None, n: int = 200, n_top: int = 10,
                  min_share: float = 0.5) -> list[dict]:
    """Measure each seed's TopK / AbsTopK pair of ``stages`` of the sweep ``config`` (module
    docstring); dashboards go to the folder ``out``; one record per SAE is appended to ``results``
    (a JSONL file; None: return only)."""
    from ..lm.models import load_model
    from ..sae import SAE
    from .bidirectional import stage_pairs
    from .store import harvest_spec
    from .sweep import append_record, provenance, record_path

    for name, v in (("n", n), ("n_top", n_top)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must be in (0, 1] (a share of a side's top tokens); got {min_share!r}")
    cfg, pairs = stage_pairs(config, stages)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = loaded if loaded is not None else load_model(cfg.model)
    base = Path(results).parent if results is not None else out
    records = []
    for s, pair in pairs.items():
        for act in ("abstopk", "topk"):
            r = pair[act]
            held_dir = harvest_spec(cfg.harvest_spec(r["layer"], "heldout"), runs_root, loaded=loaded, progress=False)
            sae = SAE.load(record_path(r["provenance"]["sae_dir"], runs_root), device="cpu").eval()
            m = measure_sae(sae, held_dir, loaded, out, f"{act}-seed{s}", n=n, n_top=n_top, min_share=min_share)
            rec = {"schema": SCHEMA, "sweep": cfg.name, "stages": list(stages), "seed": s, "activation": act,
                   "layer": r["layer"], "d_sae": r["d_sae"], "k": r["k"],
                   "sae": {"key": r["key"], "stage": r["stage"], "batch_size": r["batch_size"],
                           "n_steps": r["train"]["n_steps"], "heldout_fvu": r["heldout"]["fvu"]},
                   "settings": {"n": n, "n_top": n_top, "min_share": min_share, "heldout_tokens": m["n_tokens"],
                                "selection": "balance of signs" if sae.cfg.signed else "most antipodal decoder pairs",
                                "rules": {"min_tokens": 5, "same_jaccard": 0.25}},
                   "files": {k: _rel(v, base) for k, v in m.pop("files").items()},
                   **{k: v for k, v in m.items() if k not in ("n_tokens", "wall_s")},
                   "provenance": provenance(m["wall_s"])}
            if results is not None:
                append_record(Path(results), rec)
            records.append(rec)
    return records


_DEFAULTS = inspect.signature(run_opposites).parameters


@dataclass(kw_only=True)
class OppositesJob(StagesJob):
    """Dashboards of the most bidirectional latents of sweep SAEs, judged: do their two sides mean opposite
    things? Plus every gendered side (:func:`run_opposites`)."""

    out: str
    """Folder for the dashboards (.json.gz), e.g. results/dashboards."""
    n: int = _DEFAULTS["n"].default
    """Latents per SAE."""
    n_top: int = _DEFAULTS["n_top"].default
    """Contexts per side."""
    min_share: float = _DEFAULTS["min_share"].default
    """A side is gendered when this share of its top tokens are gender words."""


def run(cfg: OppositesJob) -> dict:
    """``python -m abstopk_mini opposites``: the flags checked, then :func:`run_opposites`."""
    for flag in ("n", "n_top"):
        check_positive(getattr(cfg, flag), "--" + flag.replace("_", "-"))
    if not 0 < cfg.min_share <= 1:
        raise ValueError(f"--min-share must be in (0, 1]; got {cfg.min_share}")
    check_runs_dir(cfg.runs_dir)
    return {"records": run_opposites(cfg.config, list(cfg.stages), out=cfg.out, results=cfg.results,
                                     runs_root=cfg.runs_dir, n=cfg.n, n_top=cfg.n_top, min_share=cfg.min_share)}
