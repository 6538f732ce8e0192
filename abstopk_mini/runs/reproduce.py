"""``python -m abstopk_mini reproduce``: the paper's comparison on the embedded model, end to end.

1. **Harvest** the residual stream after block L of the model on the offline training text
   (:class:`~abstopk_mini.runs.store.HarvestSpec`; two chunk offsets, so the ~590k-token train
   split gives ~1.2M activations), and a small held-out harvest for evaluation.
2. **Train** TopK, AbsTopK, JumpReLU and ReLU at equal width, each at every k in ``ks`` (the ReLU
   and JumpReLU penalties are steered to L0 = k): one curve per activation, not one point each.
3. **Evaluate** each SAE on held-out text (:func:`abstopk_mini.evaluate.evaluate_sae`): FVU, L0,
   dead latents, the share of bidirectional latents, and CE / KL / loss recovered with the SAE spliced into the model.
4. **Concepts**: the gender axis (gensim's family pairs): the best single latent by sign and by
   threshold, the best two-latent rule, against Difference-in-Means.
5. **Steering**: clamp the AbsTopK gender latent from negative to positive and read the
   female-vs-male next-token log-odds; DiM added at matched norm for comparison; a few
   generations.

Everything lands in ``out_dir``: ``report.json``, ``summary.md`` and the PNG figures that the
report layer draws from the report (``figures``: :func:`abstopk_mini.chapters.plots_lm.report_figures`,
which the command line passes; this module computes and writes records, and draws nothing).
Trained SAEs and harvests are content-addressed under ``$ABSTOPK_RUNS`` (``./runs``), so a rerun
reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..evaluate import evaluate_sae
from ..io import atomic_write
from ..nonlinearities import SPECS
from ..sparsity import L0_TOLERANCE, l0_off_target
from ..tables import format_table
from ..train_config import OPTIMISER_RECIPE
from .store import HarvestSpec, harvest_and_train, offline_texts, relative_to_runs
from ..sae import SAE, SAEConfig

__all__ = ["ReproduceConfig", "reproduce", "ChapterSAEs", "chapter_saes", "shipped_name", "shipped_saes", "replace_model",
           "study_config", "study_saes"]


#: the activations swept over ``ReproduceConfig.ks``: the per-row top-k ones (TopK, AbsTopK)
K_SWEEP = tuple(name for name, s in SPECS.items() if s.selection == "row")


@dataclass
class ReproduceConfig:
    """Settings of a reproduce run; ``quick()`` gives a minutes-long smoke version."""

    model: str = "gemma-3-270m"
    """The model: a registry name, a hub id or a local folder."""
    layer: int = 6
    """The residual stream after this block."""
    n_tokens: int = 1_200_000
    """Harvested training activations."""
    context_length: int = 128
    """Tokens per chunk, BOS included."""
    chunk_offsets: tuple[int, ...] = (0, 64)
    """Token offsets at which chunks are cut, one pass over the training text each."""
    d_sae: int = 4096
    """Latents of every SAE."""
    k: int = 32
    """Non-zeros per token of the SAE family (the L0 that ReLU and JumpReLU are steered to)."""
    ks: tuple[int, ...] = (16, 32, 64)
    """The k (the target L0 of ReLU and JumpReLU) at which every activation of the family is also trained: the
    points of each activation's FVU / loss-recovered curve against L0."""
    activations: tuple[str, ...] = ("topk", "abstopk", "jumprelu", "relu")
    """The SAE family trained at k."""
    train_tokens: int | None = None
    """Training tokens per SAE; None: two passes over the harvest."""
    batch_size: int = 4096
    """Tokens per training step."""
    heldout_tokens: int = 50_000
    """Held-out activations for FVU, L0, dead latents and signs."""
    splice_tokens: int = 4096
    """Held-out predictions for CE / KL / loss recovered."""
    pairs: str = "family"
    """The concept pairs of the gender axis: family, opposite, or a file of 'a b' lines."""
    seed: int = 0
    """Seed of the SAEs, the batch order and the pairs' split."""

    @classmethod
    def quick(cls, **kw) -> "ReproduceConfig":
        base = dict(n_tokens=30_000, chunk_offsets=(0,), d_sae=512, k=16, ks=(8, 16), train_tokens=60_000,
                    batch_size=1024, heldout_tokens=4000, splice_tokens=256)
        return cls(**(base | kw))

    @property
    def runs(self) -> list[tuple[str, int]]:
        plan = [(a, self.k) for a in self.activations]
        plan += [(a, k) for k in self.ks for a in self.activations if (a, k) not in plan]
        return plan


def _log(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def reproduce(cfg: ReproduceConfig | None = None, out_dir="reports/reproduce", runs_root=None, progress: bool = True,
              figures: Callable[[dict, Path], list[str]] | None = None) -> dict:
    """Run every step (module docstring) and write the report; returns the report dict.

    figures: ``figures(report, out_dir)`` draws the report's figures into ``out_dir`` and returns
    their file names, which ``summary.md`` links (:func:`abstopk_mini.chapters.plots_lm.report_figures`);
    None: no figures."""
    from ..concepts import words as concepts
    from ..lm import splice
    from ..lm.models import load_model

    cfg = cfg or ReproduceConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings = {}
    loaded = load_model(cfg.model)
    d_in = loaded.info.d_model

    train_tokens = cfg.train_tokens or 2 * cfg.n_tokens
    spec = HarvestSpec(cfg.model, cfg.layer, cfg.n_tokens, cfg.context_length, chunk_offsets=cfg.chunk_offsets)
    cfgs = {f"{a}-k{k}": SAEConfig(d_in=d_in, d_sae=cfg.d_sae, activation=a, k=k, seed=cfg.seed) for a, k in cfg.runs}
    run = harvest_and_train(spec, cfgs, runs_root, heldout_tokens=cfg.heldout_tokens, loaded=loaded, progress=progress,
                            log=_log, n_tokens=train_tokens, batch_size=cfg.batch_size, seed=cfg.seed)
    acts_dir, held_dir, x_held = run.acts_dir, run.held_dir, run.x_held
    timings["harvest_s"] = run.wall_s["harvest_s"]
    rows, saes = [], {}
    for (activation, k), (name, path) in zip(cfg.runs, run.dirs.items()):
        t = time.perf_counter()
        sae = saes[name] = run.saes[name].to("cpu").eval()
        row = {"name": name, "activation": activation, "k": k, "d_sae": cfg.d_sae, "dir": relative_to_runs(path, runs_root),
               "train_wall_s": run.histories[name]["wall_time_s"], **evaluate_sae(sae, x_held)}
        row["target_l0"] = run.histories[name].get("target_l0")  # the L0 its penalty was steered to (None: top-k)
        row["l0_off_target"] = l0_off_target(row["l0"], row["target_l0"])
        rows.append(row)
        timings[f"train_eval_{name}_s"] = run.wall_s[f"train_{name}_s"] + time.perf_counter() - t

    _log(f"splice {len(saes)} SAEs on {cfg.splice_tokens} held-out predictions")
    t = time.perf_counter()
    results = splice.evaluate_many(loaded, saes, offline_texts(split="heldout"), cfg.layer,
                                   context_length=cfg.context_length, max_tokens=cfg.splice_tokens)
    for row in rows:
        row.update({f"splice_{k}": v for k, v in results[row["name"]].to_dict().items() if k not in ("layer", "skip_bos")})
    timings["splice_s"] = time.perf_counter() - t

    _log("concepts: gender axis")
    t = time.perf_counter()
    gender = {}
    word_acts = concepts.pair_word_activations(loaded, cfg.pairs, cfg.layer)
    for row in rows:
        if row["k"] == cfg.k:
            gender[row["name"]] = concepts.run_concepts(saes[row["name"]], loaded, cfg.pairs, seed=cfg.seed, word_acts=word_acts)
    timings["concepts_s"] = time.perf_counter() - t

    _log("steering")
    t = time.perf_counter()
    steer = _steering(cfg, loaded, saes.get(f"abstopk-k{cfg.k}"), gender.get(f"abstopk-k{cfg.k}"), x_held, word_acts)
    timings["steering_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    report = {
        "settings": dataclasses.asdict(cfg) | {"train_tokens": train_tokens, "optimiser": OPTIMISER_RECIPE},
        "ran_on": {"model": cfg.model, "layer": cfg.layer, "hook_name": loaded.info.hook_name(cfg.layer),
                   "torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads(),
                   "python": platform.python_version(), "machine": platform.machine()},
        "harvest": {"train_dir": relative_to_runs(acts_dir, runs_root), "heldout_dir": relative_to_runs(held_dir, runs_root),
                    "heldout_tokens": len(x_held)},
        "saes": rows,
        "gender": {name: _gender_summary(rep) for name, rep in gender.items()},
        "steering": steer,
        "timings": timings,
    }
    names = figures(report, out) if figures is not None else []
    atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1, default=str)))
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(_summary(report, names)))
    _log(f"done in {timings['total_s'] / 60:.1f} min -> {out}")
    return report


def _gender_summary(rep: dict) -> dict:
    keys = ("best_latent", "test_accuracy", "sign_accuracy", "sign_accuracy_strict", "threshold_accuracy",
            "coverage_a", "coverage_b", "preact_sign_accuracy", "bidirectional", "bidirectional_share", "best_pair",
            "best_pair_accuracy", "dim_test_accuracy", "dim_relative_accuracy", "cos_to_dim", "relative_accuracy")
    out = {k: rep[k] for k in keys if k in rep}
    out["sign_latent"] = {k: rep["sign_latent"][k] for k in ("latent", "sign_accuracy", "coverage_a", "coverage_b")
                          if k in rep.get("sign_latent", {})}
    out["n_test_pairs"] = len(rep["test_pairs"])
    return out


def _steering(cfg, loaded, sae, rep, x_held, wa) -> dict | None:
    """Clamp the AbsTopK gender latent across c and add DiM at matched norm; log-odds and generations."""
    from .. import concepts
    from ..lm import steering

    if sae is None or rep is None:
        return None
    latent = rep.get("sign_latent", {}).get("latent", rep["best_latent"])
    with torch.no_grad():
        z = torch.cat([sae.encode(x_held[i : i + 4096])[:, latent] for i in range(0, len(x_held), 4096)])
    nonzero = z[z != 0].abs()
    # q: a strong but typical activation of the latent (90th percentile of its non-zero |z|);
    # the maximum is an outlier, and clamping there breaks the model's text
    q = (nonzero.quantile(0.9).item() if len(nonzero) else 1.0) or 1.0
    values = [m * q for m in (-2, -1, -0.5, 0, 0.5, 1, 2)]
    words_a = [a for a, _ in rep["train_pairs"]]
    words_b = [b for _, b in rep["train_pairs"]]
    dim = concepts.dim_direction(wa.acts[wa.index(words_a)], wa.acts[wa.index(words_b)]).float()
    # the latent's raw-space direction (for a standardising SAE its mean length over the held-out tokens)
    d_i = steering.mean_decoder_direction(sae, latent, x_held)
    if torch.dot(dim, d_i.float()) < 0:  # orient DiM like the latent's decoder row, so c means the same way
        dim = -dim
    dim_v = steering.match_norm(dim, sae, latent, x_held)
    try:
        clamp = steering.logit_diff_curve(loaded, lambda c: steering.clamp_latent(sae, latent, c), values)
        add = steering.logit_diff_curve(loaded, lambda c: steering.add_direction(dim_v, c, cfg.layer), values)
    except ValueError as err:  # e.g. a tokenizer where no she/he pair is a single token
        return {"skipped": str(err)}
    prompt = steering.DEFAULT_PROMPTS[0]
    gens = {f"{m:+g}q": steering.generate_with(loaded, prompt, steering.clamp_latent(sae, latent, m * q), max_new_tokens=12)
            for m in (-1, 0, 1)}
    return {"latent": latent, "q": q, "q_rule": "90th percentile of the latent's non-zero |z| on held-out tokens",
            "fires_on": float((z != 0).double().mean()), "values": values, "cos_latent_dim": float(torch.nn.functional.cosine_similarity(d_i.float(), dim, 0)),
            "clamp": clamp.to_dict(), "dim": add.to_dict(), "prompt": prompt, "generations": gens}


def _fmt(v, digits=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


def _off_target(row: dict) -> bool:
    """True when a penalty-family row's held-out L0 is more than ``L0_TOLERANCE`` from its target."""
    off = row.get("l0_off_target")
    return off is not None and abs(off) > L0_TOLERANCE


def _l0_cell(row: dict) -> str:
    """The L0 cell: three digits, and for an off-target row its target and the gap, marked ⚠."""
    cell = _fmt(row["l0"], 3)
    if _off_target(row):
        cell += f" ⚠ (target {row['target_l0']:g}, {100 * row['l0_off_target']:+.0f} %)"
    return cell


_SAE_COLUMNS = [("name", "SAE"), ("fvu", "FVU"), ("l0", "L0"), ("dead_frac", "dead %"), ("bidirectional_frac", "bidirectional %"),
                ("splice_ce_orig", "CE orig"), ("splice_ce_sae", "CE sae"), ("splice_kl_sae", "KL"),
                ("splice_loss_recovered_zero", "loss rec. (zero)"), ("splice_loss_recovered_mean", "loss rec. (mean)")]
_GENDER_COLUMNS = [("name", "SAE"), ("best_latent", "best latent"), ("sign_accuracy", "sign acc."),
                   ("threshold_accuracy", "threshold acc."), ("coverage", "coverage male / female"),
                   ("preact_sign_accuracy", "pre-act sign acc."), ("best_pair_accuracy", "best pair acc."),
                   ("dim_test_accuracy", "DiM acc."), ("cos_to_dim", "cos(latent, DiM)")]


def _summary(report: dict, figures: list[str]) -> str:
    s, ran = report["settings"], report["ran_on"]
    lines = [
        f"# abstopk_mini reproduce — {ran['model']} {ran['hook_name']}",
        "",
        f"Harvest: {s['n_tokens']:,} training activations (offline text, chunk offsets {', '.join(str(o) for o in s['chunk_offsets'])}), "
        f"{report['harvest']['heldout_tokens']:,} held-out. SAEs: d_sae={s['d_sae']}, trained on {s['train_tokens']:,} tokens, "
        f"batch {s['batch_size']}{', optimiser ' + s['optimiser'] if 'optimiser' in s else ''}. torch {ran['torch']} on {ran['device']} ({ran['threads']} thread{'' if ran['threads'] == 1 else 's'}). "
        f"Total time {report['timings']['total_s'] / 60:.1f} min; the {len(report['saes'])} SAEs' own training took "
        f"{sum(r['train_wall_s'] for r in report['saes']) / 60:.1f} min (an SAE already in the runs directory is loaded, "
        "not retrained, so its training time is not part of the total).",
        "",
        "## SAEs (held-out)",
        "",
    ]
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    rows = [r | {"l0": _l0_cell(r)} for r in report["saes"]]
    lines += format_table(rows, _SAE_COLUMNS, style="markdown", cell=_fmt,
                          formats={"dead_frac": pct, "bidirectional_frac": pct}).split("\n")
    if any(_off_target(r) for r in report["saes"]):
        lines += ["", f"⚠ L0 more than {100 * L0_TOLERANCE:.0f} % from the target its penalty was steered to: compare "
                  "this SAE with others at its own L0, not at the row's k."]
    if report["gender"]:
        lines += ["", "## Gender axis (family pairs, test split; balanced per-word accuracy, a zero counts 0.5 for the sign rule)", ""]
        rows = [{"name": name, **g, "coverage": f"{_fmt(g['coverage_a'], 2)} / {_fmt(g['coverage_b'], 2)}"}
                for name, g in report["gender"].items()]
        three, two = (lambda v: _fmt(v, 3)), (lambda v: _fmt(v, 2))  # noqa: E731
        lines += format_table(rows, _GENDER_COLUMNS, style="markdown", cell=_fmt,
                              formats={c: three for c in ("sign_accuracy", "threshold_accuracy", "preact_sign_accuracy",
                                                          "best_pair_accuracy", "dim_test_accuracy")} | {"cos_to_dim": two}).split("\n")
    st = report.get("steering")
    if st and "clamp" in st:
        lines += ["", f"## Steering (AbsTopK latent {st['latent']}, q = {st['q']:.3g}, cos with DiM {st['cos_latent_dim']:.2f})", "",
                  "| c / q | " + " | ".join(f"{v / st['q']:+g}" for v in st["values"]) + " |",
                  "|---|" + "---|" * len(st["values"]),
                  "| clamp latent | " + " | ".join(f"{v:.2f}" for v in st["clamp"]["log_odds"]) + " |",
                  "| DiM, matched norm | " + " | ".join(f"{v:.2f}" for v in st["dim"]["log_odds"]) + " |",
                  "", f"Generations for “{st['prompt']}”:", ""]
        lines += [f"- c = {k}: {v!r}" for k, v in st["generations"].items()]
    elif st:
        lines += ["", f"Steering skipped: {st['skipped']}"]
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the chapters' SAEs
@dataclass
class ChapterSAEs:
    """What :func:`chapter_saes` returns: the model, the SAEs by activation name, held-out
    activations ``x_held`` [N, d_in], directories and wall times (s) of each step."""

    cfg: ReproduceConfig
    loaded: object
    saes: dict[str, SAE]
    dirs: dict[str, Path]
    histories: dict[str, dict]
    acts_dir: Path | None  # None for shipped SAEs (no training harvest needed)
    held_dir: Path
    x_held: torch.Tensor
    wall_s: dict[str, float] = field(default_factory=dict)


def chapter_saes(cfg: ReproduceConfig | None = None, activations: Sequence[str] = ("abstopk", "topk"), k: int | None = None,
                 loaded=None, runs_root=None, progress: bool = False) -> ChapterSAEs:
    """Harvest (or reuse) the training and held-out activations of ``cfg`` and train (or reuse)
    one SAE per activation at width ``cfg.d_sae`` and ``k`` (default ``cfg.k``), exactly as
    :func:`abstopk_mini.runs.reproduce.reproduce` does, so both find the same files."""
    from ..lm.models import load_model

    cfg = cfg or ReproduceConfig()
    k = cfg.k if k is None else k
    t = time.perf_counter()
    loaded = loaded if loaded is not None else load_model(cfg.model)
    wall = {"load_model_s": time.perf_counter() - t}
    spec = HarvestSpec(cfg.model, cfg.layer, cfg.n_tokens, cfg.context_length, chunk_offsets=cfg.chunk_offsets)
    cfgs = {a: SAEConfig(d_in=loaded.info.d_model, d_sae=cfg.d_sae, activation=a, k=k, seed=cfg.seed) for a in activations}
    run = harvest_and_train(spec, cfgs, runs_root, heldout_tokens=cfg.heldout_tokens, loaded=loaded, progress=progress,
                            n_tokens=cfg.train_tokens or 2 * cfg.n_tokens, batch_size=cfg.batch_size, seed=cfg.seed)
    return ChapterSAEs(cfg, loaded, run.saes, run.dirs, run.histories, run.acts_dir, run.held_dir, run.x_held,
                       wall | run.wall_s)


def shipped_name(cfg: ReproduceConfig, activation: str, k: int | None = None) -> str:
    """The name under which :mod:`abstopk_mini.pretrained` ships the SAE of ``cfg`` with ``activation``:
    ``"{model}-L{layer}-{activation}-{d_sae}-k{k}"``, e.g. ``"gemma-3-270m-L6-abstopk-4096-k32"`` (a local
    model folder by its last part; a hub id with ``/`` as ``--``)."""
    model = Path(cfg.model).name if "/" in cfg.model and Path(cfg.model).exists() else cfg.model.replace("/", "--")
    return f"{model}-L{cfg.layer}-{activation}-{cfg.d_sae}-k{cfg.k if k is None else k}"


def shipped_saes(cfg: ReproduceConfig | None = None, activations: Sequence[str] = ("abstopk", "topk"), k: int | None = None,
                 loaded=None, runs_root=None, pretrained_root=None, progress: bool = False) -> ChapterSAEs:
    """Like :func:`chapter_saes`, with the SAEs the book ships (:func:`abstopk_mini.pretrained.load`,
    hashes checked) instead of training: only the held-out harvest of ``cfg`` is made (or reused).

    ``dirs`` are the shipped folders; ``histories`` hold each SAE's manifest entry (how it was
    trained: record, steps, batch, tokens). Raises ValueError naming the shipped SAEs when ``cfg``
    has none (another model, layer, width or k): train instead with :func:`chapter_saes`."""
    from .. import pretrained
    from ..lm.models import load_model
    from ..lm.shards import load_activations
    from .store import harvest_spec

    cfg = cfg or ReproduceConfig()
    shipped = pretrained.available(pretrained_root)
    names = {a: shipped_name(cfg, a, k) for a in activations}
    missing = [n for n in names.values() if n not in shipped]
    if missing:
        raise ValueError(f"no shipped SAE named {missing} (model {cfg.model!r}, layer {cfg.layer}, d_sae {cfg.d_sae}, "
                         f"k {cfg.k if k is None else k}); shipped: {sorted(shipped)}. Train them with "
                         "am.runs.reproduce.chapter_saes(cfg) (the chapters: RETRAIN = True)")
    t = time.perf_counter()
    loaded = loaded if loaded is not None else load_model(cfg.model)
    wall = {"load_model_s": time.perf_counter() - t}
    t = time.perf_counter()
    saes = {a: pretrained.load(n, pretrained_root) for a, n in names.items()}
    wall["load_saes_s"] = time.perf_counter() - t
    t = time.perf_counter()
    spec = HarvestSpec(cfg.model, cfg.layer, cfg.n_tokens, cfg.context_length, chunk_offsets=cfg.chunk_offsets)
    held_dir = harvest_spec(spec.heldout(cfg.heldout_tokens), runs_root, loaded=loaded, progress=progress)
    x_held = load_activations(held_dir)
    wall["harvest_s"] = time.perf_counter() - t
    base = pretrained.pretrained_root(pretrained_root)
    return ChapterSAEs(cfg, loaded, saes, {a: base / shipped[n]["dir"] for a, n in names.items()},
                       {a: shipped[n] for a, n in names.items()}, None, held_dir, x_held, wall)


def replace_model(cfg: ReproduceConfig, model: str | None) -> ReproduceConfig:
    """``cfg`` with ``model`` swapped in (None or the same name: unchanged)."""
    return cfg if not model or model == cfg.model else dataclasses.replace(cfg, model=model)


def study_config(model: str = "gemma-3-270m", quick: bool = False, retrain: bool | None = None
                 ) -> tuple[bool, ReproduceConfig]:
    """``(retrain, cfg)`` for the chapters that study a TopK / AbsTopK pair (7 and 8).

    retrain: None reads ``ABSTOPK_RETRAIN=1`` from the environment; another model than the one
    the book ships SAEs for always retrains. Retraining uses chapter 6's settings
    (:meth:`ReproduceConfig.quick` in quick mode); the shipped SAEs need only a held-out harvest
    (4,000 tokens in quick mode, 50,000 otherwise)."""
    import os

    if retrain is None:
        retrain = os.environ.get("ABSTOPK_RETRAIN") == "1"
    retrain = bool(retrain) or model != ReproduceConfig.model
    if retrain:
        return True, replace_model(ReproduceConfig.quick() if quick else ReproduceConfig(), model)
    return False, ReproduceConfig(heldout_tokens=4_000 if quick else 50_000)


def study_saes(cfg: ReproduceConfig, retrain: bool, activations: Sequence[str] = ("abstopk", "topk"),
               x_eval=None, out=print, label: Callable[[str], str] = str, **kw) -> ChapterSAEs:
    """:func:`chapter_saes` (``retrain``) or :func:`shipped_saes`, then one line per SAE to ``out``:
    held-out FVU, L0, dead share and how it was made (steps, batch, tokens, seed for a shipped
    SAE), and the wall times. label: how a line names an activation (default its name; the book's
    :func:`abstopk_mini.chapters.style.label` gives "AbsTopK"). ``kw`` go to the loader."""
    cs = (chapter_saes if retrain else shipped_saes)(cfg, activations, **kw)
    for a, sae in cs.saes.items():
        ev = evaluate_sae(sae, cs.x_held if x_eval is None else x_eval)
        if retrain:
            made = f"trained here, {cs.dirs[a].name}"
        else:
            t = cs.histories[a]["trained"]
            made = (f"{shipped_name(cfg, a)}: {t['n_steps']:,} steps of batch {t['batch_size']}, "
                    f"{t['n_tokens']:,} tokens, seed {t['seed']}")
        out(f"{label(a):>7}: held-out FVU {ev['fvu']:.4f}, L0 {ev['l0']:.1f}, dead {100 * ev['dead_frac']:.1f}%  ({made})")
    out(f"wall times (s): { {k: round(v, 1) for k, v in cs.wall_s.items()} }")
    return cs
