"""The jobs that read one SAE with its model: ``eval``, ``concepts`` and ``steer``.

Each job is a config dataclass (every field documented: the docstring under it, which is also its
command-line help) and a ``run_*(cfg)`` that checks its inputs before the model loads
(:mod:`abstopk_mini.runs.inputs`) and returns the job's JSON result.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

from ..concepts.natural import run_natural
from ..strict_json import nulls_for_nonfinite
from .inputs import check_finite, check_positive, check_runs_dir, load_checked_model, reading_harvest, sae_inputs

__all__ = ["EvalJob", "run_eval", "ConceptsJob", "run_concepts", "SteerJob", "run_steer", "with_nulls", "NULL_NOTE"]

_NATURAL = inspect.signature(run_natural).parameters  # the natural test's defaults live in its function
#: how a note of :func:`with_nulls` ends
NULL_NOTE = " is null: it is not a finite number (a ratio whose denominator is 0, or a metric of constant data)"


def with_nulls(result: dict) -> dict:
    """``result`` for JSON: a non-finite number (e.g. loss recovered when the ablation's CE equals the
    clean CE, a ratio over constant data) becomes null, and ``notes`` says which and why."""
    result, nulls = nulls_for_nonfinite(result)
    notes = [where + NULL_NOTE for where in nulls]
    result["notes"] = list(result.get("notes") or []) + notes
    return result


# ----------------------------------------------------------------------------- eval
@dataclass
class EvalJob:
    """FVU, L0, dead latents and CE / KL / loss recovered of an SAE spliced into its model, on held-out text."""

    sae: str
    """SAE: a shipped SAE's name (e.g. gemma-3-270m-L6-abstopk-4096-k32) or folder (pretrained/<name>), an SAE
    directory (train --out, runs/saes/...) or a SAELens directory."""
    model: str | None = None
    """The model; None: the model the SAE was trained on."""
    layer: int | None = None
    """The block the SAE reads; None: the SAE's hook layer."""
    tokens: int = 4096
    """Held-out predictions scored with the SAE spliced in."""
    acts_tokens: int = 20_000
    """Held-out activations for FVU, L0, dead latents and signs."""
    runs_dir: str | None = None
    """Artifact root; None: $ABSTOPK_RUNS or ./runs."""


def run_eval(cfg: EvalJob) -> dict:
    from ..evaluate import evaluate_sae
    from ..lm import splice
    from ..lm.compat import check_inputs
    from ..lm.shards import load_activations
    from .store import HarvestSpec, harvest_spec, offline_texts

    check_positive(cfg.tokens, "--tokens")
    check_positive(cfg.acts_tokens, "--acts-tokens")
    check_runs_dir(cfg.runs_dir)
    inputs = sae_inputs(cfg, require_layer=True)
    sae, layer = inputs.sae, inputs.layer
    loaded = load_checked_model(inputs)
    spec = HarvestSpec(inputs.model, layer, cfg.acts_tokens, sae.cfg.context_size or 128, split="heldout",
                       chunk_offsets=(0,))
    out = harvest_spec(spec, cfg.runs_dir, loaded=loaded)
    with reading_harvest(out):  # a `harvest --overwrite` of it waits until it is read
        check_inputs(sae, out, loaded, layer, names=inputs.names | {"harvest": f"the held-out harvest {str(out)!r}"})
        held = load_activations(out)
    result = {"sae": cfg.sae, "layer": layer, **evaluate_sae(sae.cpu().eval(), held)}
    res = splice.evaluate(loaded, sae, offline_texts(split="heldout"), layer, max_tokens=cfg.tokens)
    result.update({f"splice_{k}": v for k, v in res.to_dict().items()})
    return with_nulls(result)


# ----------------------------------------------------------------------------- concepts
@dataclass
class ConceptsJob:
    """Does one latent separate a concept's two sides by its sign? Against Difference-in-Means; plus gender
    words in held-out natural text and the all-latent sign scan."""

    sae: str
    """SAE: a shipped SAE's name or folder, an SAE directory or a SAELens directory (see eval --help)."""
    pairs: str = "family"
    """The concept's pairs: family, opposite, or a file of 'a b' lines (the training pairs)."""
    test_pairs: str | None = None
    """A file of 'a b' lines to test on; None: a seeded split of --pairs."""
    templates: str | None = None
    """A file with one template per line, '{}' marking the word; None: the built-in templates."""
    layer: int | None = None
    """The block the SAE reads; None: the SAE's hook layer."""
    model: str | None = None
    """The model; None: the model the SAE was trained on."""
    mismatch: Literal["keep", "drop", "raise"] = "keep"
    """Pairs whose word merges with the template text: keep (reported), drop or raise."""
    acts: str | None = None
    """A harvest directory: adds the share of bidirectional latents on 20k of its tokens."""
    natural_tokens: int = _NATURAL["max_tokens"].default
    """Held-out text tokens scanned for gender words (the 'natural' and 'scan' sections; 0 disables). Only chunks
    holding a word run through the model; the offline held-out split is ~77k Gemma tokens with ~225 occurrences."""
    natural_per_word: int = _NATURAL["max_per_word"].default
    """Occurrences read per word at most."""
    natural_sources: tuple[str, ...] = ("wiki", "lee", "newsgroups")
    """Text sources for the natural test (held-out split; the train split is counted): wiki, lee, newsgroups or
    hf:<dataset>."""
    natural_choose_on: Literal["train-text", "split"] = "train-text"
    """Choose the latent on gender-word occurrences in the training split of the sources and test on every held-out
    one (train-text), or split the held-out occurrences by document (split)."""
    scan_top: int = _NATURAL["n_top"].default
    """Latents listed in the 'scan' section."""
    seed: int = 0
    """Seed of the pairs' split and of the natural test's split."""


def _natural_texts(sources: tuple[str, ...]):
    """(train, held-out) documents of ``sources``; local sources are read once."""
    from ..lm import corpus
    from .store import offline_texts

    if not any(s.startswith("hf:") for s in sources):
        return corpus.train_heldout_split(corpus.load_docs(sources))
    return offline_texts(sources, "train"), offline_texts(sources, "heldout")


def _check_concepts(cfg: ConceptsJob):
    """The pairs, the split, the templates and the natural-test settings, before the model loads;
    returns the templates (None: the built-in ones)."""
    from pathlib import Path

    from ..concepts.pairs import check_templates, load_pairs, split_pairs
    from ..lm.corpus import SOURCES

    if cfg.natural_tokens < 0:
        raise ValueError(f"--natural-tokens must be >= 0 (0 disables the natural test); got {cfg.natural_tokens}")
    check_positive(cfg.natural_per_word, "--natural-per-word")
    check_positive(cfg.scan_top, "--scan-top")
    bad = [s for s in cfg.natural_sources if s not in SOURCES and not s.startswith("hf:")]
    if bad:
        raise ValueError(f"--natural-sources {','.join(cfg.natural_sources)!r}: unknown {bad}; choose from {SOURCES} "
                         "or hf:<dataset>")
    pairs = load_pairs(cfg.pairs)
    if cfg.test_pairs is not None:
        load_pairs(cfg.test_pairs)
    else:
        split_pairs(pairs, seed=cfg.seed)
    if not cfg.templates:
        return None
    if not Path(cfg.templates).is_file():
        raise FileNotFoundError(f"--templates {cfg.templates!r} is not a file")
    templates = [line.rstrip("\n") for line in Path(cfg.templates).read_text().splitlines() if line.strip()]
    check_templates(templates)
    return templates


def run_concepts(cfg: ConceptsJob) -> dict:
    from ..concepts.words import run_concepts as concept_report
    from ..lm.compat import check_inputs

    templates = _check_concepts(cfg)
    inputs = sae_inputs(cfg, acts=cfg.acts, require_layer=True)
    sae, layer = inputs.sae, inputs.layer
    loaded = load_checked_model(inputs, cfg.acts)
    token_acts = None
    if cfg.acts:
        from ..lm.shards import load_activations

        with reading_harvest(cfg.acts):  # a `harvest --overwrite` of it waits until it is read
            check_inputs(sae, cfg.acts, loaded, layer, names=inputs.names)
            token_acts = load_activations(cfg.acts, 20_000)
    report = concept_report(sae, loaded, cfg.pairs, test_pairs=cfg.test_pairs, layer=layer, templates=templates,
                            seed=cfg.seed, mismatch=cfg.mismatch, token_acts=token_acts)
    report = {**report, "natural": None, "scan": None}
    if cfg.natural_tokens > 0:
        train_texts, heldout = _natural_texts(cfg.natural_sources)
        template_words = [w for p in report["train_pairs"] + report["test_pairs"] for w in p]
        out = run_natural(sae, loaded, heldout, train_texts=train_texts, count_also=template_words, layer=layer,
                          max_tokens=cfg.natural_tokens, max_per_word=cfg.natural_per_word, seed=cfg.seed,
                          n_top=cfg.scan_top, choose_on=cfg.natural_choose_on.replace("-", "_"))
        report.update(natural={"sources": list(cfg.natural_sources), **out["natural"]}, scan=out["scan"])
    return with_nulls(report)


# ----------------------------------------------------------------------------- steer
@dataclass
class SteerJob:
    """Clamp one latent from negative to positive values: the female-vs-male next-token log-odds."""

    sae: str
    """SAE: a shipped SAE's name or folder, an SAE directory or a SAELens directory (see eval --help)."""
    latent: int
    """The latent to clamp."""
    values: tuple[float, ...] = (-20.0, -10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
    """Clamp values c (--values -5,5 and --values=-5,5 both work)."""
    model: str | None = None
    """The model; None: the model the SAE was trained on."""
    layer: int | None = None
    """The block the SAE reads; None: the SAE's hook layer."""
    prompt: str | None = None
    """Also generate a continuation of this prompt at the smallest and largest c."""


def run_steer(cfg: SteerJob) -> dict:
    from ..lm import steering

    values = check_finite(cfg.values, "--values")

    def check(sae):
        if not 0 <= cfg.latent < sae.cfg.d_sae:
            raise ValueError(f"--latent must satisfy 0 <= latent < d_sae = {sae.cfg.d_sae}; got {cfg.latent}")

    inputs = sae_inputs(cfg, require_layer=True, check=check)
    sae, layer = inputs.sae, inputs.layer
    loaded = load_checked_model(inputs)
    if cfg.prompt is not None:  # before the curve: a prompt longer than the model's context is refused now
        steering.check_prompt(loaded, cfg.prompt, name="--prompt")
    curve = steering.logit_diff_curve(loaded, lambda c: steering.clamp_latent(sae, cfg.latent, c, layer), values)
    result = {"sae": cfg.sae, "latent": cfg.latent, "layer": layer, **curve.to_dict()}
    broken = set(curve.nonfinite_values())
    if cfg.prompt is not None:
        result["generations"] = {}
        for c in (min(values), max(values)):
            if c in broken:
                result["generations"][str(c)] = None
                result["notes"].append(f"no generation at c = {c:g}: the model's logits are not finite there")
            else:
                result["generations"][str(c)] = steering.generate_with(
                    loaded, cfg.prompt, steering.clamp_latent(sae, cfg.latent, c, layer))
    return result
