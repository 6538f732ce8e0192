"""One training choice at a time: which of SAELens's recipe choices makes its JumpReLU better than ours?

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ablate_recipe.py 32 clip              # JumpReLU, target 32
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ablate_recipe.py 32 clip topk         # another activation
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ablate_recipe.py 32 bw05+eps+free+row+coef1+nowarm
    PYTHONPATH=. python benchmarks/ablate_recipe.py --table results/grad_clip.jsonl      # the record as a table

Budget and data are :mod:`bench_family`'s (d_sae 2048, 586 steps of 1,024 Gemma-3-270M layer-6 tokens,
seed 0, our initialisation, held-out FVU / L0 / never-firing share on 50,000 held-out tokens), so the
``base`` row is bench_family's ``ours`` row. Training runs with ``grad_clip=None`` (the package's setting
before clipping became its default) and each variant adds one of SAELens's choices (bench_family's
docstring lists them), joined with ``+``:

=============  ==============================================================================
variant        change
=============  ==============================================================================
base           none
bw05           JumpReLU STE bandwidth 0.05 (ours 0.2)
eps            Adam eps 1e-8 (ours 6.25e-10); ``eps=X``: eps X
coef1          L0 coefficient 1 (ours 2); ``c=X``: X
nowarm         no warm-up of the L0 term (ours: over the first 5 % of steps)
row            the L0 term per row, mean over rows of 2/K·(L0_row − K)² (ours: of the batch's mean L0)
clip           the gradient scaled to global norm 1 when larger (after the parallel part is removed)
free           free decoder norms (no parallel-gradient removal, no renormalising) and clip;
               ``free+noclip``: without clip
clipat=X       the package's own clipping at norm X (``TrainConfig.grad_clip``)
b2=X           Adam beta2 X (ours 0.999)
lsq            the encoder scaled to the data at the start (``TrainConfig.encoder_init="least_squares"``)
lsqc           lsq, and ReLU's starting l1 coefficient divided by the same scale c
=============  ==============================================================================

Prints one JSON line: K, activation, variant, held-out FVU, L0 and never-firing share, the final
training L0, the CPU seconds of training and the global gradient norm before clipping (:func:`grad_norms`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_family as bf  # noqa: E402

import abstopk_mini as am  # noqa: E402

ACTS = bf.ACTS  # the training harvest bench_family reads; the held-out harvest of 50,000 tokens beside it
HELDOUT = str(Path(bf.ACTS).parent / "gemma-3-270m-L6-heldout-5d99b4a8e4")


def train_variant(K: int, variants: set[str], activation: str, acts: str = ACTS) -> tuple[am.SAE, dict]:
    """Ours at target / k = K with the variants applied (the table above).  -> (SAE, history)"""
    from abstopk_mini.lm.shards import load_activations

    budget = bf.Budget()
    x = load_activations(acts, max_tokens=budget.steps * budget.batch)
    fitted = bool(variants & {"lsq", "lsqc"})
    sae = bf.initial_sae(x, activation, K, budget, **({"encoder_init": "least_squares"} if fitted else {}))
    kw: dict = {"grad_clip": None}
    for v in variants:
        if v == "eps":
            kw["adam_eps"] = 1e-8
        elif v.startswith("eps="):
            kw["adam_eps"] = float(v[4:])
        elif v == "coef1":
            kw["l0_coefficient"] = 1.0
        elif v.startswith("c="):
            kw["l0_coefficient"] = float(v[2:])
        elif v == "nowarm":
            kw["sparsity_warmup_frac"] = 0.0
        elif v.startswith("clipat="):
            kw["grad_clip"] = float(v[7:])
        elif v.startswith("b2="):
            kw["adam_betas"] = (0.9, float(v[3:]))
        elif v == "bw05":
            sae.act.bandwidth = 0.05
        elif v == "lsqc":  # the l1 coefficient in the scaled code's units; c read back from W_enc = c·W_decᵀ
            c = ((sae.W_enc * sae.W_dec.T).sum() / sae.W_dec.pow(2).sum()).item()
            kw["l1_coefficient"] = budget.train_cfg().l1_coefficient / c
        elif v not in ("base", "clip", "free", "noclip", "row", "lsq"):
            raise SystemExit(f"unknown variant {v!r}; see the table in this script's docstring")
    clip = own_clip(variants)
    remove_parallel = sae.remove_parallel_grad

    def before_step() -> None:  # train_sae calls this between backward and Adam's step
        if "free" not in variants:
            remove_parallel()
        if clip:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)

    sae.remove_parallel_grad = before_step
    if "free" in variants:
        sae.normalize_decoder = lambda: None
    if "row" in variants:
        def per_row(out, target_l0=None):
            return (2.0 / target_l0 * (sae.act.l0(out.u) - target_l0) ** 2).mean()
        sae.act.penalty_term = per_row
    return am.train_sae(sae.cfg, x, dataclasses.replace(budget.train_cfg(), **kw), sae=sae)


def table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(f"{'activation':12s} {'K':>3s} {'variant':32s} {'held FVU':>9s} {'held L0':>8s} {'never fire':>10s}")
    for r in rows:
        print(f"{r['act']:12s} {r['K']:3d} {r['v']:32s} {r['held_fvu']:9.4f} {r['held_l0']:8.1f} {r['dead_frac']:10.3f}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--table"]:
        table(Path(argv[1]))
        return 0
    torch.set_num_threads(1)
    K, variants = int(argv[0]), set(argv[1].split("+"))
    activation = argv[2] if len(argv) > 2 else "jumprelu"
    from abstopk_mini.lm.shards import load_activations

    held = load_activations(HELDOUT, max_tokens=50_000)
    t = time.process_time()
    sae, hist = train_variant(K, variants, activation)
    seconds = time.process_time() - t
    m = bf.measure(sae.eval(), held)
    print(json.dumps({"K": K, "act": activation, "v": argv[1], **{k: round(v, 4) for k, v in m.items()},
                      "train_l0": round(hist["final_l0"], 1), "cpu_s": round(seconds)}
                     | ({} if own_clip(variants) else grad_norms(hist))), flush=True)


def own_clip(variants: set[str]) -> bool:
    """Whether this script clips inside the parallel-gradient hook (clip, free): the history then logs the norm
    after that clip, so no norm is reported (``clipat=1`` clips in the package and logs the norm before it)."""
    return "clip" in variants or ("free" in variants and "noclip" not in variants)


def grad_norms(hist: dict) -> dict:
    """The global gradient norm before clipping (the history's ``grad_norm``, logged every few steps): its median
    over steps 1-10 and over the second half of the run, and its smallest value."""
    import statistics

    pairs = [(s, g) for s, g in zip(hist["step"], hist.get("grad_norm", [])) if math.isfinite(g)]
    if not pairs:
        return {}
    half = hist["step"][-1] / 2
    return {"grad_norm_first10": round(statistics.median(g for s, g in pairs if s <= 10), 3),
            "grad_norm_second_half": round(statistics.median(g for s, g in pairs if s > half), 3),
            "grad_norm_min": round(min(g for _, g in pairs), 3)}
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
