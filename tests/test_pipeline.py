"""Content-addressed pipeline steps and their CLI commands (offline, on the tiny GPT-2)."""

import json

import pytest

import abstopk_mini as am
from abstopk_mini.cli import main as cli_main
from abstopk_mini.runs.store import HarvestSpec, harvest_spec, train_on_harvest


@pytest.fixture
def spec(tiny_gpt2_dir):
    return HarvestSpec(model=str(tiny_gpt2_dir), layer=1, n_tokens=3000, context_length=32, sources=("lee",),
                       chunk_offsets=(0,))


def test_harvest_is_reused_not_redone(spec, tiny_gpt2, tmp_path):
    out = harvest_spec(spec, tmp_path, loaded=tiny_gpt2, progress=False)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert harvest_spec(spec, tmp_path, loaded=None, progress=False) == out  # no model load needed
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    other = HarvestSpec(**{**spec.__dict__, "layer": 0})
    assert other.directory(tmp_path) != out


def test_training_is_reused_and_records_provenance(spec, tiny_gpt2, tmp_path):
    acts = harvest_spec(spec, tmp_path, loaded=tiny_gpt2, progress=False)
    cfg = am.SAEConfig(d_in=32, d_sae=64, activation="abstopk", k=4, device="cpu")
    sae, hist, path = train_on_harvest(acts, cfg, tmp_path, progress=False, n_tokens=2048, batch_size=256)
    assert path.parent == tmp_path / "saes" and path.name.startswith("abstopk-64-k4-")
    assert sae.cfg.hook_name == "blocks.1.hook_resid_post" and sae.cfg.hook_layer == 1
    assert not (path / "checkpoint" / "checkpoint.safetensors").exists()
    again, hist2, path2 = train_on_harvest(acts, cfg, tmp_path, progress=False, n_tokens=2048, batch_size=256)
    assert path2 == path and hist2["wall_time_s"] == hist["wall_time_s"]
    assert all((a == b).all() for a, b in zip(sae.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="d_in=32"):
        train_on_harvest(acts, am.SAEConfig(d_in=640, d_sae=64, k=4), tmp_path, progress=False)


def test_cli_harvest_and_train_print_one_json_object(tiny_gpt2_dir, tmp_path, capsys):
    assert cli_main(["harvest", "--model", str(tiny_gpt2_dir), "--layer", "1", "--tokens", "2000", "--context", "32",
                     "--sources", "lee", "--offsets", "0", "--runs-dir", str(tmp_path), "--json"]) == 0
    h = json.loads(capsys.readouterr().out)
    assert h["tokens"] == 2000 and h["hook_name"] == "blocks.1.hook_resid_post"
    assert cli_main(["train", "--acts", h["dir"], "--activation", "topk", "--d-sae", "64", "--k", "4", "--tokens", "1024",
                     "--batch-size", "256", "--runs-dir", str(tmp_path), "--json"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["final_l0"] <= 4 and t["n_tokens"] == 1024


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    assert cli_main(["train", "--acts", str(tmp_path / "nothing"), "--json"]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_cli_concepts_reports_the_headline_fields(spec, tiny_gpt2, tiny_gpt2_dir, tmp_path, capsys):
    acts = harvest_spec(spec, tmp_path, loaded=tiny_gpt2, progress=False)
    cfg = am.SAEConfig(d_in=32, d_sae=64, activation="abstopk", k=4, device="cpu")
    _, _, sae_path = train_on_harvest(acts, cfg, tmp_path, progress=False, n_tokens=1024, batch_size=256)
    test_file = tmp_path / "test_pairs.txt"
    test_file.write_text("bull cow\nrooster hen\n")
    args = ["concepts", "--sae", str(sae_path), "--model", str(tiny_gpt2_dir), "--test-pairs", str(test_file), "--json"]
    assert cli_main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"best_latent", "test_accuracy", "dim_test_accuracy"} <= set(report)
    assert report["test_pairs"] == [["bull", "cow"], ["rooster", "hen"]]
    assert 0.0 <= report["test_accuracy"] <= 1.0 and 0 <= report["best_latent"] < 64
    # an SAE is refused on another model than the one it was trained on
    assert cli_main(["concepts", "--sae", str(sae_path), "--model", "gemma-3-270m", "--json"]) == 2
    assert "was trained on" in capsys.readouterr().err


def test_records_name_run_folders_relative_to_the_runs_directory(tmp_path, monkeypatch):
    from abstopk_mini.runs.store import relative_to_runs

    run = tmp_path / "runs" / "saes" / "topk-4096-k32-ca08a90bb5"
    assert relative_to_runs(run, tmp_path / "runs") == "saes/topk-4096-k32-ca08a90bb5"
    monkeypatch.setenv("ABSTOPK_RUNS", str(tmp_path / "runs"))
    assert relative_to_runs(run) == "saes/topk-4096-k32-ca08a90bb5"  # root from $ABSTOPK_RUNS
    assert relative_to_runs(tmp_path / "elsewhere" / "sae") == "sae"  # outside: its name, never a machine path
