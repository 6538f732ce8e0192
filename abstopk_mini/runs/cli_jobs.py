"""The command-line subcommands that run whole jobs: ``reproduce``, ``sweep``, ``dashboard``,
``bidirectional``, ``opposites``, ``budget`` and ``dead``.

Each ``add_<command>(sub)`` adds its parser to :func:`abstopk_mini.runs.cli.build_parser`; the
commands follow the same contract as the others (a readable summary, or one JSON object under
``--json``, via :func:`~abstopk_mini.runs.cli_args.emit`).
"""

from __future__ import annotations

from pathlib import Path

from .cli_args import check_positive, check_runs_dir, emit

__all__ = ["add_reproduce", "add_sweep", "add_dashboard", "add_bidirectional", "add_opposites", "add_budget",
           "add_dead"]


# ----------------------------------------------------------------------------- reproduce
def add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="the main job: harvest, train the SAE family, eval, concepts, steering, report")
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--tokens", type=int, default=None, help="harvested training tokens (default 1.2M; fewer runs faster)")
    p.add_argument("--d-sae", type=int, default=None)
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="minutes-long smoke run (tiny harvest, d_sae 512)")
    p.add_argument("--out", default="reports/reproduce", help="report folder (default reports/reproduce)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args) -> int:
    from ..chapters.plots_lm import report_figures
    from .reproduce import ReproduceConfig, reproduce

    from ..lm.models import check_layer_for

    check_positive(args.tokens, "--tokens")
    check_layer_for(args.model, args.layer, "--layer")
    check_runs_dir(args.runs_dir)
    kw = {"model": args.model, "layer": args.layer}
    for key, value in (("n_tokens", args.tokens), ("d_sae", args.d_sae), ("k", args.k)):
        if value is not None:
            kw[key] = value
    cfg = ReproduceConfig.quick(**kw) if args.quick else ReproduceConfig(**kw)
    report = reproduce(cfg, args.out, args.runs_dir, figures=report_figures)
    emit(args, {"command": "reproduce", "out": args.out, **report}, (Path(args.out) / "summary.md").read_text())
    return 0


# ----------------------------------------------------------------------------- sweep
def add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="train and evaluate a grid of SAEs (config under sweeps/), one JSON record per run")
    p.add_argument("--config", required=True, help="a JSON sweep config, e.g. sweeps/gemma.json")
    p.add_argument("--results", default=None, help="results file (default: the config's)")
    p.add_argument("--status", default=None, help="rewrite this text file with runs done / total and an ETA")
    p.add_argument("--threads", type=int, default=None, help="torch threads, >= 1 (1 for a background job on a shared machine)")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many new records (>= 1; default: all)")
    p.add_argument("--dry-run", action="store_true", help="only print what is done and what would run")
    p.add_argument("--background", default=None, metavar="LOG",
                   help="detach, log to LOG, print the pid and return (every other flag, --dry-run too, is passed on)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_sweep)


def _run_sweep(args) -> int:
    from .sweep import run_cli

    return run_cli(args, emit)


# ----------------------------------------------------------------------------- dashboard
def add_dashboard(sub) -> None:
    p = sub.add_parser("dashboard", help="signed latent dashboards (top contexts of each sign, histogram, logits) as one HTML page")
    p.add_argument("--sae", required=True, help="SAE: a shipped SAE's name (e.g. gemma-3-270m-L6-abstopk-4096-k32) or "
                   "folder (pretrained/<name>), an SAE directory or a SAELens directory")
    p.add_argument("--acts", required=True, help="harvest directory the SAE reads (from `harvest`)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--latents", default=None, help="comma-separated latent ids, e.g. 0,5,17")
    which.add_argument("--top-bidirectional", type=int, default=None, metavar="N",
                       help="the N most bidirectional latents (TopK: the N most antipodal pairs)")
    p.add_argument("--out", required=True, help="HTML file to write (one latent: its dashboard; several: a browser)")
    p.add_argument("--model", default=None, help="default: the model named in the harvest's manifest")
    p.add_argument("--n-top", type=int, default=10, help="contexts per side (default 10)")
    p.add_argument("--before", type=int, default=10, help="tokens of context before the chosen token (default 10)")
    p.add_argument("--after", type=int, default=4, help="tokens of context after it (default 4)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--data", default=None, help="also save the full DashboardData as JSON here (gzip if it ends in .gz)")
    p.add_argument("--judge", action="store_true",
                   help="also judge each requested latent's two sides by the rules of am.dashboard.judge "
                        "(opposite / different / same / one-sided) and report the counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_dashboard)


#: latents one dashboard command shows at most (a browser page grows by ~10-50 kB per latent)
MAX_DASHBOARD_LATENTS = 4096


def _dashboard_latents(text: str | None) -> tuple[list | None, list]:
    """``--latents`` as a list of distinct ids (first occurrence kept), and notes on what was dropped."""
    if text is None:
        return None, []
    items = [x.strip() for x in text.split(",") if x.strip()]
    try:
        ids = [int(x) for x in items]
    except ValueError:
        raise ValueError(f"--latents must be comma-separated ints such as 0,5,17; got {text!r}") from None
    if not ids:
        raise ValueError(f"--latents is empty; pass latent ids such as 0,5,17; got {text!r}")
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


def _run_dashboard(args) -> int:
    from ..dashboard import browser_html, compute_dashboards, dashboard_html, write_page
    from .cli_inputs import load_checked_model, reading_harvest, sae_inputs

    # everything that can be checked without the SAE, the harvest or the model comes first
    latents, notes = _dashboard_latents(args.latents)
    for flag in ("n_top", "batch_size", "top_bidirectional"):
        check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.top_bidirectional is not None and args.top_bidirectional > MAX_DASHBOARD_LATENTS:
        raise ValueError(f"--top-bidirectional {args.top_bidirectional:,}: one page shows at most "
                         f"{MAX_DASHBOARD_LATENTS:,} latents; pass a smaller N")
    for flag in ("before", "after"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag} must be >= 0 (tokens of context); got {getattr(args, flag)}")
    _check_output(args.out, "--out")
    _check_output(args.data, "--data")
    if args.data is not None and Path(args.data).resolve() == Path(args.out).resolve():
        raise ValueError(f"--data {args.data!r} is the same file as --out; pass another file for the data")

    def check(sae):
        bad = [i for i in (latents or []) if not 0 <= i < sae.cfg.d_sae]
        if bad:
            raise ValueError(f"--latents must be ids in [0, d_sae = {sae.cfg.d_sae}); got {bad[:5]}")
        if args.top_bidirectional is not None and args.top_bidirectional > sae.cfg.d_sae:
            raise ValueError(f"--top-bidirectional {args.top_bidirectional} exceeds d_sae = {sae.cfg.d_sae}; pass N <= {sae.cfg.d_sae}")

    with reading_harvest(args.acts):  # a `harvest --overwrite` of it waits until the dashboard has read it
        inputs = sae_inputs(args, acts=args.acts, check=check)  # SAE, harvest and --model agree; nothing loaded yet
        loaded = load_checked_model(inputs, args.acts)
        data = compute_dashboards(inputs.sae, args.acts, loaded, latents=latents, top_bidirectional=args.top_bidirectional,
                                  n_top=args.n_top, before=args.before, after=args.after, batch_size=args.batch_size,
                                  progress=True)
    one = len(data.requested) == 1
    page = dashboard_html(data, data.requested[0]) if one else browser_html(data)
    raw = data.to_bytes(str(args.data).endswith(".gz")) if args.data else None  # both made before either is written
    size = write_page(page, args.out)
    if args.data:
        from ..io import atomic_write

        atomic_write(args.data, lambda tmp: Path(tmp).write_bytes(raw))
    result = {"command": "dashboard", "out": args.out, "data": args.data, "latents": data.requested,
              "page": "dashboard" if one else "browser", "size_bytes": size, "n_tokens": data.n_tokens, "notes": notes}
    text = f"{len(data.requested)} latent(s) -> {args.out} ({size / 1024:.1f} kB)"
    if args.judge:
        from ..dashboard import count_verdicts, judge

        verdicts = judge(data)
        result["verdicts"] = count_verdicts(verdicts)
        result["judgements"] = [j.to_dict() for j in verdicts]
        text += "\n" + ", ".join(f"{k} {v}" for k, v in result["verdicts"].items())
    emit(args, result, "\n".join([text] + [f"note: {n}" for n in notes]))
    return 0


# ----------------------------------------------------------------------------- bidirectional
def add_bidirectional(sub) -> None:
    p = sub.add_parser("bidirectional", help="gender words in natural text, the all-latent scan, top contexts and "
                                             "steering controls for the TopK / AbsTopK pairs of sweep stages")
    p.add_argument("--config", required=True, help="the sweep config whose records name the SAEs, e.g. sweeps/steps.json")
    p.add_argument("--stages", nargs="+", required=True, help="stages with one TopK / AbsTopK pair per seed")
    p.add_argument("--results", default=None, help="append one JSON record per seed to this file")
    p.add_argument("--max-per-word", type=int, default=200, help="occurrences read per word and text (default 200)")
    p.add_argument("--context-tokens", type=int, default=32_768, help="held-out tokens searched for top contexts")
    p.add_argument("--top-n", type=int, default=50, help="contexts per sign (default 50)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_bidirectional)


def _run_bidirectional(args) -> int:
    from .bidirectional import run_bidirectional

    for flag in ("max_per_word", "context_tokens", "top_n"):
        check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    check_runs_dir(args.runs_dir)
    recs = run_bidirectional(args.config, args.stages, results=args.results, runs_root=args.runs_dir,
                             max_per_word=args.max_per_word, context_tokens=args.context_tokens, top_n=args.top_n)
    lines = [f"seed {r['seed']}: AbsTopK latent {r['natural']['abstopk'].get('best_latent')} sign accuracy "
             f"{r['natural']['abstopk'].get('sign_accuracy', float('nan')):.3f}, held-out pair share "
             f"{r['natural']['abstopk'].get('pair_share', float('nan')):.2f}; TopK best pair "
             f"{r['scan']['topk'].get('best_pair', {}).get('test_pair_share', float('nan')):.2f}" for r in recs]
    emit(args, {"command": "bidirectional", "records": recs}, "\n".join(lines))
    return 0


# ----------------------------------------------------------------------------- opposites
def add_opposites(sub) -> None:
    p = sub.add_parser("opposites", help="dashboards of the most bidirectional latents of sweep SAEs, judged: do "
                                         "their two sides mean opposite things? plus every gendered side")
    p.add_argument("--config", required=True, help="the sweep config whose records name the SAEs, e.g. sweeps/steps.json")
    p.add_argument("--stages", nargs="+", required=True, help="stages with one TopK / AbsTopK pair per seed")
    p.add_argument("--out", required=True, help="folder for the dashboards (.json.gz), e.g. results/dashboards")
    p.add_argument("--results", default=None, help="append one JSON record per SAE to this file")
    p.add_argument("--n", type=int, default=200, help="latents per SAE (default 200)")
    p.add_argument("--n-top", type=int, default=10, help="contexts per side (default 10)")
    p.add_argument("--min-share", type=float, default=0.5,
                   help="a side is gendered when this share of its top tokens are gender words (default 0.5)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_opposites)


def _run_opposites(args) -> int:
    from .opposites import run_opposites

    for flag in ("n", "n_top"):
        check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if not 0 < args.min_share <= 1:
        raise ValueError(f"--min-share must be in (0, 1]; got {args.min_share}")
    check_runs_dir(args.runs_dir)
    recs = run_opposites(args.config, args.stages, out=args.out, results=args.results, runs_root=args.runs_dir,
                         n=args.n, n_top=args.n_top, min_share=args.min_share)
    lines = [f"{r['activation']} seed {r['seed']}: " + ", ".join(f"{k} {v}" for k, v in r["verdicts"].items())
             + f"; {len(r['gender_sides'])} gendered side(s)" for r in recs]
    emit(args, {"command": "opposites", "records": recs}, "\n".join(lines))
    return 0


# ----------------------------------------------------------------------------- budget, dead
def _add_stage_reader_args(p, example: str, which: str) -> None:
    """The arguments of a command that reads the SAEs of sweep stages (runs.budget.read_stage_saes)."""
    p.add_argument("--config", required=True, help=f"the sweep config whose records name the SAEs, e.g. {example}")
    p.add_argument("--stages", nargs="+", required=True, help=f"every {which} of these stages (and its snapshots)")
    p.add_argument("--results", default=None, help="append one JSON record per SAE to this file")
    p.add_argument("--tokens", type=int, default=None, help="the first this many held-out activations (default: all of the sweep's)")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")


def add_budget(sub) -> None:
    p = sub.add_parser("budget", help="how sweep top-k SAEs spread their non-zeros over the tokens of a batch "
                                      "(batch, threshold and per-token readings of the same weights)")
    _add_stage_reader_args(p, "sweeps/ladder_long.json", "top-k SAE")
    p.add_argument("--batch", type=int, default=128, help="tokens per block of the batch reading (default 128, the paper's batch)")
    p.set_defaults(func=_run_budget)


def _run_budget(args) -> int:
    from .budget import run_budget

    check_positive(args.batch, "--batch")
    check_positive(args.tokens, "--tokens")
    check_runs_dir(args.runs_dir)
    recs = run_budget(args.config, args.stages, results=args.results, runs_root=args.runs_dir,
                      eval_batch_size=args.batch, heldout_tokens=args.tokens)
    lines = []
    for r in recs:
        last = r["steps"][-1]
        lines.append(f"{r['activation']} {r['variant']} seed {r['seed']} ({last['step']:,} steps): FVU batch "
                     f"{last['batch']['fvu']:.4f} / threshold {last['threshold']['fvu']:.4f} / row {last['row']['fvu']:.4f}; "
                     f"tokens with no latent (batch) {100 * last['batch']['share_zero']:.1f} %, "
                     f"top 10 % of tokens hold {100 * last['batch']['top_decile_share']:.0f} % of the non-zeros")
    emit(args, {"command": "budget", "records": recs}, "\n".join(lines))
    return 0


def add_dead(sub) -> None:
    p = sub.add_parser("dead", help="the live and the dead latents of sweep TopK/AbsTopK SAEs: reach, "
                                    "pre-activation scale, encoder norm, sign")
    _add_stage_reader_args(p, "sweeps/auxk_window.json", "TopK/AbsTopK SAE")
    p.set_defaults(func=_run_dead)


def _run_dead(args) -> int:
    from .dead import run_dead_profile

    check_positive(args.tokens, "--tokens")
    check_runs_dir(args.runs_dir)
    recs = run_dead_profile(args.config, args.stages, results=args.results, runs_root=args.runs_dir,
                            heldout_tokens=args.tokens)
    lines = []
    for r in recs:
        last = r["steps"][-1]
        alive, dead = last["alive"], last["dead"]
        scale = ("-" if dead["n"] == 0 else
                 f"{dead['mean_abs_u_median'] / alive['mean_abs_u_median']:.2f} of the live ones', "
                 f"{100 * dead['positive_share']:.0f} % ever positive, reach {dead['reach_median']:.2f}")
        lines.append(f"{r['activation']} {r['variant']} seed {r['seed']} ({last['step']:,} steps): "
                     f"{100 * last['dead_frac']:.1f} % dead; dead latents' E|u| {scale}")
    emit(args, {"command": "dead", "records": recs}, "\n".join(lines))
    return 0
