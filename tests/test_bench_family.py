"""benchmarks/bench_family.py: the smoke budget on synthetic activations (no Gemma files), the SAELens ->
ours conversion, the shared learning-rate schedule and the L0 = 32 interpolation."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    """A benchmark script as a module (benchmarks/ is not a package; the scripts import each other by name)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


bf = _load("bench_family")
D_IN = 64


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    budget = bf.Budget(**bf.SMOKE)
    x = _load("bench_train").toy_activations(budget.steps * budget.batch + 512, D_IN, n_features=128, n_active=4, seed=1)
    return budget, x[: budget.steps * budget.batch], x[budget.steps * budget.batch :]


@pytest.mark.filterwarnings("ignore::abstopk_mini.sparsity.OffTargetL0Warning")  # 20 steps: L0 is far from K
def test_smoke_rows_complete(data, tmp_path):
    budget, x_train, x_held = data
    out = tmp_path / "family.jsonl"
    saes: dict = {}
    rows = bf.run_family(x_train, x_held, budget, out=out, keep=saes, log=lambda m: None)
    n_ours = len(bf.OURS) * len(budget.ks)
    n_saelens = sum(len(budget.grid[a]) for a in bf.SAELENS) + len(budget.ks)  # + the quadratic JumpReLU at each K
    assert len(rows) == len(saes) == n_ours + n_saelens
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    for r in rows:
        assert r["steps"] == budget.steps and r["batch"] == budget.batch and r["d_sae"] == budget.d_sae and r["seed"] == 0
        assert r["system"] in bf.SYSTEMS and r["activation"] in bf.OURS
        # ours: a target; SAELens: a coefficient; SAELens's quadratic mode: both
        assert (r["target"] is not None, r["coefficient"] is not None) == {"ours": (True, False), "saelens": (False, True),
                                                                          "saelens-target": (True, True)}[r["system"]]
        for key in ("held_fvu", "held_l0", "dead_frac", "train_s", "train_wall_s"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (key, r)
        assert 0 <= r["dead_frac"] <= 1 and 0 <= r["held_l0"] <= budget.d_sae and r["held_fvu"] >= 0
    assert {(r["system"], r["activation"]) for r in rows} == ({("ours", a) for a in bf.OURS} | {("saelens", a) for a in bf.SAELENS}
                                                              | {("saelens-target", "jumprelu")})
    summary = bf.frontier_at(rows)
    assert set(summary) == set(bf.SAELENS) and all(set(v) == set(bf.SYSTEMS) | {"topk"} for v in summary.values())


def test_the_target_mode_starts_saelens_from_our_threshold_in_its_quadratic_mode(data):
    budget, x_train, _ = data
    start = bf.initial_sae(x_train, "jumprelu", 16, budget)
    theirs = bf.saelens_sae("jumprelu", bf.TARGET_COEF, start, target_l0=16)
    assert theirs.cfg.jumprelu_sparsity_loss_mode == "quadratic" and theirs.cfg.target_l0 == 16
    assert torch.equal(theirs.threshold.detach(), start.act.threshold.detach())
    with pytest.raises(ValueError, match="quadratic"):
        bf.saelens_sae("relu", 1.0, start, target_l0=16)


@pytest.mark.parametrize("activation", sorted(bf.SAELENS))
def test_from_saelens_reproduces_saelens(data, activation):
    """fp32, one matmul per map (a sum of d_in terms to encode, d_sae to decode): 1e-5 relative to the output's scale."""
    budget, x_train, x_held = data
    start = bf.initial_sae(x_train, "topk", budget.ks[0], budget)
    theirs, _ = bf.train_saelens(x_train, activation, budget.grid[activation][0], start, budget)
    ours = bf.saelens_to_ours(theirs)
    assert ours.cfg.activation == activation and ours.cfg.input_scale == 1.0  # s is folded into the weights
    x = x_held[:256]
    with torch.no_grad():
        z_theirs, z_ours = theirs.encode(x), ours.encode(x)
        assert int((z_theirs != 0).sum()) > 0  # something fires, so the comparison says something
        torch.testing.assert_close(z_ours, z_theirs, rtol=1e-5, atol=1e-5 * z_theirs.abs().max().item())
        assert torch.equal(z_ours != 0, z_theirs != 0)
        xh_theirs, xh_ours = theirs.decode(z_theirs), ours.decode(z_theirs)
        torch.testing.assert_close(xh_ours, xh_theirs, rtol=1e-5, atol=1e-5 * xh_theirs.abs().max().item())


def test_same_lr_schedule():
    from abstopk_mini.train import lr_at

    for kw in (bf.SMOKE, {}):
        budget = bf.Budget(**kw)
        theirs = bf.saelens_lrs(budget)
        ours = [lr_at(t, budget.steps, budget.lr, 0.05, 0.2) for t in range(budget.steps)]
        assert max(abs(a - b) for a, b in zip(theirs, ours)) <= 1e-12 * budget.lr


def test_same_batches_and_start(data):
    """The batches SAELens is fed are those our train_sae reads: lr 0 leaves W_dec at its start, as built here."""
    budget, x_train, _ = data
    import abstopk_mini as am
    from abstopk_mini.train import TrainConfig

    start = bf.initial_sae(x_train, "topk", budget.ks[0], budget)
    seen = []
    probe = TrainConfig(n_tokens=2 * budget.batch, batch_size=budget.batch, progress=False, lr=0.0)
    sae, _ = am.train_sae(am.SAEConfig(d_in=D_IN, d_sae=budget.d_sae, activation="topk", k=budget.ks[0], device="cpu"),
                          x_train, probe)
    torch.testing.assert_close(sae.W_dec, start.W_dec, rtol=1e-6, atol=1e-7)  # renormalising unit rows: ~1 ulp
    assert torch.equal(sae.b_dec, start.b_dec) and sae.cfg.input_scale == start.cfg.input_scale
    from abstopk_mini.data import Batches

    ref = Batches(x_train, D_IN, budget.batch, budget.seed, False)(0)
    for xb in bf.train_batches(x_train, budget):
        seen.append(xb.shape[0])
        assert torch.equal(xb, next(ref))
    assert seen == [budget.batch] * budget.steps


def test_fvu_at_and_bad_arguments(data):
    assert bf.fvu_at([(16, 0.3), (64, 0.1)]) == pytest.approx(0.3 + 0.5 * (0.1 - 0.3))  # 32 is halfway in log L0
    assert bf.fvu_at([(40, 0.2), (64, 0.1)]) is None and bf.fvu_at([]) is None
    assert bf.fvu_at([(64, 0.1), (8, 0.5), (32, 0.25)]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="steps"):
        bf.Budget(steps=0)
    with pytest.raises(ValueError, match="ks"):
        bf.Budget(d_sae=8, ks=(16,))
    with pytest.raises(ValueError, match="grid"):
        bf.Budget(grid={"relu": (-1.0,)})
    budget, x_train, x_held = data
    with pytest.raises(ValueError, match="train-tokens"):
        bf.run_family(x_train[:100], x_held, budget)
