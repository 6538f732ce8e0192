"""Command line: ``python -m abstopk_mini <command> [--json] ...``.

Every command prints a readable summary, or with ``--json`` exactly one JSON object on stdout;
progress bars and logs go to stderr. Commands:

    toy         the toy benchmark: every activation on P signed axes (no model needed)
    harvest     residual-stream activations of a model on offline text, written to shards
    train       an SAE trained on a harvest (content-addressed: a rerun reuses it)
    eval        FVU, L0, dead latents, and CE/KL/loss recovered with the SAE spliced into the model
    concepts    best single latent for a concept axis (male/female, ...), by sign, vs Difference-in-Means;
                plus gender words in held-out natural text and the all-latent sign scan
    steer       clamp a latent from negative to positive: female-vs-male next-token log-odds
    reproduce   the main job: all of the above for the SAE family on the embedded model, as a report
    sweep       a grid of SAEs (width, k, layer, ...) trained and measured, one JSON record per run
    dashboard   signed latent dashboards as one HTML page
    bidirectional  gender words in natural text, the all-latent scan and steering controls for sweep SAEs
    opposites   dashboards of the most bidirectional latents of sweep SAEs, judged: opposite meanings?
    budget      how sweep top-k SAEs spread their non-zeros over a batch's tokens (three readings)
    dead        the live and the dead latents of sweep TopK/AbsTopK SAEs (reach, scale, sign)
                (these seven: :mod:`abstopk_mini.runs.cli_jobs`)

Errors: every failure is one line ``error: ...`` on stderr (under ``--json`` also one object
``{"error": ..., "type": ...}`` on stdout) and exit code 2. Arguments are checked before a model
is loaded. Bad input and problems of the machine (a full disk, a read-only path, a bad
``ABSTOPK_DEVICE``) are reported with their fix; an exception the package does not expect is
reported as a bug; ``--debug`` (or ``ABSTOPK_DEBUG=1``) adds its traceback.
"""

from __future__ import annotations

import argparse
import re
import sys

from .cli_args import (Parser, UsageError, check_harvest_args, check_positive, check_runs_dir, check_train_fits, emit,
                       join_signed_values, parse_floats, report_error)
from .cli_jobs import add_bidirectional, add_budget, add_dashboard, add_dead, add_opposites, add_reproduce, add_sweep

__all__ = ["main", "build_parser", "UsageError"]


# ----------------------------------------------------------------------------- toy
def _add_toy(sub) -> None:
    p = sub.add_parser("toy", help="toy benchmark: every SAE activation on P signed ground-truth axes")
    p.add_argument("--d", type=int, default=64, help="ambient dimension (default 64)")
    p.add_argument("--P", type=int, default=32, help="number of signed ground-truth axes (default 32)")
    p.add_argument("--n-active", type=int, default=3, help="axes active per sample = k (default 3)")
    p.add_argument("--tokens", type=int, default=4_000_000, help="training samples seen per run (default 4M)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for smoke tests")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_run_toy)


def _run_toy(args) -> int:
    import torch

    from ..coding.toy import format_table, toy_benchmark

    torch.manual_seed(args.seed)
    settings = dict(d=args.d, P=args.P, n_active=args.n_active, n_tokens=args.tokens, batch_size=args.batch_size, seed=args.seed)
    if args.quick:
        settings.update(d=16, P=8, n_active=2, n_tokens=200_000, n_samples=10_000)
    rows = toy_benchmark(progress=not args.json and sys.stderr.isatty(), **settings)
    emit(args, {"command": "toy", "settings": settings, "rows": rows}, format_table(rows))
    return 0


# ----------------------------------------------------------------------------- harvest
def _add_harvest(sub) -> None:
    p = sub.add_parser("harvest", help="residual-stream activations of a model on offline text, to shards")
    p.add_argument("--model", default="gemma-3-270m", help="model name, hub id or local dir (default: the embedded gemma-3-270m)")
    p.add_argument("--layer", type=int, default=6, help="residual stream after this block (default 6)")
    p.add_argument("--tokens", type=int, default=1_000_000, help="tokens to harvest (default 1M)")
    p.add_argument("--context", type=int, default=128, help="context length incl. BOS (default 128)")
    p.add_argument("--sources", default="wiki,lee,newsgroups", help="comma-separated: wiki, lee, newsgroups, hf:<dataset>")
    p.add_argument("--split", default="train", choices=["train", "heldout"])
    p.add_argument("--offsets", default="0,64", help="chunk offsets, one pass over the text each (default 0,64)")
    p.add_argument("--augment", default="none", choices=["none", "gender_swap"],
                   help="gender_swap: every training document followed by its gender-swapped copy (a gender-balanced text)")
    p.add_argument("--runs-dir", default=None, help="artifact root (default $ABSTOPK_RUNS or ./runs)")
    p.add_argument("--overwrite", action="store_true", help="replace a different harvest in the target dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_harvest)


def _harvest_spec(args):
    from .store import HarvestSpec

    offsets = []
    for o in (t.strip() for t in args.offsets.split(",")):
        if o == "":
            continue
        if not re.fullmatch(r"-?\d+", o) or int(o) < 0:
            raise ValueError(f"--offsets: {o!r} is not an int >= 0; pass token offsets, e.g. --offsets 0,64")
        offsets.append(int(o))
    return HarvestSpec(model=args.model, layer=args.layer, n_tokens=args.tokens, context_length=args.context,
                       sources=tuple(s for s in args.sources.split(",") if s), split=args.split,
                       chunk_offsets=tuple(offsets), augment=args.augment)


def _run_harvest(args) -> int:
    from ..concepts.swap import text_augmentation
    from .store import harvest_spec
    from ..lm.shards import read_manifest

    spec = _harvest_spec(args)
    check_harvest_args(args, spec)
    out = harvest_spec(spec, args.runs_dir, progress=True, overwrite=args.overwrite, augment=text_augmentation(spec.augment))
    m = read_manifest(out)
    result = {"command": "harvest", "dir": str(out), "model": m["model"], "layer": m["layer"],
              "hook_name": m["hook_name"], "tokens": m["tokens_written"], "n_shards": m["n_shards"],
              "content_sha256": m["content_sha256"]}
    emit(args, result, f"{m['tokens_written']:,} tokens of {m['model']} {m['hook_name']} in {out}")
    return 0


# ----------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    from ..nonlinearities import SPECS

    p = sub.add_parser("train", help="train an SAE on a harvest directory")
    p.add_argument("--acts", required=True, help="harvest directory (from `harvest`)")
    p.add_argument("--activation", default="abstopk", choices=sorted(SPECS))
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--k", type=int, default=32, help="non-zeros per token (target L0 for relu/jumprelu)")
    p.add_argument("--tokens", type=int, default=None, help="training tokens (default: one pass over the harvest)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--drop-nonfinite", action="store_true", help="drop activation rows holding NaN/Inf (counted in the history)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save the SAE here too (the run dir is content-addressed under --runs-dir)")
    p.add_argument("--overwrite", action="store_true", help="let --out replace an SAE (or SAE run dir) already there")
    p.add_argument("--retrain", action="store_true",
                   help="train again into the content-addressed run dir, replacing a cached (e.g. damaged) SAE")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .store import export_sae, train_on_harvest
    from ..sae import SAEConfig
    from ..lm.compat import check_inputs
    from ..lm.shards import read_manifest
    from .cli_inputs import harvest_names

    check_runs_dir(args.runs_dir)
    check_positive(args.d_sae, "--d-sae")
    check_positive(args.batch_size, "--batch-size")
    manifest = read_manifest(args.acts)
    # the harvest against the shape of the model it names (registry or config.json; nothing loaded)
    check_inputs(harvest=manifest, model=manifest["model"], names=harvest_names(args) | {"model": "the model it names"},
                 model_fix="the manifest does not fit its model (edited, or the model changed); re-run the harvest "
                           "with --overwrite")
    d_in = manifest["d_model"]
    cfg = SAEConfig(d_in=d_in, d_sae=args.d_sae, activation=args.activation, k=args.k, seed=args.seed)
    check_train_fits(cfg, args.batch_size, args.runs_dir)
    kw = {"batch_size": args.batch_size, "seed": args.seed}
    if args.tokens is not None:
        kw["n_tokens"] = args.tokens
    if args.lr is not None:
        kw["lr"] = args.lr
    if args.drop_nonfinite:  # only when set: the run directory's hash of the settings stays as before
        kw["drop_nonfinite"] = True
    sae, hist, path = train_on_harvest(args.acts, cfg, args.runs_dir, progress=True, retrain=args.retrain, **kw)
    if args.out:
        export_sae(sae, args.out, overwrite=args.overwrite, run_dir=path)
    # final_fvu / final_l0: the trained SAE on a fixed sample (train._final_metrics). A run cached by an earlier
    # version has none: null (its last batch's value is no summary of the SAE)
    last = {key: hist.get(f"final_{key}") for key in ("fvu", "l0", "dead_frac")}
    result = {"command": "train", "dir": str(path), "out": args.out, "activation": args.activation, "d_sae": args.d_sae,
              "k": args.k, "n_tokens": hist["n_tokens"], "wall_time_s": hist["wall_time_s"], **{f"final_{k}": v for k, v in last.items()}}
    emit(args, result, f"{args.activation} d_sae={args.d_sae} k={args.k}: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if v is not None) + f" -> {path}")
    return 0


# ----------------------------------------------------------------------------- shared
SAE_HELP = ("SAE: a shipped SAE's name (e.g. gemma-3-270m-L6-abstopk-4096-k32) or folder (pretrained/<name>), "
            "an SAE directory (train --out, runs/saes/...) or a SAELens directory")


# ----------------------------------------------------------------------------- concepts
def _add_concepts(sub) -> None:
    p = sub.add_parser("concepts", help="does one latent separate a concept's two sides (by sign)? vs Difference-in-Means")
    p.add_argument("--sae", required=True, help=SAE_HELP)
    p.add_argument("--pairs", default="family", help="family, opposite, or a file of 'a b' lines (train pairs)")
    p.add_argument("--test-pairs", default=None, help="file of 'a b' lines to test on (default: a seeded split of --pairs)")
    p.add_argument("--templates", default=None, help="file with one template per line, '{}' marking the word")
    p.add_argument("--layer", type=int, default=None, help="default: the SAE's hook layer")
    p.add_argument("--model", default=None, help="default: the model the SAE was trained on")
    p.add_argument("--mismatch", default="keep", choices=["keep", "drop", "raise"],
                   help="pairs whose word merges with the template text: keep (reported), drop or raise")
    p.add_argument("--acts", default=None, help="a harvest dir: adds the share of bidirectional latents on 20k of its tokens")
    p.add_argument("--natural-tokens", type=int, default=100_000,
                   help="held-out text tokens scanned for gender words (the 'natural' and 'scan' sections; 0 disables). "
                        "Only chunks holding a word run through the model; the offline held-out split is ~77k "
                        "Gemma tokens with ~225 occurrences (default 100000: all of it)")
    p.add_argument("--natural-per-word", type=int, default=200, help="occurrences read per word at most (default 200)")
    p.add_argument("--natural-sources", default="wiki,lee,newsgroups",
                   help="comma-separated text sources for the natural test (held-out split; the train split is counted)")
    p.add_argument("--natural-choose-on", default="train-text", choices=["train-text", "split"],
                   help="choose the latent on gender-word occurrences in the training split of the sources and test on "
                        "every held-out one (train-text, default), or split the held-out occurrences by document (split)")
    p.add_argument("--scan-top", type=int, default=10, help="latents listed in the 'scan' section (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_concepts)


def _natural_sources(text: str) -> tuple[str, ...]:
    from ..lm.corpus import SOURCES

    sources = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in sources if s not in SOURCES and not s.startswith("hf:")]
    if not sources or bad:
        raise ValueError(f"--natural-sources {text!r}: unknown {bad or 'empty'}; choose from {SOURCES} or hf:<dataset>")
    return sources


def _natural_texts(sources: tuple[str, ...]):
    """(train, held-out) documents of ``sources``; local sources are read once."""
    from ..lm import corpus
    from .store import offline_texts

    if not any(s.startswith("hf:") for s in sources):
        return corpus.train_heldout_split(corpus.load_docs(sources))
    return offline_texts(sources, "train"), offline_texts(sources, "heldout")


def _run_concepts(args) -> int:
    from pathlib import Path

    from ..concepts.pairs import check_templates, load_pairs, split_pairs
    from ..concepts.words import run_concepts
    from ..lm.compat import check_inputs
    from .cli_inputs import load_checked_model, reading_harvest, sae_inputs

    # the pairs, the split, the templates and the natural-test options are checked before the model loads
    if args.natural_tokens < 0:
        raise ValueError(f"--natural-tokens must be >= 0 (0 disables the natural test); got {args.natural_tokens}")
    check_positive(args.natural_per_word, "--natural-per-word")
    check_positive(args.scan_top, "--scan-top")
    sources = _natural_sources(args.natural_sources)
    pairs = load_pairs(args.pairs)
    if args.test_pairs is not None:
        load_pairs(args.test_pairs)
    else:
        split_pairs(pairs, seed=args.seed)
    templates = None
    if args.templates:
        if not Path(args.templates).is_file():
            raise FileNotFoundError(f"--templates {args.templates!r} is not a file")
        templates = [line.rstrip("\n") for line in Path(args.templates).read_text().splitlines() if line.strip()]
        check_templates(templates)
    inputs = sae_inputs(args, acts=args.acts, require_layer=True)
    sae, layer = inputs.sae, inputs.layer
    loaded = load_checked_model(inputs, args.acts)
    token_acts = None
    if args.acts:
        from ..lm.shards import load_activations

        with reading_harvest(args.acts):  # a `harvest --overwrite` of it waits until it is read
            check_inputs(sae, args.acts, loaded, layer, names=inputs.names)
            token_acts = load_activations(args.acts, 20_000)
    report = run_concepts(sae, loaded, args.pairs, test_pairs=args.test_pairs, layer=layer, templates=templates,
                          seed=args.seed, mismatch=args.mismatch, token_acts=token_acts)
    report = {"command": "concepts", **report, "natural": None, "scan": None}
    text = (f"{report['concept']}: best latent {report['best_latent']} — sign accuracy {report['test_accuracy']:.3f}, "
            f"DiM accuracy {report['dim_test_accuracy']:.3f} on {len(report['test_pairs'])} test pairs")
    if args.natural_tokens > 0:
        from ..concepts.natural import run_natural

        train_texts, heldout = _natural_texts(sources)
        template_words = [w for p in report["train_pairs"] + report["test_pairs"] for w in p]
        out = run_natural(sae, loaded, heldout, train_texts=train_texts, count_also=template_words, layer=layer,
                          max_tokens=args.natural_tokens, max_per_word=args.natural_per_word, seed=args.seed,
                          n_top=args.scan_top, choose_on=args.natural_choose_on.replace("-", "_"))
        report.update(natural={"sources": list(sources), **out["natural"]}, scan=out["scan"])
        nat = report["natural"]
        text += ("\nnatural text: " + nat["skipped"] if "skipped" in nat else
                 f"\nnatural text: best latent {nat['best_latent']} — sign accuracy {nat['sign_accuracy']:.3f}, "
                 f"pair share {nat['pair_share']:.3f}, DiM accuracy {nat['dim_test_accuracy']:.3f} on "
                 f"{nat['n_test']} held-out occurrences")
    emit(args, *_with_nulls(report, text))
    return 0


# ----------------------------------------------------------------------------- eval
def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="FVU, L0, dead latents and loss recovered of an SAE on held-out text")
    p.add_argument("--sae", required=True, help=SAE_HELP)
    p.add_argument("--model", default=None, help="default: the model the SAE was trained on")
    p.add_argument("--layer", type=int, default=None, help="the block the SAE reads (default: the SAE's hook layer)")
    p.add_argument("--tokens", type=int, default=4096, help="held-out predictions scored with the SAE spliced in")
    p.add_argument("--acts-tokens", type=int, default=20_000, help="held-out activations for FVU/L0/dead/signs")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from ..lm import splice
    from .store import HarvestSpec, harvest_spec, offline_texts
    from ..evaluate import evaluate_sae
    from ..lm.compat import check_inputs
    from ..lm.shards import load_activations
    from .cli_inputs import load_checked_model, reading_harvest, sae_inputs

    check_positive(args.tokens, "--tokens")
    check_positive(args.acts_tokens, "--acts-tokens")
    check_runs_dir(args.runs_dir)
    inputs = sae_inputs(args, require_layer=True)
    sae, layer = inputs.sae, inputs.layer
    loaded = load_checked_model(inputs)
    spec = HarvestSpec(inputs.model, layer, args.acts_tokens, sae.cfg.context_size or 128, split="heldout",
                       chunk_offsets=(0,))
    out = harvest_spec(spec, args.runs_dir, loaded=loaded)
    with reading_harvest(out):  # a `harvest --overwrite` of it waits until it is read
        check_inputs(sae, out, loaded, layer, names=inputs.names | {"harvest": f"the held-out harvest {str(out)!r}"})
        held = load_activations(out)
    result = {"command": "eval", "sae": args.sae, "layer": layer, **evaluate_sae(sae.cpu().eval(), held)}
    res = splice.evaluate(loaded, sae, offline_texts(split="heldout"), layer, max_tokens=args.tokens)
    result.update({f"splice_{k}": v for k, v in res.to_dict().items()})
    text = (f"FVU {result['fvu']:.4f}, L0 {result['l0']:.1f}, dead {100 * result['dead_frac']:.1f} %, loss recovered "
            f"{result['splice_loss_recovered_zero']:.3f} (zero) / {result['splice_loss_recovered_mean']:.3f} (mean)")
    emit(args, *_with_nulls(result, text))
    return 0


def _with_nulls(result: dict, text: str) -> tuple[dict, str]:
    """``result`` for JSON: a non-finite number (e.g. loss recovered when the ablation's CE equals the
    clean CE, a ratio over constant data) becomes null, and ``notes`` says which and why."""
    from ..strict_json import nulls_for_nonfinite

    result, nulls = nulls_for_nonfinite(result)
    notes = [f"{where} is null: it is not a finite number (a ratio whose denominator is 0, or a metric of "
             "constant data)" for where in nulls]
    result["notes"] = list(result.get("notes") or []) + notes
    return result, text + "".join(f"\nnote: {n}" for n in notes)


# ----------------------------------------------------------------------------- steer
def _add_steer(sub) -> None:
    p = sub.add_parser("steer", help="clamp one latent from negative to positive: female-vs-male next-token log-odds")
    p.add_argument("--sae", required=True, help=SAE_HELP)
    p.add_argument("--latent", type=int, required=True)
    p.add_argument("--values", default="-20,-10,-5,0,5,10,20",
                   help="comma-separated clamp values c (--values -5,5 and --values=-5,5 both work)")
    p.add_argument("--model", default=None)
    p.add_argument("--layer", type=int, default=None, help="the block the SAE reads (default: the SAE's hook layer)")
    p.add_argument("--prompt", default=None, help="also generate a continuation of this prompt at the smallest and largest c")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_steer)


def _run_steer(args) -> int:
    from ..lm import steering
    from .cli_inputs import load_checked_model, sae_inputs

    values = parse_floats(args.values, "--values")

    def check(sae):
        if not 0 <= args.latent < sae.cfg.d_sae:
            raise ValueError(f"--latent must satisfy 0 <= latent < d_sae = {sae.cfg.d_sae}; got {args.latent}")

    inputs = sae_inputs(args, require_layer=True, check=check)
    sae, layer = inputs.sae, inputs.layer
    loaded = load_checked_model(inputs)
    if args.prompt is not None:  # before the curve: a prompt longer than the model's context is refused now
        steering.check_prompt(loaded, args.prompt, name="--prompt")
    curve = steering.logit_diff_curve(loaded, lambda c: steering.clamp_latent(sae, args.latent, c, layer), values)
    result = {"command": "steer", "sae": args.sae, "latent": args.latent, "layer": layer, **curve.to_dict()}
    broken = set(curve.nonfinite_values())
    if args.prompt is not None:
        result["generations"] = {}
        for c in (min(values), max(values)):
            if c in broken:
                result["generations"][str(c)] = None
                result["notes"].append(f"no generation at c = {c:g}: the model's logits are not finite there")
            else:
                result["generations"][str(c)] = steering.generate_with(
                    loaded, args.prompt, steering.clamp_latent(sae, args.latent, c, layer))
    lines = [f"c = {c:+g}: " + ("log-odds null (not finite)" if c in broken else f"log-odds {lo:+.3f}")
             for c, lo in zip(curve.values, curve.log_odds.tolist())]
    emit(args, result, "\n".join(lines + [f"note: {n}" for n in result["notes"]]))
    return 0


# ----------------------------------------------------------------------------- main
_COMMANDS = [_add_toy, _add_harvest, _add_train, _add_eval, _add_concepts, _add_steer, add_reproduce, add_sweep,
             add_dashboard, add_bidirectional, add_opposites, add_budget, add_dead]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m abstopk_mini", description="Sparse autoencoders from sparse coding (AbsTopK and friends).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in _COMMANDS:
        add(sub)
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", help="on an unexpected error, print its traceback (or set ABSTOPK_DEBUG=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0, or 2 after one ``error:`` line).

    Before the command runs: ``ABSTOPK_DEVICE`` is checked (:func:`abstopk_mini.device.check_device_env`)
    and a ``--seed`` must lie in [0, 2**32 - 1]. Errors are classified by
    :func:`~abstopk_mini.runs.cli_args.report_error`: bad input and problems of the machine (a full
    disk, a read-only path) are reported with their fix, anything else as a bug.
    """
    argv = join_signed_values(list(sys.argv[1:] if argv is None else argv))
    args = None
    try:
        args = build_parser().parse_args(argv)
        from ..device import check_device_env
        from ..limits import check_seed

        if getattr(args, "seed", None) is not None:
            check_seed(args.seed, "--seed")
        check_device_env()
        return int(args.func(args) or 0)
    except Exception as err:  # noqa: BLE001 - classified: user/environment error, or a bug (traceback under --debug)
        return report_error(argv, args, err)
