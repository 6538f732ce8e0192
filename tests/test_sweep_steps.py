"""Steps vs tokens in the sweep: per-stage batch sizes, snapshots along a run, k swept at test time,
records with paths relative to the runs directory (issue 14, items 2 and 4)."""

import dataclasses
import json

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.evaluate import evaluate_sae
from abstopk_mini.runs import sweep
from abstopk_mini.runs.store import content_key, load_snapshots
from abstopk_mini.train import TrainConfig, snapshot_path

from test_sweep import tiny_config


# ----------------------------------------------------------------------------- snapshots in train_sae
def test_snapshot_is_the_sae_after_that_many_steps(tmp_path):
    """With a constant lr, the snapshot after 4 of 10 steps is the SAE of a 4-step run: the same
    batches and the same operations in the same order, so the weights are bit-identical."""
    x = torch.randn(2048, 16, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=16, d_sae=32, activation="abstopk", k=4, seed=0)
    kw = dict(batch_size=128, lr_schedule="constant", lr=1e-3, progress=False, dead_tokens=512)
    _, hist = am.train_sae(cfg, x, n_tokens=1280, snapshot_steps=(4, 7), snapshot_dir=str(tmp_path / "s"), **kw)
    short, _ = am.train_sae(cfg, x, n_tokens=512, **kw)
    assert hist["n_steps"] == 10
    snap = am.SAE.load(snapshot_path(tmp_path / "s", 4))
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(snap, name), getattr(short, name)), name
    assert json.loads((snapshot_path(tmp_path / "s", 7) / "snapshot.json").read_text()) == {"step": 7, "tokens": 896}
    assert [s for s, _, _ in load_snapshots(tmp_path.joinpath("x"))] == []  # a run without snapshots has none


@pytest.mark.parametrize("kw, named", [
    ({"snapshot_steps": (3,)}, "snapshot_dir"),
    ({"snapshot_steps": (0,), "snapshot_dir": "d"}, "snapshot_steps"),
    ({"snapshot_steps": (2.5,), "snapshot_dir": "d"}, "snapshot_steps"),
])
def test_bad_snapshot_settings_are_named(kw, named):
    with pytest.raises(ValueError, match=named):
        TrainConfig(**kw)


# ----------------------------------------------------------------------------- config
def test_batch_sizes_and_snapshots_expand_and_old_keys_are_unchanged(tmp_path):
    raw = tiny_config(tmp_path, tmp_path / "r.jsonl", batch_sizes=[128, 1024], snapshot_steps=[2, 4, 8],
                      train_tokens=[4096])
    cfg = sweep.load_config(raw)
    pts = [p for _, p in cfg.points()]
    assert [(p.batch_size, p.snapshot_steps) for p in pts] == [(128, (2, 4, 8))] * 2 + [(1024, (2,))] * 2
    assert len({cfg.point_key(p) for p in pts}) == 4
    # a point that does not use the new fields keeps the key it had before they existed
    plain = sweep.load_config(tiny_config(tmp_path, tmp_path / "r.jsonl"))
    p = plain.points()[0][1]
    old_point = {f: getattr(p, f) for f in ("layer", "d_sae", "k", "activation", "seed", "variant", "train_tokens")}
    old_harvest = dataclasses.asdict(plain.harvest_spec(p.layer))
    assert old_harvest.pop("augment") == "none"  # a harvest field added later, absent from the old keys
    expected = content_key({"schema": sweep.SCHEMA, "point": old_point, "harvest": old_harvest,
                            "batch_size": plain.batch_size, "eval": plain.eval})
    assert plain.point_key(p) == expected
    with pytest.raises(ValueError, match="stages\\[0\\].batch_sizes"):
        sweep.load_config(tiny_config(tmp_path, tmp_path / "r.jsonl", batch_sizes=[0]))
    with pytest.raises(ValueError, match="eval.test_ks"):
        sweep.load_config(raw | {"eval": raw["eval"] | {"test_ks": []}})
    with pytest.raises(ValueError, match="eval.splice_snapshots"):
        sweep.load_config(raw | {"eval": raw["eval"] | {"splice_snapshots": "yes"}})


# ----------------------------------------------------------------------------- runner
def test_snapshots_test_ks_and_relative_paths_in_records(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    raw = tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", batch_sizes=[128], snapshot_steps=[2, 5],
                      train_tokens=[1024], activations=["abstopk"])
    raw["eval"] |= {"test_ks": [2, 4, 8], "splice_snapshots": True}
    out = sweep.run_sweep(raw, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    assert len(out["ran"]) == 1
    rec = sweep.read_results(tmp_path / "r.jsonl")[0]
    assert rec["batch_size"] == 128 and rec["train"]["n_steps"] == 8 and rec["snapshot_steps"] == [2, 5]
    # paths are relative to the runs directory and resolve there
    assert not rec["provenance"]["sae_dir"].startswith("/") and not rec["harvest"]["dir"].startswith("/")
    run = sweep.record_path(rec["provenance"]["sae_dir"], tmp_path)
    assert run.is_dir() and sweep.record_path(rec["harvest"]["dir"], tmp_path).is_dir()
    # each snapshot's numbers are those of the saved snapshot, measured again here
    from abstopk_mini.lm.shards import load_activations

    x_held = load_activations(sweep.load_config(raw).harvest_spec(1, "heldout").directory(tmp_path))
    snaps = load_snapshots(run)
    assert [s["step"] for s in rec["snapshots"]] == [s for s, _, _ in snaps] == [2, 5]
    for got, (step, tokens, sae) in zip(rec["snapshots"], snaps):
        assert got["tokens"] == tokens == 128 * step
        assert got["heldout"]["fvu"] == pytest.approx(evaluate_sae(sae, x_held)["fvu"], rel=1e-5)  # 6 digits kept
        assert got["splice"]["n_tokens"] == rec["splice"]["n_tokens"] == 48
    # k swept at test time: the trained weights in an SAE built with the other k, measured here
    final = am.SAE.load(run)
    assert final.cfg.k == 4 and rec["test_k"]["4"] == pytest.approx(rec["heldout"]["fvu"], rel=1e-5)
    for k in (2, 8):
        other = am.SAE(dataclasses.replace(final.cfg, k=k))
        other.load_state_dict(final.state_dict())
        assert rec["test_k"][str(k)] == pytest.approx(evaluate_sae(other.eval(), x_held)["fvu"], rel=1e-5)


def test_two_workers_share_a_config_through_claims(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    """A point another process has claimed is left to it; splice_stages limits loss recovered."""
    from abstopk_mini.io import Claim
    from abstopk_mini.runs.store import runs_dir

    raw = tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl")
    raw["stages"].append({"name": "more", "layers": [1], "widths": [64], "ks": [2], "activations": ["abstopk"],
                          "train_tokens": [1024]})
    raw["eval"] |= {"splice_stages": ["more"]}
    cfg = sweep.load_config(raw)
    (first_stage, first), *_ = cfg.points()
    other = Claim(runs_dir(tmp_path) / "claims" / f"{cfg.point_key(first)}.lock")
    assert other.take()
    try:
        assert not Claim(other.path).take()  # held: a second taker is refused at once
        out = sweep.run_sweep(cfg, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    finally:
        other.release()
    recs = sweep.read_results(tmp_path / "r.jsonl")
    assert cfg.point_key(first) not in out["ran"] and len(out["ran"]) == 2
    assert [("splice" in r, r["stage"]) for r in recs] == [(False, "g"), (True, "more")]
    again = sweep.run_sweep(cfg, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    assert again["ran"] == [cfg.point_key(first)]
    with pytest.raises(ValueError, match="eval.splice_stages"):
        sweep.load_config(raw | {"eval": raw["eval"] | {"splice_stages": ["nope"]}})


def test_batch_level_sae_is_also_measured_with_batch_selection_at_inference(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    raw = tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", activations=["batchabstopk", "abstopk"])
    raw["eval"] |= {"inference_batch": 64, "splice_tokens": 0}
    sweep.run_sweep(raw, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    batch, row = sweep.read_results(tmp_path / "r.jsonl")
    assert "heldout_batch_inference" not in row  # row-level selection: nothing to replay
    from abstopk_mini.lm.shards import load_activations

    x_held = load_activations(sweep.load_config(raw).harvest_spec(1, "heldout").directory(tmp_path))
    sae = am.SAE.load(sweep.record_path(batch["provenance"]["sae_dir"], tmp_path))
    want = evaluate_sae(sae, x_held, inference="batch", eval_batch_size=64)
    got = batch["heldout_batch_inference"]
    assert got["batch"] == 64 and got["fvu"] == pytest.approx(want["fvu"], rel=1e-5)
    assert got["l0"] == pytest.approx(4, rel=1e-5)  # k = 4 per token on average, exactly, over whole blocks


# ----------------------------------------------------------------------------- the recipe ladder
def test_ladder_variants_switch_on_one_choice_of_the_paper_recipe():
    from abstopk_mini.runs.sweep_config import RECIPE_VARIANTS, recipe_variant

    base = am.SAEConfig(d_in=64, d_sae=256, activation="topk", k=8, seed=3)
    for name in RECIPE_VARIANTS:
        cfg, train = recipe_variant(name, 64, 256, "topk", 8, 3, 128)
        changed = {f for f in ("use_b_enc", "input_unit_norm", "activation", "enc_init_scale", "recipe")
                   if getattr(cfg, f) != getattr(base, f)}
        want = {"paper_no_b_enc": ({"use_b_enc"}, {}),
                "paper_unit_norm": ({"input_unit_norm"}, {"normalize_input": False}),
                "paper_batch_select": ({"activation"}, {}),
                "paper_b_dec_zeros": (set(), {"b_dec_init": "zeros"}),
                "paper_adam": (set(), {"lr": 3e-4, "adam_betas": (0.9, 0.99), "adam_eps": 1e-8, "lr_schedule": "constant",
                                       "grad_clip": None}),
                "paper_auxk": (set(), {"aux_k": 512, "dead_tokens": 5 * 128}),
                "paper_enc_init": ({"enc_init_scale"}, {}),
                "paper_batch_unit_norm": ({"activation", "input_unit_norm"}, {"normalize_input": False}),
                "paper_dead_window": (set(), {"dead_tokens": 5 * 128}),
                "paper_aux_k": (set(), {"aux_k": 512}),
                "paper_dead_window_positive_aux": (set(), {"dead_tokens": 5 * 128, "aux_sign": "positive"}),
                }.get(name)
        if want is None:  # paper_all: every choice at once, at the point's width, k and batch
            assert cfg.recipe == "paper" and cfg.activation == "batchtopk" and not cfg.use_b_enc and cfg.input_unit_norm
            assert (cfg.d_sae, cfg.k, train["batch_size"], train["dead_tokens"]) == (256, 8, 128, 640)
            continue
        assert (changed, train) == want, name
        assert cfg.seed == 3 and cfg.k == 8 and cfg.d_sae == 256
    cfg, _ = recipe_variant("paper_enc_init", 64, 256, "abstopk", 8, 0, 128)
    assert cfg.enc_init_scale == pytest.approx((2 * 64 / 256) ** 0.5, rel=1e-15)
    assert recipe_variant("paper_batch_select", 64, 256, "abstopk", 8, 0, 128)[0].activation == "batchabstopk"
    both, train = recipe_variant("paper_batch_unit_norm", 64, 256, "abstopk", 8, 0, 128)
    assert (both.activation, both.input_unit_norm, train) == ("batchabstopk", True, {"normalize_input": False})


def test_ladder_points_train_what_they_name(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    raw = tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", activations=["abstopk"],
                      variants=["paper_no_b_enc", "paper_unit_norm", "paper_all"])
    raw["eval"]["splice_tokens"] = 0
    sweep.run_sweep(raw, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    recs = {r["variant"]: r for r in sweep.read_results(tmp_path / "r.jsonl")}
    saes = {v: am.SAE.load(sweep.record_path(r["provenance"]["sae_dir"], tmp_path)) for v, r in recs.items()}
    assert not saes["paper_no_b_enc"].cfg.use_b_enc and torch.all(saes["paper_no_b_enc"].b_enc == 0)
    assert saes["paper_unit_norm"].cfg.input_unit_norm and saes["paper_unit_norm"].cfg.use_b_enc
    assert saes["paper_all"].cfg.recipe == "paper" and saes["paper_all"].cfg.activation == "batchabstopk"
    assert "mse_std" in recs["paper_all"]["heldout"] and "mse_std" not in recs["paper_no_b_enc"]["heldout"]
    assert all(0 < r["heldout"]["fvu"] < 2 for r in recs.values())
