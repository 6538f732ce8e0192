"""Experiments of chapters 7-8 (abstopk_mini.chapters.experiments_lm): the reproduce SAEs are found again,
and the steering methods make the edits their formulas say (checked on tensors and the tiny GPT-2)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini.chapters import experiments_lm as ex
from abstopk_mini.lm import steering as St
from abstopk_mini.runs.store import HarvestSpec, sae_dir
from abstopk_mini.runs.reproduce import ReproduceConfig


def _sae(d_in=16, d_sae=32, activation="abstopk", k=4, layer=0, seed=0):
    sae = am.SAE(am.SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation, k=k, device="cpu", seed=seed,
                              hook_layer=layer, input_scale=0.5))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
    return sae.eval()


X = torch.randn(40, 16, generator=torch.Generator().manual_seed(1)) * 3


def test_clamp_latents_is_the_sum_of_single_clamps_read_from_the_same_x():
    sae = _sae()
    with torch.no_grad():
        z = sae.encode(X)
    one = ex.clamp_latents(sae, {5: 2.0})
    torch.testing.assert_close(one(X), St.clamp_latent(sae, 5, 2.0)(X))
    two = ex.clamp_latents(sae, {5: 2.0, 9: -1.5})
    d5, d9 = St.decoder_direction(sae, 5), St.decoder_direction(sae, 9)
    expected = X + (2.0 - z[:, 5:6]) * d5 + (-1.5 - z[:, 9:10]) * d9
    torch.testing.assert_close(two(X), expected, atol=1e-5, rtol=1e-5)
    assert two.layer == 0 and "latent 9 to -1.5" in two.label
    with pytest.raises(ValueError, match="values is empty"):
        ex.clamp_latents(sae, {})
    with pytest.raises(ValueError, match="latent must be an int"):
        ex.clamp_latents(sae, {32: 1.0})


def test_clamp_latents_on_a_standardising_sae_is_the_sum_of_single_clamps():
    """x' = x + Σ_i (c_i − z_i(x)) σ(x) W_dec[i]/s, σ the token's unbiased std (numpy reference, float64)."""
    sae = am.SAE(am.SAEConfig(d_in=16, d_sae=32, activation="abstopk", k=4, device="cpu", dtype="float64", seed=0,
                              hook_layer=0, input_scale=0.5, input_unit_norm=True)).eval()
    x = X.double() * torch.linspace(0.5, 3.0, len(X), dtype=torch.float64)[:, None] + 1.0  # σ differs per token
    with torch.no_grad():
        z = sae.encode(x).numpy()
    sd = x.numpy().std(1, ddof=1, keepdims=True)
    W = sae.W_dec.detach().numpy() / 0.5
    two = ex.clamp_latents(sae, {5: 2.0, 9: -1.5})(x).numpy()
    expected = x.numpy() + sd * ((2.0 - z[:, 5:6]) * W[5] + (-1.5 - z[:, 9:10]) * W[9])
    np.testing.assert_allclose(two, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ex.clamp_latents(sae, {5: 2.0})(x), St.clamp_latent(sae, 5, 2.0)(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="x=None"):
        ex.dim_method(torch.ones(16), sae, 3, 1.0)
    u = torch.randn(16, generator=torch.Generator().manual_seed(2))
    delta = ex.dim_method(u, sae, 3, 1.0, x=x)(2.0)(x) - x
    assert float(delta[0].norm()) == pytest.approx(2.0 * sd.mean() * np.linalg.norm(W[3]), rel=1e-6)  # v in float32


def test_steering_methods_move_x_as_documented():
    sae, q = _sae(), 1.7
    with torch.no_grad():
        z = sae.encode(X)
    # clamp_method: the latent is set to o·m·q
    for o in (1, -1):
        torch.testing.assert_close(ex.clamp_method(sae, 3, q, o)(-2.0)(X), St.clamp_latent(sae, 3, -2.0 * o * q)(X))
    # pair_clamp_method: m >= 0 sets (a, b) to (m q_a, 0), m < 0 to (0, |m| q_b)
    pair = ex.pair_clamp_method(sae, 3, 8, q, 2 * q)
    torch.testing.assert_close(pair(1.5)(X), ex.clamp_latents(sae, {3: 1.5 * q, 8: 0.0})(X))
    torch.testing.assert_close(pair(-0.5)(X), ex.clamp_latents(sae, {3: 0.0, 8: 0.5 * 2 * q})(X))
    torch.testing.assert_close(pair(0.0)(X), X + (0 - z[:, 3:4]) * St.decoder_direction(sae, 3)
                               + (0 - z[:, 8:9]) * St.decoder_direction(sae, 8), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="must differ"):
        ex.pair_clamp_method(sae, 3, 3, q, q)
    # add_latent_method: x + o·m·q·d_i at every row, whatever z_i is (computed by hand from W_dec and s)
    d8 = sae.W_dec[8].detach() / sae.cfg.input_scale
    for o in (1, -1):
        torch.testing.assert_close(ex.add_latent_method(sae, 8, q, o)(-1.5)(X), X + o * (-1.5) * q * d8)
    # dim_method: a constant move of length |m| q ||d_i|| along the direction
    u = torch.randn(16, generator=torch.Generator().manual_seed(2))
    delta = ex.dim_method(u, sae, 3, q)(-2.0)(X) - X
    norm_di = float(St.decoder_direction(sae, 3).norm())
    assert torch.allclose(delta, delta[:1].expand_as(delta))
    assert float(delta[0].norm()) == pytest.approx(2.0 * q * norm_di, rel=1e-5)
    assert float(torch.nn.functional.cosine_similarity(delta[0], u, dim=0)) == pytest.approx(-1.0, abs=1e-6)


def test_latent_scale_is_a_quantile_of_the_non_zero_codes():
    sae = _sae()
    with torch.no_grad():
        z = sae.encode(X)[:, 6]
    s = ex.latent_scale(sae, 6, X, quantile=0.5, batch_size=7)
    nz = z[z != 0].abs()
    assert s["fired"] and s["q"] == pytest.approx(float(nz.quantile(0.5)))
    assert s["max_abs"] == pytest.approx(float(nz.max()))
    assert s["fires_on"] == pytest.approx(float((z != 0).double().mean()))
    assert s["positive"] + s["negative"] == pytest.approx(s["fires_on"])
    assert 0 < s["negative"] < s["fires_on"]  # an AbsTopK latent with both signs here
    dead = _sae()
    with torch.no_grad():  # u_1 = 0 on every row, so z_1 = 0 whether or not the top-k picks it
        dead.W_enc[:, 1] = 0.0
        dead.b_enc[1] = 0.0
    never = ex.latent_scale(dead, 1, X)
    assert never["fired"] is False and never["q"] == 1.0 and never["fires_on"] == 0.0
    with pytest.raises(ValueError, match="quantile"):
        ex.latent_scale(sae, 6, X, quantile=0.0)


def test_curves_and_generations_are_the_steering_module_s(tiny_gpt2):
    loaded = tiny_gpt2
    sae = _sae(d_in=loaded.info.d_model, d_sae=48, layer=1)
    prompts, pairs = ["The king and the", "A man and a"], [("woman", "man"), ("queen", "king")]
    make = ex.clamp_method(sae, 4, 2.0, -1)
    curves = ex.steering_curves(loaded, {"latent": make}, [-1.0, 0.0, 1.0], prompts=prompts, pairs=pairs)
    ref = St.logit_diff_curve(loaded, make, [-1.0, 0.0, 1.0], prompts=prompts, pairs=pairs)
    assert curves["latent"]["multiples"] == [-1.0, 0.0, 1.0]
    assert curves["latent"]["log_odds"] == pytest.approx(ref.log_odds.tolist())
    rows = ex.generation_rows(loaded, prompts[:1], {"latent": make}, [-1.0, 1.0], max_new_tokens=3)
    assert [(r["method"], r["m"]) for r in rows] == [("none", 0.0), ("latent", -1.0), ("latent", 1.0)]
    assert rows[0]["continuation"] == St.generate_with(loaded, prompts[0], None, 3)
    assert rows[2]["continuation"] == St.generate_with(loaded, prompts[0], make(1.0), 3)


def test_chapter_saes_find_the_reproduce_directories(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    cfg = ReproduceConfig(model=str(tiny_gpt2_dir), layer=1, n_tokens=600, context_length=32, chunk_offsets=(0,),
                          d_sae=24, k=3, train_tokens=512, batch_size=128, heldout_tokens=100)
    cs = am.runs.reproduce.chapter_saes(cfg, ("abstopk", "topk"), loaded=tiny_gpt2, runs_root=tmp_path)
    # what reproduce() computes for the same config, written out independently
    spec = HarvestSpec(cfg.model, cfg.layer, cfg.n_tokens, cfg.context_length, chunk_offsets=cfg.chunk_offsets)
    assert cs.acts_dir == spec.directory(tmp_path)
    held = HarvestSpec(cfg.model, cfg.layer, cfg.heldout_tokens, cfg.context_length, split="heldout", chunk_offsets=(0,))
    assert cs.held_dir == held.directory(tmp_path) and cs.x_held.shape == (100, tiny_gpt2.info.d_model)
    manifest = am.lm.shards.read_manifest(cs.acts_dir)
    for activation in ("abstopk", "topk"):
        sae_cfg = am.SAEConfig(d_in=tiny_gpt2.info.d_model, d_sae=24, activation=activation, k=3, seed=cfg.seed)
        sae_cfg = dataclasses.replace(sae_cfg, model_name=manifest["model"], hook_name=manifest["hook_name"],
                                      hook_layer=manifest["layer"], context_size=manifest["context_length"])
        kw = {"n_tokens": cfg.train_tokens, "batch_size": cfg.batch_size, "seed": cfg.seed}
        assert cs.dirs[activation] == sae_dir(cs.acts_dir, sae_cfg, kw, tmp_path)
    again = am.runs.reproduce.chapter_saes(cfg, ("topk",), loaded=tiny_gpt2, runs_root=tmp_path)  # reused, not retrained
    assert again.histories["topk"]["wall_time_s"] == cs.histories["topk"]["wall_time_s"]
    assert torch.equal(again.saes["topk"].W_dec, cs.saes["topk"].W_dec)
    assert am.runs.reproduce.replace_model(cfg, None) is cfg and am.runs.reproduce.replace_model(cfg, "other").model == "other"


def test_shipped_saes_load_the_shipped_files_and_harvest_only_the_heldout(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    cfg = ReproduceConfig(model=str(tiny_gpt2_dir), layer=1, n_tokens=600, context_length=32, chunk_offsets=(0,),
                          d_sae=24, k=3, train_tokens=512, batch_size=128, heldout_tokens=100)
    trained = am.runs.reproduce.chapter_saes(cfg, ("abstopk", "topk"), loaded=tiny_gpt2, runs_root=tmp_path / "train")
    root = tmp_path / "pretrained"
    for a, sae in trained.saes.items():
        name = am.runs.reproduce.shipped_name(cfg, a)
        assert name == f"{tiny_gpt2_dir.name}-L1-{a}-24-k3"
        am.pretrained.ship(sae, name, root, {"trained": {"n_steps": 4, "batch_size": 128, "n_tokens": 512, "seed": 0}},
                           dtype="float32")
    runs = tmp_path / "fresh"
    cs = am.runs.reproduce.shipped_saes(cfg, ("abstopk", "topk"), loaded=tiny_gpt2, runs_root=runs, pretrained_root=root)
    assert cs.acts_dir is None and not (runs / "acts" / trained.acts_dir.name).exists()  # no training harvest
    held = HarvestSpec(cfg.model, cfg.layer, cfg.heldout_tokens, cfg.context_length, split="heldout", chunk_offsets=(0,))
    assert cs.held_dir == held.directory(runs)
    torch.testing.assert_close(cs.x_held, trained.x_held, rtol=0, atol=0)  # the same text, the same model
    x = trained.x_held
    for a in ("abstopk", "topk"):
        assert cs.dirs[a] == root / am.runs.reproduce.shipped_name(cfg, a)
        assert cs.histories[a]["trained"]["n_steps"] == 4 and cs.histories[a]["activation"] == a
        # float32 SAELens round trip: the input scale is folded into the weights, one rounding per weight
        torch.testing.assert_close(cs.saes[a](x), trained.saes[a](x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"no shipped SAE named .*k5.*RETRAIN = True"):
        am.runs.reproduce.shipped_saes(cfg, ("abstopk",), k=5, loaded=tiny_gpt2, runs_root=runs, pretrained_root=root)
    # the chapters' one-call loader: the same SAEs, one line per SAE with its held-out FVU
    from abstopk_mini.chapters import style

    for retrain, kw, made, label in (
            (False, {"runs_root": runs, "pretrained_root": root}, "4 steps of batch 128, 512 tokens, seed 0", style.label),
            (True, {"runs_root": tmp_path / "train"}, "trained here", str)):  # runs names an activation; the book labels it
        lines = []
        got = am.runs.reproduce.study_saes(cfg, retrain, loaded=tiny_gpt2, out=lines.append,
                                           **kw, **({"label": label} if label is not str else {}))
        assert len(lines) == 3 and lines[2].startswith("wall times (s): {'load_model_s'")
        for line, a in zip(lines, ("abstopk", "topk")):
            fvu = am.evaluate.evaluate_sae(got.saes[a], got.x_held)["fvu"]
            assert line.lstrip().startswith(f"{label(a)}: held-out FVU {fvu:.4f}, L0 ")
            assert made in line


def test_study_config_reads_retrain_from_the_environment(monkeypatch):
    monkeypatch.delenv("ABSTOPK_RETRAIN", raising=False)
    retrain, cfg = am.runs.reproduce.study_config("gemma-3-270m", quick=True)
    assert not retrain and cfg == ReproduceConfig(heldout_tokens=4_000)
    assert am.runs.reproduce.study_config("gemma-3-270m")[1].heldout_tokens == 50_000
    monkeypatch.setenv("ABSTOPK_RETRAIN", "1")
    assert am.runs.reproduce.study_config("gemma-3-270m", quick=True) == (True, ReproduceConfig.quick())
    assert am.runs.reproduce.study_config("gemma-3-270m", retrain=False)[0] is False
    retrain, cfg = am.runs.reproduce.study_config("gpt2", retrain=False)  # no shipped SAEs for another model
    assert retrain and cfg == ReproduceConfig(model="gpt2")


def test_preact_ranking_against_a_per_latent_loop():
    from test_plots_concepts import PAIRS, _word_acts

    wa = _word_acts()
    sae = am.SAE(am.SAEConfig(d_in=wa.acts.shape[-1], d_sae=20, activation="abstopk", k=2, device="cpu", seed=3)).eval()
    train, test = PAIRS[:3], PAIRS[3:]
    rows = ex.preact_ranking(sae, wa, train, test, top=4)

    def samples(pairs, k):
        x = wa.acts[[wa.words.index(p[k]) for p in pairs]].reshape(-1, wa.acts.shape[-1])
        with torch.no_grad():
            return sae.pre_acts(x), sae.encode(x)

    def sign_acc(va, vb):  # balanced; a zero is a coin flip
        score = lambda v, want: ((torch.sign(v) == want).double() + 0.5 * (v == 0).double()).mean()  # noqa: E731
        return float((score(va, 1) + score(vb, -1)) / 2)

    (ua, _), (ub, _) = samples(train, 0), samples(train, 1)
    (uta, zta), (utb, ztb) = samples(test, 0), samples(test, 1)
    train_acc = [max(sign_acc(ua[:, j], ub[:, j]), sign_acc(-ua[:, j], -ub[:, j])) for j in range(20)]
    chosen = [r["latent"] for r in rows]
    assert len(set(chosen)) == 4
    assert [train_acc[j] for j in chosen] == pytest.approx(sorted(train_acc, reverse=True)[:4])  # ties may swap
    for r in rows:
        j = r["latent"]
        o = 1 if sign_acc(ua[:, j], ub[:, j]) >= 0.5 else -1
        assert r["train_preact_sign"] == pytest.approx(train_acc[j])
        assert r["test_preact_sign"] == pytest.approx(sign_acc(o * uta[:, j], o * utb[:, j]))
        assert r["test_code_sign"] == pytest.approx(sign_acc(o * zta[:, j], o * ztb[:, j]))
        assert r["coverage_b"] == pytest.approx(float((ztb[:, j] != 0).double().mean()))
    assert rows[0]["train_preact_sign"] > 0.8  # the planted axis shows in some pre-activation


def test_reproduce_summary_separates_run_time_from_training_time():
    from abstopk_mini.runs.reproduce import _summary

    row = {"name": "topk-k32", "fvu": 0.0756, "l0": 32.0, "dead_frac": 0.114, "bidirectional_frac": 0.0, "splice_ce_orig": 2.9,
           "splice_ce_sae": 3.7, "splice_kl_sae": 0.89, "splice_loss_recovered_zero": 0.94, "splice_loss_recovered_mean": 0.84}
    report = {"settings": {"n_tokens": 1_200_000, "chunk_offsets": [0, 64], "d_sae": 4096, "train_tokens": 2_400_000,
                           "batch_size": 4096},
              "ran_on": {"model": "m", "hook_name": "blocks.6.hook_resid_post", "torch": "2", "device": "cpu", "threads": 1},
              "harvest": {"heldout_tokens": 50_000}, "gender": {}, "steering": None, "timings": {"total_s": 600.0},
              "saes": [dict(row, train_wall_s=1800.0), dict(row, name="abstopk-k32", train_wall_s=1200.0)]}
    text = _summary(report, [])
    assert "Total time 10.0 min; the 2 SAEs' own training took 50.0 min" in text
    assert "| topk-k32 | 0.0756 | 32 | 11.4 |" in text


def test_the_report_layer_draws_the_reproduce_figures(tmp_path):
    """reproduce (runs) computes and writes records; the figures are drawn from its report by the
    report layer (plots_lm.report_figures, which the CLI hands to it) and linked from summary.md."""
    from abstopk_mini.chapters import plots_lm
    from abstopk_mini.runs.reproduce import _summary

    rows = [{"name": f"{a}-k{k}", "activation": a, "k": k, "l0": float(k), "fvu": f, "dead_frac": 0.1, "bidirectional_frac": 0.0}
            for a, k, f in (("topk", 8, 0.2), ("topk", 16, 0.15), ("abstopk", 8, 0.18), ("abstopk", 16, 0.14), ("relu", 16, 0.3))]
    gender = {"abstopk-k16": {"sign_accuracy": 0.9, "threshold_accuracy": 0.8, "best_pair_accuracy": 0.85, "dim_test_accuracy": 0.95}}
    curve = {"values": [-1.0, 0.0, 1.0], "log_odds": [-0.5, 0.0, 0.6]}
    report = {"settings": {"model": "m", "layer": 1, "d_sae": 64}, "saes": rows, "gender": gender,
              "steering": {"latent": 3, "clamp": curve, "dim": curve}}
    names = plots_lm.report_figures(report, tmp_path)
    assert names == ["fvu_l0.png", "k_sweep.png", "gender.png", "steering.png"]
    assert all((tmp_path / n).read_bytes().startswith(b"\x89PNG") for n in names)
    assert plots_lm.report_figures(report | {"gender": {}, "steering": {"skipped": "no pair"}}, tmp_path / ".") == names[:2]
    report |= {"ran_on": {"model": "m", "hook_name": "h", "torch": "2", "device": "cpu", "threads": 1},
               "harvest": {"heldout_tokens": 10}, "timings": {"total_s": 60.0},
               "settings": report["settings"] | {"n_tokens": 100, "chunk_offsets": [0], "train_tokens": 200, "batch_size": 8}}
    report["saes"] = [dict(r, train_wall_s=1.0) for r in rows]
    report["gender"], report["steering"] = {}, None
    assert "![gender.png](gender.png)" in _summary(report, names)
