"""The sweep's configuration: its points, stages and JSON config file (:func:`load_config`).

A **point** (:class:`Point`) is one SAE: ``(layer, d_sae, k, activation, seed, variant,
train_tokens)``; a **stage** (:class:`Stage`) is the product of its axes; a :class:`SweepConfig`
names the model, the harvest, the evaluation and the ordered stages, and gives each point its
record key (:meth:`SweepConfig.point_key`). Running them: :mod:`abstopk_mini.runs.sweep`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..concepts.swap import text_augmentation
from ..limits import SEED_MAX
from .store import HarvestSpec, content_key

__all__ = ["SCHEMA", "CONCEPTS", "VARIANTS", "VARIANT_SAE", "RECIPE_VARIANTS", "recipe_variant", "OPTIONAL_EVAL", "Point", "Stage", "SweepConfig", "load_config"]

SCHEMA = "abstopk_mini.sweep/1"  # written into every record and hash key: a format id, not a module path
CONCEPTS = ("family", "opposite", "sentiment")
#: variant -> extra training keywords (``None``: b_dec frozen at a centre, see the module docstring)
VARIANTS = {
    "default": {},
    "bdec_mean": {"b_dec_init": "mean"},
    "bdec_zeros": {"b_dec_init": "zeros"},
    # our recipe as it was before the gradient was clipped by default: the recipe of the shipped
    # 10,938-step pair (results/steps_vs_tokens.jsonl), for retraining its other seeds alike
    "unclipped": {"grad_clip": None},
    "bdec_gender_mid_frozen": None,
    "bdec_mean_frozen": None,
    "bdec_gender_mid_frozen_no_b_enc": None,
}
#: variant -> SAEConfig fields it changes (besides its training keywords)
VARIANT_SAE = {"bdec_gender_mid_frozen_no_b_enc": {"use_b_enc": False}}
#: the recipe ladder (issue 14): variants that switch on one choice of the paper's recipe
#: (:data:`abstopk_mini.recipes.RECIPES` ``["paper"]``) over ours, or all of them (``paper_all``, at the
#: point's width, k and batch). ``sae``: SAEConfig fields; ``train``: TrainConfig fields; ``batch``:
#: topk/abstopk become batchtopk/batchabstopk; ``dead_batches``: dead after this many batches
#: without firing; ``enc_init_gain``: W_enc = sqrt(gain·d_in/d_sae)·W_decᵀ. Standardising each token
#: replaces our input scale, so ``paper_unit_norm`` also turns ``normalize_input`` off, as the paper's recipe does.
#: ``paper_batch_unit_norm`` switches on batch-level selection and per-token standardisation together.
RECIPE_VARIANTS = {
    "paper_no_b_enc": {"sae": {"use_b_enc": False}},
    "paper_unit_norm": {"sae": {"input_unit_norm": True}, "train": {"normalize_input": False}},
    "paper_batch_select": {"batch": True},
    "paper_b_dec_zeros": {"train": {"b_dec_init": "zeros"}},
    "paper_adam": {"train": {"lr": 3e-4, "adam_betas": (0.9, 0.99), "adam_eps": 1e-8, "lr_schedule": "constant",
                             "grad_clip": None}},
    "paper_auxk": {"train": {"aux_k": 512}, "dead_batches": 5},
    "paper_enc_init": {"enc_init_gain": 2.0},
    "paper_all": {"recipe": "paper"},
    # two choices at once (not a rung): does standardising each token, which evens out the token
    # norms that batch-level selection ranks by, remove BatchAbsTopK's deficit? (chapter 10, §10.5)
    "paper_batch_unit_norm": {"batch": True, "sae": {"input_unit_norm": True}, "train": {"normalize_input": False}},
    # the paper's AuxK split in its two parts (not rungs): which of them leaves AbsTopK's latents
    # dead (chapter 10, §10.6)? Its window alone (dead after 5 batches) or its 512 auxiliary latents alone.
    "paper_dead_window": {"dead_batches": 5},
    "paper_aux_k": {"train": {"aux_k": 512}},
    # a causal test of why the window leaves AbsTopK's latents dead (chapter 10, §10.6): the window
    # alone, with AuxK scoring dead latents by ReLU(u) as for TopK (TrainConfig.aux_sign="positive"),
    # so a signed SAE's dead latent can leave AuxK by turning negative instead of only by shrinking
    "paper_dead_window_positive_aux": {"dead_batches": 5, "train": {"aux_sign": "positive"}},
}
_AXES = {"layers": "layer", "widths": "d_sae", "ks": "k", "activations": "activation", "seeds": "seed",
         "variants": "variant", "train_tokens": "train_tokens", "batch_sizes": "batch_size"}
#: Point fields added after the first records were written: left out of a point's key at these
#: defaults, so the records of older configs keep their keys
_NEW_POINT_FIELDS = {"batch_size": None, "snapshot_steps": ()}
#: optional eval settings (absent: not measured, and not part of any key):
#: test_ks — k values at which a top-k SAE's final weights are re-encoded at test time (FVU per k);
#: inference_batch — batch-level SAEs are also evaluated selecting the top k·B over blocks of B tokens;
#: splice_snapshots — loss recovered for every snapshot too (not only the final SAE);
#: splice_stages — the stages whose SAEs get loss recovered (absent: all; it costs a forward per SAE)
OPTIONAL_EVAL = ("test_ks", "inference_batch", "splice_snapshots", "splice_stages")


def recipe_variant(name: str, d_in: int, d_sae: int, activation: str, k: int, seed: int, batch_size: int):
    """``(SAEConfig, train keywords)`` of the ladder variant ``name`` (:data:`RECIPE_VARIANTS`)."""
    import math

    from ..recipes import RECIPES, recipe_configs
    from ..sae import SAEConfig

    v = RECIPE_VARIANTS[name]
    if "recipe" in v:
        return recipe_configs(v["recipe"], d_in, activation, d_sae=d_sae, k=k, batch_size=batch_size, seed=seed)
    paper = RECIPES["paper"]
    act = paper.activations.get(activation, activation) if v.get("batch") else activation
    sae = dict(v.get("sae", {}))
    if "enc_init_gain" in v:
        sae["enc_init_scale"] = math.sqrt(v["enc_init_gain"] * d_in / d_sae)
    train = dict(v.get("train", {}))
    if "dead_batches" in v:
        train["dead_tokens"] = v["dead_batches"] * batch_size
    return SAEConfig(d_in=d_in, d_sae=d_sae, activation=act, k=k, seed=seed, **sae), train


@dataclass(frozen=True)
class Point:
    """One SAE of the sweep."""

    layer: int
    d_sae: int
    k: int
    activation: str
    seed: int = 0
    variant: str = "default"
    train_tokens: int = 1_200_000
    batch_size: int | None = None  # None: the config's batch_size
    snapshot_steps: tuple[int, ...] = ()  # steps at which the SAE is saved and evaluated along the way

    def label(self) -> str:
        v = "" if self.variant == "default" else f" {self.variant}"
        b = "" if self.batch_size is None else f" batch={self.batch_size}"
        return (f"L{self.layer} {self.activation} d_sae={self.d_sae} k={self.k} seed={self.seed} "
                f"tokens={self.train_tokens:,}{b}{v}")

    def identity(self) -> dict:
        """The fields that name this point in its record key (new fields only when set)."""
        d = dataclasses.asdict(self)
        for name, default in _NEW_POINT_FIELDS.items():
            if d[name] == default or d[name] == list(default or []):
                del d[name]
        if "snapshot_steps" in d:
            d["snapshot_steps"] = list(d["snapshot_steps"])
        return d


@dataclass
class Stage:
    """A product of axes (see the module docstring for the order of its points)."""

    name: str
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    ks: tuple[int, ...]
    activations: tuple[str, ...] = ("topk", "abstopk")
    seeds: tuple[int, ...] = (0,)
    variants: tuple[str, ...] = ("default",)
    train_tokens: tuple[int, ...] = (1_200_000,)
    batch_sizes: tuple[int | None, ...] = (None,)  # None: the config's batch_size
    snapshot_steps: tuple[int, ...] = ()  # the same for every point of the stage (those < its step count)

    def points(self) -> list[Point]:
        out = []
        for seed, tokens, batch, variant, k, layer, width, act in itertools.product(
                self.seeds, self.train_tokens, self.batch_sizes, self.variants, self.ks, self.layers, self.widths,
                self.activations):
            if k <= width:
                n_steps = tokens // batch if batch else None
                snaps = tuple(s for s in self.snapshot_steps if n_steps is None or s < n_steps)
                out.append(Point(layer, width, k, act, seed, variant, tokens, batch, snaps))
        return out


@dataclass
class SweepConfig:
    """A sweep: one model, one harvest recipe per layer, one evaluation, ordered stages.

    results: the JSONL file records are appended to (relative paths are relative to the config
    file's folder). harvest: :class:`~abstopk_mini.runs.store.HarvestSpec` fields other than model,
    layer and split. eval: ``heldout_tokens`` (held-out activations for FVU, L0, dead, signs),
    ``splice_tokens`` (held-out predictions for loss recovered; 0 skips it), ``pair_seed`` (the
    train/test split of the concept pairs, the same for every SAE), ``concepts``.
    block_size: SAEs of one layer trained before their shared splice evaluation.
    """

    name: str
    results: str
    stages: list[Stage]
    model: str = "gemma-3-270m"
    harvest: dict = field(default_factory=lambda: {"n_tokens": 1_200_000, "context_length": 128,
                                                   "chunk_offsets": (0, 64)})
    eval: dict = field(default_factory=lambda: {"heldout_tokens": 50_000, "splice_tokens": 2048, "pair_seed": 0,
                                                "concepts": CONCEPTS})
    batch_size: int = 4096
    block_size: int = 10
    base_dir: str = "."

    @property
    def results_path(self) -> Path:
        p = Path(self.results)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def harvest_spec(self, layer: int, split: str = "train") -> HarvestSpec:
        spec = HarvestSpec(model=self.model, layer=layer, **self.harvest)
        return spec.heldout(self.eval["heldout_tokens"]) if split == "heldout" else spec

    def points(self) -> list[tuple[str, Point]]:
        """Every (stage name, point) in run order; a point in two stages is kept at its first."""
        seen, out = set(), []
        for stage in self.stages:
            for p in stage.points():
                if p not in seen:
                    seen.add(p)
                    out.append((stage.name, p))
        return out

    def check_stages(self, stages) -> None:
        """ValueError naming the fix unless ``stages`` is a non-empty list of this config's stage names."""
        names = {st.name for st in self.stages}
        bad = [s for s in stages if s not in names]
        if not stages or bad:
            raise ValueError(f"stages={list(stages)}: {bad or 'none given'} not in the config's stages {sorted(names)}")

    def point_key(self, p: Point) -> str:
        """Hash of everything that determines the record of ``p``."""
        return content_key({"schema": SCHEMA, "point": p.identity(), "harvest": self.harvest_spec(p.layer).identity(),
                            "batch_size": self.batch_size, "eval": self.eval})


def _fail(where: str, value, fix: str):
    raise ValueError(f"{where} = {value!r}: {fix}")


def _int_list(where: str, values, minimum: int = 1, maximum: int | None = None) -> tuple[int, ...]:
    """``values`` as a tuple of ints in [minimum, maximum] (ValueError naming ``where`` otherwise)."""
    if not isinstance(values, (list, tuple)) or not values:
        _fail(where, values, "must be a non-empty list of ints")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v > maximum):
            within = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            _fail(where, values, f"every value must be an int {within}; {v!r} is not")
    return tuple(values)


def _check_stage(i: int, raw: dict) -> Stage:
    from ..nonlinearities import SPECS

    where = f"stages[{i}]"
    if not isinstance(raw, dict):
        _fail(where, raw, "each stage must be an object with name, layers, widths, ks, ...")
    allowed = {"name", "snapshot_steps"} | set(_AXES)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        _fail(f"{where} key {unknown[0]!r}", raw[unknown[0]], f"unknown key; a stage takes {sorted(allowed)}")
    for need in ("name", "layers", "widths", "ks"):
        if need not in raw:
            raise ValueError(f"{where} has no {need!r}; a stage needs name, layers, widths and ks")
    kw = {"name": str(raw["name"])}
    kw["layers"] = _int_list(f"{where}.layers", raw["layers"], minimum=0)
    kw["widths"] = _int_list(f"{where}.widths", raw["widths"])
    kw["ks"] = _int_list(f"{where}.ks", raw["ks"])
    if "seeds" in raw:
        kw["seeds"] = _int_list(f"{where}.seeds", raw["seeds"], minimum=0, maximum=SEED_MAX)
    if "train_tokens" in raw:
        kw["train_tokens"] = _int_list(f"{where}.train_tokens", raw["train_tokens"])
    if "batch_sizes" in raw:
        kw["batch_sizes"] = _int_list(f"{where}.batch_sizes", raw["batch_sizes"])
    if "snapshot_steps" in raw:
        kw["snapshot_steps"] = tuple(sorted(set(_int_list(f"{where}.snapshot_steps", raw["snapshot_steps"]))))
    for name, choices in (("activations", SPECS), ("variants", VARIANTS | RECIPE_VARIANTS)):
        if name in raw:
            values = raw[name]
            if not isinstance(values, (list, tuple)) or not values:
                _fail(f"{where}.{name}", values, "must be a non-empty list of names")
            for v in values:
                if v not in choices:
                    _fail(f"{where}.{name}", values, f"{v!r} is not one of {sorted(choices)}")
            kw[name] = tuple(values)
    too_big = [k for k in kw["ks"] if k > max(kw["widths"])]
    if too_big:
        _fail(f"{where}.ks", list(kw["ks"]), f"k={too_big[0]} exceeds every width {list(kw['widths'])}; use k <= d_sae")
    return Stage(**kw)


def load_config(source) -> SweepConfig:
    """A :class:`SweepConfig` from a JSON file path or a dict; ValueError names a bad key or value."""
    base = "."
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config={str(path)!r} is not a file; pass a JSON sweep config such as sweeps/gemma.json")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"config={str(path)!r} is not valid JSON ({err})") from err
        base = str(path.parent)
    elif isinstance(source, dict):
        raw = dict(source)
    else:
        raise TypeError(f"config must be a path or a dict; got {type(source).__name__}")
    allowed = {f.name for f in dataclasses.fields(SweepConfig)} - {"base_dir"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        _fail(f"config key {unknown[0]!r}", raw[unknown[0]], f"unknown key; a sweep config takes {sorted(allowed)}")
    for need in ("name", "results", "stages"):
        if need not in raw:
            raise ValueError(f"config has no {need!r}; a sweep config needs name, results and stages")
    if not isinstance(raw["stages"], list) or not raw["stages"]:
        _fail("stages", raw["stages"], "must be a non-empty list of stage objects")
    defaults = SweepConfig(name="", results="", stages=[])
    harvest = dict(defaults.harvest) | dict(raw.get("harvest", {}))
    hkeys = {f.name for f in dataclasses.fields(HarvestSpec)} - {"model", "layer", "split"}
    bad = sorted(set(harvest) - hkeys)
    if bad:
        _fail(f"harvest key {bad[0]!r}", harvest[bad[0]], f"unknown; harvest takes {sorted(hkeys)}")
    for key in ("chunk_offsets", "sources"):
        if key in harvest:
            harvest[key] = tuple(harvest[key])
    ev = dict(defaults.eval) | dict(raw.get("eval", {}))
    bad = sorted(set(ev) - set(defaults.eval) - set(OPTIONAL_EVAL))
    if bad:
        _fail(f"eval key {bad[0]!r}", ev[bad[0]], f"unknown; eval takes {sorted(defaults.eval) + list(OPTIONAL_EVAL)}")
    if "test_ks" in ev:
        ev["test_ks"] = _int_list("eval.test_ks", ev["test_ks"])
    if "splice_snapshots" in ev and not isinstance(ev["splice_snapshots"], bool):
        _fail("eval.splice_snapshots", ev["splice_snapshots"], "must be true or false")
    if "inference_batch" in ev:
        _int_list("eval.inference_batch", [ev["inference_batch"]])
    _int_list("eval.heldout_tokens", [ev["heldout_tokens"]])
    _int_list("eval.splice_tokens", [ev["splice_tokens"]], minimum=0)
    _int_list("eval.pair_seed", [ev["pair_seed"]], minimum=0, maximum=SEED_MAX)
    ev["concepts"] = tuple(ev["concepts"])
    for c in ev["concepts"]:
        if c not in CONCEPTS:
            _fail("eval.concepts", list(ev["concepts"]), f"{c!r} is not one of {list(CONCEPTS)}")
    for key in ("batch_size", "block_size"):
        if key in raw:
            _int_list(key, [raw[key]])
    stages = [_check_stage(i, s) for i, s in enumerate(raw["stages"])]
    if "splice_stages" in ev:
        names = [st.name for st in stages]
        if not isinstance(ev["splice_stages"], list) or any(v not in names for v in ev["splice_stages"]):
            _fail("eval.splice_stages", ev["splice_stages"], f"must be a list of stage names from {names}")
    cfg = SweepConfig(name=str(raw["name"]), results=str(raw["results"]),
                      stages=stages,
                      model=str(raw.get("model", defaults.model)), harvest=harvest, eval=ev,
                      batch_size=raw.get("batch_size", defaults.batch_size),
                      block_size=raw.get("block_size", defaults.block_size), base_dir=base)
    spec = HarvestSpec(model=cfg.model, **cfg.harvest)  # its own checks (split, dtype)
    text_augmentation(spec.augment)  # a known augmentation, before any model is loaded
    return cfg
