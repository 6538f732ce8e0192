r"""The measured sweep: when does one SAE latent carry a concept in both directions?

``python -m abstopk_mini sweep --config sweeps/gemma.json --json`` trains and evaluates every
point of a grid of SAEs on one model and appends one JSON record per point to a results file
(``results/*.jsonl``, committed with the book). A config (:mod:`abstopk_mini.runs.sweep_config`)
names the model, the harvest, the evaluation and an ordered list of **stages**; each stage is the
product of its axes::

    {"name": "gemma", "results": "../results/gemma_sweep.jsonl", "model": "gemma-3-270m",
     "stages": [{"name": "grid", "layers": [6, 9], "widths": [512, 4096], "ks": [8, 32],
                 "activations": ["topk", "abstopk"], "seeds": [0], "train_tokens": [1200000]}]}

A **point** is ``(layer, d_sae, k, activation, seed, variant, train_tokens)``; within a stage the
points are ordered ``seed > train_tokens > variant > k > layer > width > activation`` (outermost
first), so the first values of each axis come first. Stages run in the order given: put the most
informative ones first.

Nothing is done twice. Harvests and SAEs are content-addressed (:mod:`abstopk_mini.runs.store`), so
they are shared with every other process using ``$ABSTOPK_RUNS``; a record carries the hash of
everything that determines it (``key``: the point, the harvest, the training and the evaluation
settings), and a point whose key is already in the results file is skipped. A rerun therefore
does nothing, and a changed setting runs only the points it changes.

Per layer, what every SAE is measured on is computed once: the held-out activations (FVU, L0,
dead latents, signs), the word activations of the concept pairs (``family``: male ↔ female,
``opposite``: antonyms) and the sentence activations of ``sentiment``. Loss recovered is measured
on ``splice_tokens`` held-out predictions for a **block** of SAEs of one layer at once
(:func:`abstopk_mini.lm.splice.evaluate_many`: the original, zero- and mean-ablated forwards are
shared).

Variants (``VARIANTS``) change one thing about training: ``default`` (b_dec starts at the
geometric median and is trained), ``bdec_mean`` / ``bdec_zeros`` (another start), and the frozen
centres ``bdec_gender_mid_frozen`` (b_dec fixed at the midpoint of the male and female train
words, so both sides of the gender axis lie away from the centre) and ``bdec_mean_frozen`` (fixed
at the data mean, its control). ``bdec_gender_mid_frozen_no_b_enc`` also drops the encoder bias
(``SAEConfig(use_b_enc=False)``, :data:`VARIANT_SAE`): u = (s x − b_dec) W_enc, so u = 0 exactly at
the gender midpoint and the sign of u says on which side of it a token lies.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..io import Claim, atomic_write
from ..sae import SAEConfig
from .store import HarvestSpec, content_key, harvest_spec, offline_texts, relative_to_runs, runs_dir, train_or_load
from .sweep_config import (CONCEPTS, RECIPE_VARIANTS, SCHEMA, VARIANT_SAE, VARIANTS, Point, Stage, SweepConfig, load_config,
                           recipe_variant)
from .sweep_eval import LayerContext, compact, evaluate_point, evaluate_snapshots

__all__ = [
    "VARIANTS", "RECIPE_VARIANTS", "CONCEPTS", "SCHEMA", "Point", "Stage", "SweepConfig", "load_config", "plan",
    "read_results", "append_record", "git_commit", "run_sweep", "LayerContext", "layer_context", "evaluate_point", "evaluate_snapshots",
    "record_path", "format_status", "run_cli", "background_argv", "check_cli_args", "concept_inputs_path", "load_concept_inputs",
]

# ============================================================================ results file
def read_results(path) -> list[dict]:
    """The records of a results file (missing file: none). A torn last line is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a write interrupted mid-line
                continue
            raise ValueError(f"{path}:{i + 1} is not a JSON record; fix or remove that line") from None
    return out


def append_record(path: Path, record: dict) -> None:
    """Append one JSON line (one write call; a partial last line is skipped by the reader)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_jsonable, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, (tuple, set)):
        return list(v)
    return str(v)


def plan(cfg: SweepConfig) -> dict:
    """Which points are done (in the results file) and which are still to run, in run order."""
    done = {r.get("key") for r in read_results(cfg.results_path)}
    rows = [(stage, p, cfg.point_key(p)) for stage, p in cfg.points()]
    todo = [(stage, p, key) for stage, p, key in rows if key not in done]
    return {"total": len(rows), "done": len(rows) - len(todo), "todo": todo}


# ============================================================================ per-layer inputs
def concept_inputs_path(model_name: str, layer: int, concepts=CONCEPTS, root=None) -> Path:
    """Where the sweep caches the concept inputs of one layer (see :func:`layer_context`)."""
    from .. import concepts as C

    ident = {"model": model_name, "layer": layer, "concepts": list(concepts), "recipe": "sweep-concepts/1",
             "templates": {k: list(v) for k, v in C.TEMPLATES.items()}, "neutral": {k: list(v) for k, v in C.NEUTRAL_WORDS.items()}}
    return runs_dir(root) / "concept_acts" / f"L{layer}-{content_key(ident)}.pt"


def load_concept_inputs(model_name: str, layer: int, concepts=CONCEPTS, root=None):
    """The cached ``(word_acts {set: WordActivations}, (sentence acts, labels) or None)``, or None."""
    path = concept_inputs_path(model_name, layer, concepts, root)
    if not path.is_file():
        return None
    from ..concepts.words import TokenIssue, WordActivations

    try:  # no pickle beyond tensors, containers and these two dataclasses (an allow-list)
        with torch.serialization.safe_globals([WordActivations, TokenIssue]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["word_acts"], saved["sentiment"]
    except Exception:  # damaged, foreign or of an older layout: computed again and rewritten
        return None


def _concept_inputs(loaded, layer: int, concepts, root) -> tuple[dict, tuple | None]:
    """Word activations of the pair sets and sentence activations of sentiment, cached on disk."""
    from .. import concepts as C

    path = concept_inputs_path(loaded.info.name, layer, concepts, root)
    cached = load_concept_inputs(loaded.info.name, layer, concepts, root)
    if cached is not None:
        return cached
    word_acts = {c: C.pair_word_activations(loaded, c, layer) for c in concepts if c in C.PAIR_SETS}
    sentiment = None
    if "sentiment" in concepts:
        texts, labels = C.load_sentiment()
        sentiment = (C.sentence_activations(loaded, texts, layer), labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save({"word_acts": word_acts, "sentiment": sentiment}, tmp))
    return word_acts, sentiment


def layer_context(cfg: SweepConfig, loaded, layer: int, root=None, progress: bool = True) -> LayerContext:
    """Harvest (or reuse) the layer's training and held-out activations and the concept inputs."""
    from ..concepts.swap import text_augmentation
    from ..lm.shards import load_activations

    spec = cfg.harvest_spec(layer)
    acts_dir = harvest_spec(spec, root, loaded=loaded, progress=progress, augment=text_augmentation(spec.augment))
    held_dir = harvest_spec(cfg.harvest_spec(layer, "heldout"), root, loaded=loaded, progress=progress)
    word_acts, sentiment = _concept_inputs(loaded, layer, cfg.eval["concepts"], root)
    return LayerContext(layer, acts_dir, held_dir, load_activations(held_dir), word_acts, sentiment)


# ============================================================================ training
def _train_kw(cfg: SweepConfig, p: Point) -> dict:
    # the default variant keeps exactly these keys, so it shares SAEs with `reproduce` and the CLI
    kw = {"n_tokens": p.train_tokens, "batch_size": p.batch_size or cfg.batch_size, "seed": p.seed}
    if p.snapshot_steps:
        kw["snapshot_steps"] = tuple(p.snapshot_steps)
    return kw | (VARIANTS.get(p.variant) or {})


def _frozen_centre(p: Point, ctx: LayerContext, sample: torch.Tensor, pair_seed: int) -> torch.Tensor:
    """The fixed b_dec (unscaled) of a frozen variant.  shape: [d_in]"""
    from ..concepts.pairs import load_pairs, split_pairs

    if p.variant == "bdec_mean_frozen":
        return sample.double().mean(0)
    wa = ctx.word_acts["family"]
    train, _ = split_pairs(load_pairs("family"), seed=pair_seed)
    male = wa.acts[wa.index([a for a, _ in train])].double().reshape(-1, wa.acts.shape[-1])
    female = wa.acts[wa.index([b for _, b in train])].double().reshape(-1, wa.acts.shape[-1])
    return (male.mean(0) + female.mean(0)) / 2


def train_point(cfg: SweepConfig, p: Point, ctx: LayerContext, d_in: int, root=None, progress: bool = True):
    """Train (or load) the SAE of ``p``; returns ``(sae, history, directory)``."""
    sae_cfg = SAEConfig(d_in=d_in, d_sae=p.d_sae, activation=p.activation, k=p.k, seed=p.seed,
                        **VARIANT_SAE.get(p.variant, {}))
    kw = _train_kw(cfg, p)
    if p.variant in RECIPE_VARIANTS:  # a rung of the recipe ladder: its config and training options
        sae_cfg, extra = recipe_variant(p.variant, d_in, p.d_sae, p.activation, p.k, p.seed, kw["batch_size"])
        kw |= extra
    start = None if p.variant in RECIPE_VARIANTS or VARIANTS[p.variant] is not None else _frozen_start(cfg, p, ctx, kw)
    return train_or_load(ctx.acts_dir, sae_cfg, root, progress=progress, start=start, **kw)


def _frozen_start(cfg: SweepConfig, p: Point, ctx: LayerContext, kw: dict):
    """A frozen-b_dec variant's start for :func:`~abstopk_mini.runs.store.train_or_load`: the input
    scale from the first 32768 activations, b_dec fixed at the variant's centre (named in the run's key)."""
    from ..lm.shards import load_activations
    from ..train import TrainConfig, init_from_sample

    def start(sae_cfg: SAEConfig, acts_dir):
        sample = load_activations(acts_dir, 32768).double()
        centre = _frozen_centre(p, ctx, sample, cfg.eval["pair_seed"])
        sae = init_from_sample(sae_cfg, sample, TrainConfig(**kw), b_dec=centre)
        sae.b_dec.requires_grad_(False)  # Adam skips a parameter without a gradient
        return sae, kw | {"variant": p.variant, "b_dec": content_key([round(v, 6) for v in centre.tolist()])}

    return start


# ============================================================================ the runner
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(wall_s: float, **first) -> dict:
    """The ``provenance`` of a record: ``first`` (e.g. the SAE's folder), then the package version,
    git commit, torch, threads, machine, ``wall_s`` and the time it was recorded."""
    from .. import __version__

    return {**first, "package_version": __version__, "git_commit": git_commit(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "wall_s": wall_s,
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def record_path(path: str, runs_root=None) -> Path:
    """The folder a record names (``provenance.sae_dir``, ``harvest.dir``), under the runs directory
    (``runs_root``, else ``$ABSTOPK_RUNS``, else ``./runs``); records store paths relative to it."""
    from .store import runs_dir

    p = Path(path)
    return p if p.is_absolute() else runs_dir(runs_root) / p


def _log(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def format_status(name: str, total: int, done: int, todo_left: int, times: list[tuple[Point, float]],
                  remaining: list[Point], current: str) -> str:
    """The status text: runs recorded / total, this process's time per SAE, an ETA.

    ETA: the remaining points' cost, each estimated as seconds per (latent × training token)
    measured on this process's runs, plus the mean evaluation overhead per run.
    """
    lines = [f"sweep {name}: {done}/{total} runs recorded, {todo_left} to go  ({time.strftime('%Y-%m-%d %H:%M:%S')})",
             f"now: {current}"]
    if times:
        per = sum(s for _, s in times) / sum(p.d_sae * p.train_tokens for p, _ in times)
        eta = sum(per * p.d_sae * p.train_tokens for p in remaining)
        lines.append(f"measured (this process, {len(times)} runs, train+eval): "
                     + ", ".join(f"{p.activation} {p.d_sae} k{p.k} L{p.layer}: {s / 60:.1f} min" for p, s in times[-6:]))
        lines.append(f"ETA for the rest: {eta / 3600:.1f} h (~{time.strftime('%a %H:%M', time.localtime(time.time() + eta))})")
    return "\n".join(lines) + "\n"


def run_sweep(config, *, runs_root=None, status_path=None, results_path=None, loaded=None, progress: bool = True,
              dry_run: bool = False, max_runs: int | None = None) -> dict:
    """Run every point of ``config`` that is not in its results file yet (see the module docstring).

    config: a :class:`SweepConfig`, a dict or a JSON path. results_path overrides the config's.
    status_path: a text file rewritten after every step (runs done / total, ETA).
    loaded: the model, if already loaded (else loaded once, only when something is to run).
    dry_run: only return the plan. max_runs: stop after this many new records.
    Returns ``{"results", "total", "done_before", "ran": [keys], "todo": [labels]}``.
    """
    from ..lm import splice
    from ..lm.models import load_model

    if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1):
        raise ValueError(f"max_runs must be None (every point) or an int >= 1; got {max_runs!r} (CLI: --max-runs)")
    cfg = config if isinstance(config, SweepConfig) else load_config(config)
    if results_path is not None:
        cfg = dataclasses.replace(cfg, results=str(Path(results_path).resolve()))
    pl = plan(cfg)
    # max_runs counts new records, not planned points: a point another worker has claimed is skipped
    # without using up the count, so two workers on one config with --max-runs 1 train two SAEs
    todo = pl["todo"]
    summary = {"results": str(cfg.results_path), "total": pl["total"], "done_before": pl["done"], "ran": [],
               "todo": [p.label() for _, p, _ in todo]}
    status = Path(status_path) if status_path else None
    times: list[tuple[Point, float]] = []

    def write_status(current: str, left: list) -> None:
        if status is not None:
            text = format_status(cfg.name, pl["total"], pl["done"] + len(summary["ran"]), len(left), times,
                                 [p for _, p, _ in left], current)
            atomic_write(status, lambda tmp: Path(tmp).write_text(text))

    if dry_run or not todo:
        write_status("nothing to do" if not todo else "dry run", todo)
        return summary
    write_status("loading the model", todo)
    loaded = loaded if loaded is not None else load_model(cfg.model)
    d_in = loaded.info.d_model
    contexts: dict[int, LayerContext] = {}
    heldout_texts = None
    claims: list[Claim] = []
    left = list(todo)
    while left and (max_runs is None or len(summary["ran"]) < max_runs):
        layer = left[0][1].layer
        block = []  # consecutive runs of one layer, in plan order
        for r in left:
            if r[1].layer != layer or len(block) == cfg.block_size:
                break
            block.append(r)
        if layer not in contexts:
            write_status(f"layer {layer}: harvest / held-out / concept activations", left)
            contexts = {layer: layer_context(cfg, loaded, layer, runs_root, progress)}  # one layer in memory
        ctx = contexts[layer]
        trained = []
        for stage, p, key in block:
            if max_runs is not None and len(summary["ran"]) + len(trained) >= max_runs:
                break
            claim = Claim(runs_dir(runs_root) / "claims" / f"{key}.lock")
            if not claim.take():  # another worker on this config has it
                _log(f"skip {p.label()}: another process is running it")
                continue
            if key in {r.get("key") for r in read_results(cfg.results_path)}:  # recorded since the plan was made
                claim.release()
                continue
            claims.append(claim)
            write_status(f"training {p.label()} (stage {stage})", left)
            _log(f"train {p.label()}")
            t = time.perf_counter()
            sae, hist, path = train_point(cfg, p, ctx, d_in, runs_root, progress)
            rec = evaluate_point(sae, hist, loaded, ctx, cfg.eval["pair_seed"], cfg.eval, path)
            trained.append((stage, p, key, sae.to("cpu").eval(), path, rec, time.perf_counter() - t))
        spliced = [t for t in trained if cfg.eval["splice_tokens"] and t[0] in cfg.eval.get("splice_stages", [t[0]])]
        if spliced:
            write_status(f"layer {layer}: loss recovered for {len(spliced)} SAEs", left)
            _log(f"splice {len(spliced)} SAEs of layer {layer} on {cfg.eval['splice_tokens']} predictions")
            if heldout_texts is None:
                heldout_texts = offline_texts(cfg.harvest.get("sources", HarvestSpec.sources), "heldout")
            t = time.perf_counter()
            to_splice = {key: sae for _, _, key, sae, *_ in spliced}
            if cfg.eval.get("splice_snapshots"):  # every snapshot too, on the same predictions
                from .store import load_snapshots

                for _, _, key, _, path, *_ in spliced:
                    to_splice |= {f"{key}@{step}": snap for step, _, snap in load_snapshots(path)}
            res = splice.evaluate_many(loaded, to_splice, heldout_texts, layer,
                                       context_length=cfg.harvest.get("context_length", 128),
                                       max_tokens=cfg.eval["splice_tokens"])
            share = (time.perf_counter() - t) / len(spliced)
        for stage, p, key, sae, path, rec, wall in trained:
            if any(t[2] == key for t in spliced):
                rec["splice"] = {k: v for k, v in res[key].to_dict().items() if k not in ("layer",)}
                for snap in rec.get("snapshots", []):
                    if f"{key}@{snap['step']}" in res:
                        snap["splice"] = {k: v for k, v in res[f"{key}@{snap['step']}"].to_dict().items() if k not in ("layer",)}
                wall += share
            record = {
                "schema": SCHEMA, "key": key, "sweep": cfg.name, "stage": stage, **dataclasses.asdict(p),
                "model": cfg.model, "harvest": cfg.harvest_spec(p.layer).identity() | {"dir": relative_to_runs(ctx.acts_dir, runs_root)},
                "batch_size": p.batch_size or cfg.batch_size, "eval_settings": cfg.eval, **rec,
                "provenance": provenance(wall, sae_dir=relative_to_runs(path, runs_root), sae_key=path.name.rsplit("-", 1)[-1]),
            }
            append_record(cfg.results_path, compact(record))
            summary["ran"].append(key)
            times.append((p, wall))
            _log(f"recorded {p.label()}: FVU {rec['heldout']['fvu']:.4f}, wall {wall / 60:.1f} min")
        for claim in claims:
            claim.release()
        claims.clear()
        left = [r for r in left if r not in block]  # recorded here, or by the worker that claimed it
        write_status("idle" if not left else "next block", left)
    write_status("finished", [])
    return summary


def background_argv(args) -> list[str]:
    """The command line of the detached process of ``sweep --background``: every flag of ``args``
    but ``--background`` itself, so the child does what the parent was asked (``--dry-run``
    included)."""
    argv = ["sweep", "--config", args.config]
    for flag, value in (("--results", args.results), ("--status", args.status), ("--threads", args.threads),
                        ("--max-runs", args.max_runs), ("--runs-dir", args.runs_dir)):
        argv += [flag, str(value)] if value is not None else []
    for flag, on in (("--dry-run", args.dry_run), ("--json", args.json), ("--debug", getattr(args, "debug", False))):
        argv += [flag] if on else []
    return argv


def check_cli_args(args) -> None:
    """The sweep's flags, before the config is read or anything runs (ValueError naming the flag)."""
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1 (torch threads for training); got {args.threads}. "
                         "Leave it out to use torch's default")
    if args.max_runs is not None and args.max_runs < 1:
        raise ValueError(f"--max-runs must be >= 1 (new records to make before stopping); got {args.max_runs}. "
                         "Leave it out to run every point, or pass --dry-run to only list them")


def run_cli(args, emit) -> int:
    """``python -m abstopk_mini sweep`` (its flags: :class:`abstopk_mini.runs.jobs_report.SweepJob`)."""
    check_cli_args(args)
    cfg = load_config(args.config)  # a bad config fails here, not in the background
    if args.background:
        with open(args.background, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "abstopk_mini", *background_argv(args)], stdout=log,
                                    stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())
        emit(args, {"command": "sweep", "background": True, "pid": proc.pid, "log": args.background, "status": args.status,
                    "dry_run": args.dry_run},
             f"sweep {cfg.name} running in the background: pid {proc.pid}, log {args.background}")
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = run_sweep(cfg, runs_root=args.runs_dir, status_path=args.status, results_path=args.results,
                    dry_run=args.dry_run, max_runs=args.max_runs)
    text = (f"sweep {cfg.name}: {out['done_before']}/{out['total']} recorded before, {len(out['ran'])} run now, "
            f"{len(out['todo']) - len(out['ran'])} left -> {out['results']}")
    emit(args, {"command": "sweep", **out}, text)
    return 0
