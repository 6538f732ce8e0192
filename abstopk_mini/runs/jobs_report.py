"""The jobs that write reports and pages: ``dashboard``, ``reproduce`` and ``sweep`` (the sweep's
runner is :func:`abstopk_mini.runs.sweep.run_cli`, which can detach itself).

Each job is a config dataclass (every field documented: the docstring under it, which is also its
command-line help) and a ``run_*(cfg)`` returning the job's JSON result.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from ..dashboard.data import compute_dashboards
from .inputs import check_positive, check_runs_dir, load_checked_model, reading_harvest, sae_inputs
from .reproduce import ReproduceConfig

__all__ = ["DashboardJob", "run_dashboard", "MAX_DASHBOARD_LATENTS", "ReproduceJob", "run_reproduce", "SweepJob"]

_DASH = inspect.signature(compute_dashboards).parameters  # the dashboards' defaults live in their function
#: latents one dashboard command shows at most (a browser page grows by ~10-50 kB per latent)
MAX_DASHBOARD_LATENTS = 4096


# ----------------------------------------------------------------------------- dashboard
@dataclass
class DashboardJob:
    """Signed latent dashboards (top contexts of each sign, histogram, logits) as one HTML page."""

    sae: str
    """SAE: a shipped SAE's name or folder, an SAE directory or a SAELens directory (see eval --help)."""
    acts: str
    """Harvest directory the SAE reads (from `harvest`)."""
    out: str
    """HTML file to write (one latent: its dashboard; several: a browser)."""
    latents: tuple[int, ...] | None = None
    """Latent ids, e.g. 0,5,17 (or --top-bidirectional; one of the two)."""
    top_bidirectional: int | None = None
    """The N most bidirectional latents (TopK: the N most antipodal pairs), instead of --latents."""
    model: str | None = None
    """The model; None: the model named in the harvest's manifest."""
    n_top: int = _DASH["n_top"].default
    """Contexts per side."""
    before: int = _DASH["before"].default
    """Tokens of context before the chosen token."""
    after: int = _DASH["after"].default
    """Tokens of context after it."""
    batch_size: int = _DASH["batch_size"].default
    """Tokens per batch through the SAE."""
    data: str | None = None
    """Also save the full DashboardData as JSON here (gzip if it ends in .gz)."""
    judge: bool = False
    """Also judge each requested latent's two sides by the rules of am.dashboard.judge (opposite / different /
    same / one-sided) and report the counts."""

    def __post_init__(self):
        if (self.latents is None) == (self.top_bidirectional is None):
            raise ValueError("pass one of --latents IDS (e.g. 0,5,17) or --top-bidirectional N, not both and not "
                             "neither")


def _dashboard_latents(ids) -> tuple[list | None, list]:
    """``--latents`` as a list of distinct ids (first occurrence kept), and notes on what was dropped."""
    if ids is None:
        return None, []
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_DASHBOARD_LATENTS:
        raise ValueError(f"--latents lists {len(unique):,} distinct ids; one page shows at most "
                         f"{MAX_DASHBOARD_LATENTS:,} — split them over several dashboard commands")
    notes = [] if len(unique) == len(ids) else [
        f"--latents listed {len(ids) - len(unique):,} id(s) more than once; each latent is shown once"]
    return unique, notes


def _check_output(path: str | None, flag: str) -> None:
    """Refuse, before any work, an output file whose folder is missing or which is a folder."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{flag} {path!r} is a directory; pass a file name, e.g. {flag} {target / 'latents.html'}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{flag} {path!r}: the folder {str(target.parent)!r} does not exist; create it first "
                                "or pass a file in an existing folder")


def _check_dashboard(cfg: DashboardJob) -> tuple[list | None, list]:
    """Everything that can be checked without the SAE, the harvest or the model; returns the latents
    and notes on them."""
    latents, notes = _dashboard_latents(cfg.latents)
    for flag in ("n_top", "batch_size", "top_bidirectional"):
        check_positive(getattr(cfg, flag), "--" + flag.replace("_", "-"))
    if cfg.top_bidirectional is not None and cfg.top_bidirectional > MAX_DASHBOARD_LATENTS:
        raise ValueError(f"--top-bidirectional {cfg.top_bidirectional:,}: one page shows at most "
                         f"{MAX_DASHBOARD_LATENTS:,} latents; pass a smaller N")
    for flag in ("before", "after"):
        if getattr(cfg, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0 (tokens of context); got {getattr(cfg, flag)}")
    _check_output(cfg.out, "--out")
    _check_output(cfg.data, "--data")
    if cfg.data is not None and Path(cfg.data).resolve() == Path(cfg.out).resolve():
        raise ValueError(f"--data {cfg.data!r} is the same file as --out; pass another file for the data")
    return latents, notes


def run_dashboard(cfg: DashboardJob) -> dict:
    from ..dashboard import browser_html, dashboard_html, write_page
    from ..io import atomic_write

    latents, notes = _check_dashboard(cfg)

    def check(sae):
        bad = [i for i in (latents or []) if not 0 <= i < sae.cfg.d_sae]
        if bad:
            raise ValueError(f"--latents must be ids in [0, d_sae = {sae.cfg.d_sae}); got {bad[:5]}")
        if cfg.top_bidirectional is not None and cfg.top_bidirectional > sae.cfg.d_sae:
            raise ValueError(f"--top-bidirectional {cfg.top_bidirectional} exceeds d_sae = {sae.cfg.d_sae}; "
                             f"pass N <= {sae.cfg.d_sae}")

    with reading_harvest(cfg.acts):  # a `harvest --overwrite` of it waits until the dashboard has read it
        inputs = sae_inputs(cfg, acts=cfg.acts, check=check)  # SAE, harvest and --model agree; nothing loaded yet
        loaded = load_checked_model(inputs, cfg.acts)
        data = compute_dashboards(inputs.sae, cfg.acts, loaded, latents=latents, top_bidirectional=cfg.top_bidirectional,
                                  n_top=cfg.n_top, before=cfg.before, after=cfg.after, batch_size=cfg.batch_size,
                                  progress=True)
    one = len(data.requested) == 1
    page = dashboard_html(data, data.requested[0]) if one else browser_html(data)
    raw = data.to_bytes(str(cfg.data).endswith(".gz")) if cfg.data else None  # both made before either is written
    size = write_page(page, cfg.out)
    if cfg.data:
        atomic_write(cfg.data, lambda tmp: Path(tmp).write_bytes(raw))
    result = {"out": cfg.out, "data": cfg.data, "latents": data.requested, "page": "dashboard" if one else "browser",
              "size_bytes": size, "n_tokens": data.n_tokens, "notes": notes}
    if cfg.judge:
        from ..dashboard import count_verdicts, judge

        verdicts = judge(data)
        result["verdicts"] = count_verdicts(verdicts)
        result["judgements"] = [j.to_dict() for j in verdicts]
    return result


# ----------------------------------------------------------------------------- reproduce
@dataclass
class ReproduceJob:
    """The main job: harvest, train the SAE family, eval, concepts, steering; a report folder
    (:func:`abstopk_mini.runs.reproduce.reproduce`)."""

    out: str = "reports/reproduce"
    """Report folder."""
    runs_dir: str | None = None
    """Artifact root; None: $ABSTOPK_RUNS or ./runs."""
    quick: bool = False
    """A minutes-long smoke run (ReproduceConfig.quick(): tiny harvest, d_sae 512); the settings given override it."""
    config: ReproduceConfig = field(default_factory=ReproduceConfig, metadata={"presets": {"quick": ReproduceConfig.quick}})
    """The settings of the run."""


def run_reproduce(cfg: ReproduceJob, figures=None) -> dict:
    """The reproduce job; figures: ``figures(report, out_dir) -> file names`` (the CLI passes the
    book's :func:`abstopk_mini.chapters.plots_lm.report_figures`; runs/ draws nothing itself)."""
    from ..lm.models import check_layer_for
    from .reproduce import reproduce

    check_positive(cfg.config.n_tokens, "--tokens")
    check_layer_for(cfg.config.model, cfg.config.layer, "--layer")
    check_runs_dir(cfg.runs_dir)
    return {"out": cfg.out, **reproduce(cfg.config, cfg.out, cfg.runs_dir, figures=figures)}


# ----------------------------------------------------------------------------- sweep
@dataclass
class SweepJob:
    """A grid of SAEs (width, k, layer, ...) trained and measured, one JSON record per run (run by
    :func:`abstopk_mini.runs.sweep.run_cli`)."""

    config: str
    """A JSON sweep config, e.g. sweeps/gemma.json."""
    results: str | None = None
    """Results file; None: the config's."""
    status: str | None = None
    """Rewrite this text file with runs done / total and an ETA."""
    threads: int | None = None
    """Torch threads, >= 1 (1 for a background job on a shared machine); None: torch's default."""
    max_runs: int | None = None
    """Stop after this many new records (>= 1); None: all."""
    dry_run: bool = False
    """Only print what is done and what would run."""
    background: str | None = None
    """Detach, log to this file, print the pid and return (every other flag, --dry-run too, is passed on)."""
    runs_dir: str | None = None
    """Artifact root; None: $ABSTOPK_RUNS or ./runs."""
