"""Regression tests for the CLI / fast-path / validation defects of issue 12 (3, 4, 7, 9, 11).

Each test is named after the defect it pins down and fails on the code before the fix.
"""

import copy
import json
import math
import os

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.kernels import fast
from abstopk_mini import losses
from abstopk_mini.cli import main as cli_main
from abstopk_mini.nonlinearities import K_ACTIVATIONS


# ----------------------------------------------------------------------------- defect 3: bf16/fp16 fast path
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative difference ‖a − b‖ / ‖b‖, in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("activation", K_ACTIVATIONS)
@pytest.mark.parametrize("n_dead", [0, 30, 90])  # no AuxK; AuxK on the dense dead block; AuxK sparse
def test_defect03_fast_path_trains_in_bf16_and_fp16(activation, dtype, n_dead):
    """One fast training step in half precision gives the reference path's code and gradients.

    Tolerances: bf16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 3.9e-3), fp16 11 bits. The two
    paths round their sums differently, so gradients agree to a few roundoffs: 2e-2 relative
    (norm-wise) without AuxK (measured ≤ 6.7e-3). AuxK picks the k_aux largest *rounded* scores
    among dead latents; in bf16 equal scores are common and the two paths may keep different
    members of a tie, so with AuxK the bound is 5e-2 (measured ≤ 2.9e-2).
    """
    D_IN, D_SAE, K, B = 24, 96, 5, 40
    cfg = am.SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=K, input_scale=1.7, device="cpu",
                       dtype=dtype, seed=0)
    ref = am.SAE(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        ref.b_dec.copy_(torch.randn(D_IN, generator=gen))
        ref.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
        ref.W_enc.mul_(1 + torch.rand(D_IN, D_SAE, generator=gen))
    fst = copy.deepcopy(ref)
    x = torch.randn(B, D_IN, generator=torch.Generator().manual_seed(2)).to(getattr(torch, dtype))
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(3))[:n_dead]] = True
    k_aux = 8 if n_dead != 90 else 6

    o_ref = ref.forward_train(x)
    aux_ref = losses.auxk_loss(o_ref.x_in - o_ref.x_hat, o_ref.u, ref.W_dec, dead, k_aux, ref.cfg.signed)
    (losses.mse(o_ref.x_in, o_ref.x_hat) + aux_ref).backward()
    o_fast = fast.forward_train(fst, x)  # raised "sparse_sampled_addmm ... got BFloat16" before the fix
    aux_fast = fast.auxk_loss(fst, o_fast, dead, k_aux)
    (losses.mse(o_fast.x_in, o_fast.x_hat) + aux_fast).backward()

    assert torch.equal(o_fast.code.to_dense() != 0, o_ref.z != 0)  # the same support
    assert _rel(o_fast.x_hat, o_ref.x_hat) < 2e-2
    bound = 2e-2 if n_dead == 0 else 5e-2
    ref_params = dict(ref.named_parameters())
    for name, p in fst.named_parameters():
        assert p.grad.dtype == getattr(torch, dtype)
        assert _rel(p.grad, ref_params[name].grad) < bound, name


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_defect03_train_sae_fast_bf16_matches_reference_path(dtype):
    """train_sae(fast=True) in half precision finishes and lands where fast=False lands.

    The two runs round differently at every step, so they drift apart slowly: the final FVU agrees
    to 3e-2 relative (measured 7.6e-3 in bf16, 0 in fp16 on this data).
    """
    x = torch.randn(2048, 32, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=32, d_sae=128, activation="abstopk", k=4, dtype=dtype, device="cpu")
    runs = {}
    for use_fast in (True, False):
        sae, hist = am.train_sae(cfg, x, n_tokens=8192, batch_size=256, progress=False, fast=use_fast)
        assert sae.W_dec.dtype == getattr(torch, dtype)
        assert all(torch.isfinite(p).all() for p in sae.parameters())
        runs[use_fast] = hist["fvu"][-1]
    assert 0 < runs[True] < 1
    assert abs(runs[True] - runs[False]) / runs[False] < 3e-2


# ----------------------------------------------------------------------------- shared CLI helpers
def _one_error(capsys, rc, json_out: bool = True, contains: str = "") -> dict | None:
    """Exit code 2, exactly one ``error:`` line on stderr (no traceback), and under --json one JSON
    object ``{"error", "type"}`` on stdout. Returns that object."""
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    assert contains in lines[0], lines[0]
    if not json_out:
        return None
    obj = json.loads(captured.out)
    assert set(obj) >= {"error", "type"} and obj["error"] == lines[0][len("error: "):]
    return obj


@pytest.fixture
def harvest_dir(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    from abstopk_mini.runs.store import HarvestSpec, harvest_spec

    spec = HarvestSpec(model=str(tiny_gpt2_dir), layer=1, n_tokens=2000, context_length=32, sources=("lee",),
                       chunk_offsets=(0,))
    return harvest_spec(spec, tmp_path / "runs", loaded=tiny_gpt2, progress=False)


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the argument checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(am.lm.models, "load_model", refuse)


def _train_args(acts, runs, *extra):
    return ["train", "--acts", str(acts), "--activation", "topk", "--d-sae", "64", "--k", "4", "--tokens", "1024",
            "--batch-size", "256", "--runs-dir", str(runs), "--json", *extra]


def _api_sae(path, d_in=32, layer=None):
    """An SAE trained through the API (records no hook layer unless given), saved at ``path``."""
    x = torch.randn(512, d_in, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=d_in, d_sae=64, activation="abstopk", k=4, device="cpu", hook_layer=layer)
    sae, _ = am.train_sae(cfg, x, n_tokens=512, batch_size=128, progress=False)
    sae.save(path)
    return path


# ----------------------------------------------------------------------------- defect 4: one error line
def test_defect04_offline_hub_name_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = cli_main(["harvest", "--model", "nobody-here/not-a-model", "--layer", "0", "--runs-dir", str(tmp_path), "--json"])
    obj = _one_error(capsys, rc, contains="Hugging Face hub")
    assert obj["type"] == "HubUnavailableError"


def test_defect04_hf_sources_offline_is_one_error_line(tiny_gpt2_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = cli_main(["harvest", "--model", str(tiny_gpt2_dir), "--layer", "1", "--tokens", "500", "--context", "32",
                   "--sources", "hf:nobody/none", "--runs-dir", str(tmp_path), "--json"])
    assert _one_error(capsys, rc)["type"] == "HubUnavailableError"


def test_swapped_heldout_harvest_is_one_error_line_and_writes_nothing(tiny_gpt2_dir, tmp_path, capsys):
    rc = cli_main(["harvest", "--model", str(tiny_gpt2_dir), "--layer", "1", "--tokens", "500", "--context", "32",
                   "--split", "heldout", "--augment", "gender_swap", "--runs-dir", str(tmp_path / "r"), "--json"])
    assert _one_error(capsys, rc, contains="training split only")["type"] == "ValueError"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "random"])
def test_defect04_bad_shard_is_one_error_line_naming_the_file(harvest_dir, tmp_path, capsys, damage):
    shard = harvest_dir / "shard_00000.safetensors"
    data = shard.read_bytes()
    shard.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                       "random": os.urandom(len(data))}[damage])
    obj = _one_error(capsys, cli_main(_train_args(harvest_dir, tmp_path / "r2")), contains="shard_00000.safetensors")
    assert obj["type"] == "ValueError"


@pytest.mark.parametrize("edit", ["list", "no_model", "wrong_d_model"])
def test_defect04_bad_manifest_is_one_error_line(harvest_dir, tmp_path, capsys, edit):
    path = harvest_dir / "manifest.json"
    m = json.loads(path.read_text())
    if edit == "list":
        m = [m]
    elif edit == "no_model":
        del m["model"]
    else:
        m["d_model"] = 64
    path.write_text(json.dumps(m))
    expect = {"list": "JSON list", "no_model": "'model'", "wrong_d_model": "width 64"}[edit]  # width: caught by the harvest check
    obj = _one_error(capsys, cli_main(_train_args(harvest_dir, tmp_path / "r2")), contains=expect)
    assert obj["type"] == "ValueError"


def test_defect04_cfg_json_list_is_one_error_line(tmp_path, capsys):
    path = _api_sae(tmp_path / "sae", layer=1)
    (path / "cfg.json").write_text("[1, 2]")
    obj = _one_error(capsys, cli_main(["eval", "--sae", str(path), "--json"]), contains="cfg.json")
    assert obj["type"] == "ValueError"


def test_defect04_runs_dir_that_is_a_file_is_one_error_line(harvest_dir, tmp_path, capsys, no_model_load):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _one_error(capsys, cli_main(_train_args(harvest_dir, a_file)), contains="is a file")
    rc = cli_main(["harvest", "--model", "gemma-3-270m", "--runs-dir", str(a_file), "--json"])
    _one_error(capsys, rc, contains="is a file")


def test_defect04_argparse_errors_are_one_error_line(capsys):
    obj = _one_error(capsys, cli_main(["train", "--acts", "x", "--k", "four", "--json"]), contains="--k")
    assert obj["type"] == "UsageError"


def test_defect04_unexpected_error_is_reported_as_a_bug(monkeypatch, capsys):
    import abstopk_mini.runs.jobs_store as jobs

    def broken(**settings):
        raise KeyError("oops")

    monkeypatch.setattr(jobs, "toy_benchmark", broken)
    monkeypatch.delenv("ABSTOPK_DEBUG", raising=False)
    obj = _one_error(capsys, cli_main(["toy", "--quick", "--json"]), contains="bug")
    assert obj["type"] == "KeyError" and obj["bug"] is True
    assert cli_main(["toy", "--quick", "--debug"]) == 2  # the traceback only on request
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'oops'" in err and err.splitlines()[-1].startswith("error: ")


# ----------------------------------------------------------------------------- defect 7: non-finite settings
@pytest.mark.parametrize("field, value", [("bandwidth", float("nan")), ("bandwidth", float("inf")),
                                          ("threshold_init", float("inf")), ("threshold_init", float("nan"))])
@pytest.mark.parametrize("activation", ["jumprelu", "absjumprelu"])
def test_defect07_jumprelu_nonfinite_settings_are_rejected(activation, field, value):
    with pytest.raises(ValueError, match=field):
        am.SAEConfig(d_in=8, d_sae=16, activation=activation, **{field: value})
    cls = am.nonlinearities.ACTIVATIONS[activation]
    with pytest.raises(ValueError, match=field):
        cls(16, **{field: value})


def test_defect07_diverging_training_raises_instead_of_returning_a_broken_sae():
    x = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=32, d_sae=128, activation="abstopk", k=4, device="cpu")
    with pytest.raises(FloatingPointError, match="diverged"):
        am.train_sae(cfg, x, n_tokens=16384, batch_size=256, progress=False, lr=1e4)
    # a high but workable lr (5000x the default) still trains: its mse peaks at ~42x the start
    sae, hist = am.train_sae(cfg, x, n_tokens=16384, batch_size=256, progress=False, lr=1.0, log_every=1)
    assert max(hist["mse"]) < am.train.DIVERGENCE_FACTOR * hist["mse"][0]
    assert all(torch.isfinite(p).all() for p in sae.parameters())


def test_defect07_cli_train_huge_lr_exits_2_and_caches_nothing(harvest_dir, tmp_path, capsys):
    runs = tmp_path / "r2"
    obj = _one_error(capsys, cli_main(_train_args(harvest_dir, runs, "--lr", "1e4")), contains="diverged")
    assert obj["type"] == "FloatingPointError"
    assert not list(runs.glob("saes/*/cfg.json"))


def test_defect07_steer_nonfinite_values_are_rejected(tmp_path, capsys, no_model_load):
    path = _api_sae(tmp_path / "sae", layer=1)
    rc = cli_main(["steer", "--sae", str(path), "--latent", "0", "--values=nan,inf", "--json"])
    _one_error(capsys, rc, contains="finite")
    sae = am.SAE.load(path)
    with pytest.raises(ValueError, match="finite"):
        am.lm.steering.clamp_latent(sae, 0, float("nan"))
    with pytest.raises(ValueError, match="finite"):
        am.lm.steering.add_direction(torch.ones(32), float("inf"), layer=1)


def test_defect07_outlier_row_setting_the_input_scale_is_refused():
    x = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=32, d_sae=64, activation="abstopk", k=4, device="cpu")
    bad = x.clone()
    bad[17] = 1e30
    with pytest.raises(ValueError, match=r"1 of the 4096 .*rows"):
        am.train_sae(cfg, bad, n_tokens=1024, batch_size=256, progress=False)
    # normal data: the scale is the formula's, unchanged (same expression, float64)
    sample = x.double()
    assert am.train.input_scale(sample, 32) == math.sqrt(32 / sample.pow(2).sum(-1).mean().item())
    sae, _ = am.train_sae(cfg, x, n_tokens=1024, batch_size=256, progress=False)
    # train_sae draws its own sample (another summation order): equal to float64 rounding
    assert sae.cfg.input_scale == pytest.approx(math.sqrt(32 / sample.pow(2).sum(-1).mean().item()), rel=1e-12)


# ----------------------------------------------------------------------------- defect 9: not a model
def test_defect09_directory_that_is_not_a_model_says_what_is_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FileNotFoundError, match="config.json") as info:
        am.lm.models.load_model(tmp_path, device="cpu")
    assert "tokenizer" in str(info.value) and "weights" in str(info.value)
    assert "sentencepiece" not in str(info.value)


def test_defect09_model_without_tokenizer_is_named(tiny_gpt2_dir, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(tiny_gpt2_dir, partial)
    for f in partial.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="lacks a tokenizer"):
        am.lm.models.load_model(partial, device="cpu")


# ----------------------------------------------------------------------------- defect 11: usability
def test_defect11_eval_and_steer_take_layer_for_an_api_trained_sae(tiny_gpt2_dir, tmp_path, capsys):
    path = _api_sae(tmp_path / "sae")  # no hook_layer recorded
    steer = ["steer", "--sae", str(path), "--model", str(tiny_gpt2_dir), "--latent", "3", "--values=-5,5", "--json"]
    _one_error(capsys, cli_main(steer), contains="--layer")
    assert cli_main(steer + ["--layer", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layer"] == 1 and out["values"] == [-5.0, 5.0] and all(math.isfinite(v) for v in out["log_odds"])
    ev = ["eval", "--sae", str(path), "--model", str(tiny_gpt2_dir), "--tokens", "256", "--acts-tokens", "500",
          "--runs-dir", str(tmp_path / "runs"), "--json"]
    _one_error(capsys, cli_main(ev), contains="--layer")
    assert cli_main(ev + ["--layer", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layer"] == 1 and out["splice_layer"] == 1 and math.isfinite(out["fvu"])  # SAE fit to noise: FVU ~3


def test_defect11_steer_values_starting_with_minus_both_spellings(tiny_gpt2_dir, tmp_path, capsys):
    path = _api_sae(tmp_path / "sae", layer=1)
    curves = []
    for spelling in (["--values", "-5,5"], ["--values=-5,5"]):
        assert cli_main(["steer", "--sae", str(path), "--model", str(tiny_gpt2_dir), "--latent", "3", *spelling,
                         "--json"]) == 0
        curves.append(json.loads(capsys.readouterr().out))
    assert curves[0]["values"] == curves[1]["values"] == [-5.0, 5.0]
    assert curves[0]["log_odds"] == curves[1]["log_odds"]  # the same computation twice


def test_defect11_train_drop_nonfinite_flag(harvest_dir, tmp_path, capsys):
    import hashlib

    from safetensors.torch import load_file, save_file

    from abstopk_mini.io import sha256_tensors

    shard = harvest_dir / "shard_00000.safetensors"
    tensors = load_file(str(shard))
    tensors["activations"][5, 0] = float("nan")
    save_file(tensors, str(shard))
    m = json.loads((harvest_dir / "manifest.json").read_text())  # keep the manifest's hashes true
    m["shards"][0]["sha256"] = sha256_tensors(tensors["activations"], tensors["token_ids"])
    m["content_sha256"] = hashlib.sha256("".join(s["sha256"] for s in m["shards"]).encode()).hexdigest()
    (harvest_dir / "manifest.json").write_text(json.dumps(m, indent=1))

    _one_error(capsys, cli_main(_train_args(harvest_dir, tmp_path / "r2")), contains="--drop-nonfinite")
    assert cli_main(_train_args(harvest_dir, tmp_path / "r2", "--drop-nonfinite")) == 0
    out = json.loads(capsys.readouterr().out)
    hist = json.loads((tmp_path / "r2" / "saes" / os.path.basename(out["dir"]) / "history.json").read_text())
    assert hist["n_dropped_nonfinite"] >= 1 and math.isfinite(out["final_fvu"])


def test_defect11_pairs_sharing_a_word_stay_on_one_side():
    from abstopk_mini.concepts.words import load_pairs, split_pairs
    import random

    pairs = [("his", "her"), ("him", "her"), ("king", "queen"), ("man", "woman"), ("boy", "girl"), ("uncle", "aunt")]
    for seed in range(10):
        train, test = split_pairs(pairs, 0.5, seed)
        assert sorted(train + test) == sorted(pairs) and train and test
        assert not {w for p in train for w in p} & {w for p in test for w in p}, (seed, train, test)
    with pytest.raises(ValueError, match="shared words"):
        split_pairs([("his", "her"), ("him", "her")], 0.5, 0)
    # without shared words (the built-in sets) the split is the plain seeded one, as before
    family = load_pairs("family")
    for seed in range(3):
        order = list(range(len(family)))
        random.Random(seed).shuffle(order)
        n_test = min(max(1, round(len(family) * 0.5)), len(family) - 1)
        expect = [p for i, p in enumerate(family) if i in set(order[:n_test])]
        assert split_pairs(family, 0.5, seed)[1] == expect


def test_defect11_bad_arguments_are_rejected_before_the_model_loads(tiny_gpt2_dir, tmp_path, capsys, no_model_load):
    model = str(tiny_gpt2_dir)  # 2 layers, 128 positions, read from its config.json
    runs = ["--runs-dir", str(tmp_path / "runs"), "--json"]
    for args, expect in [
        (["harvest", "--model", model, "--layer", "2"], "n_layers = 2"),
        (["harvest", "--model", model, "--layer", "-1"], "--layer"),
        (["harvest", "--model", model, "--layer", "1", "--tokens", "0"], "--tokens"),
        (["harvest", "--model", model, "--layer", "1", "--context", "1"], "--context"),
        (["harvest", "--model", model, "--layer", "1", "--context", "4096"], "128 positions"),
        (["harvest", "--model", "gemma-3-270m", "--layer", "18"], "n_layers = 18"),  # the registry, no load
        (["reproduce", "--model", "gemma-3-270m", "--layer", "40", "--quick"], "n_layers = 18"),
    ]:
        _one_error(capsys, cli_main(args + runs), contains=expect)
    sae = str(_api_sae(tmp_path / "sae", layer=1))
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("king queen\nman woman boy\n")
    for args, expect in [
        (["concepts", "--sae", sae, "--model", model, "--pairs", str(pairs)], "pairs.txt:2"),
        (["concepts", "--sae", sae, "--model", model, "--layer", "5"], "--layer"),
        (["eval", "--sae", sae, "--model", model, "--tokens", "0"], "--tokens"),
        (["eval", "--sae", sae, "--model", model, "--layer", "0"], "trained on layer 1"),
        (["steer", "--sae", sae, "--model", model, "--latent", "64"], "--latent"),
        (["steer", "--sae", sae, "--model", "gemma-3-270m", "--latent", "1"], "d_model=640"),
    ]:
        _one_error(capsys, cli_main(args + ["--json"]), contains=expect)
