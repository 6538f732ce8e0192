"""The budget runner: three readings of every top-k SAE (and snapshot) of sweep stages, one record per SAE."""
import json

import pytest

from abstopk_mini.budget import token_budget
from abstopk_mini.lm.shards import load_activations
from abstopk_mini.runs import budget as B
from abstopk_mini.runs import sweep
from abstopk_mini.cli import main as cli_main
from abstopk_mini.runs.store import load_snapshots
from abstopk_mini.sae import SAE

from test_sweep import tiny_config


@pytest.fixture(scope="module")
def swept(tiny_gpt2, tiny_gpt2_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    raw = tiny_config(tiny_gpt2_dir, tmp / "r.jsonl", activations=["abstopk", "batchabstopk"], batch_sizes=[64],
                      snapshot_steps=[4])
    raw["eval"]["splice_tokens"] = 0
    sweep.run_sweep(raw, runs_root=tmp, loaded=tiny_gpt2, progress=False)
    return raw, tmp


def test_records_read_each_step_three_ways(swept, tiny_gpt2):
    raw, tmp = swept
    with pytest.raises(ValueError, match="not in the config's stages"):
        B.run_budget(raw, ["nope"], runs_root=tmp)
    with pytest.raises(ValueError, match="eval_batch_size"):
        B.run_budget(raw, ["g"], runs_root=tmp, eval_batch_size=0)
    results = tmp / "b.jsonl"
    recs = B.run_budget(raw, ["g"], results=results, runs_root=tmp, eval_batch_size=100)  # 600 held-out = 6 blocks
    assert sorted(r["activation"] for r in recs) == ["abstopk", "batchabstopk"]
    assert [json.loads(line)["sae"]["key"] for line in results.read_text().splitlines()] == [r["sae"]["key"] for r in recs]
    cfg = sweep.load_config(raw)
    held = load_activations(cfg.harvest_spec(1, "heldout").directory(tmp))
    assert len(held) == 600
    by_key = {r["key"]: r for r in sweep.read_results(cfg.results_path)}
    for r in recs:
        sweep_rec = by_key[r["sae"]["key"]]
        assert r["schema"] == B.SCHEMA and r["settings"]["heldout_tokens"] == 600
        assert [s["step"] for s in r["steps"]] == [4, 16]  # the snapshot, then the final SAE (1024 tokens / 64)
        run_dir = sweep.record_path(sweep_rec["provenance"]["sae_dir"], tmp)
        final = token_budget(SAE.load(run_dir, device="cpu"), held, 100)
        assert r["steps"][-1]["batch"] == final["batch"]
        snap = token_budget(load_snapshots(run_dir)[0][2], held, 100)
        assert r["steps"][0]["row"] == snap["row"]
        # the SAE's own inference is what the sweep measured (threshold for the batch SAE, k per row for AbsTopK)
        own = "threshold" if r["activation"] == "batchabstopk" else "row"
        assert r["steps"][-1][own]["fvu"] == pytest.approx(sweep_rec["heldout"]["fvu"], rel=1e-4)
        assert r["steps"][-1][own]["l0_mean"] == pytest.approx(sweep_rec["heldout"]["l0"], rel=1e-5)
        assert r["steps"][-1]["batch"]["l0_mean"] == pytest.approx(4.0)  # k·B non-zeros per block of B


def test_cli_budget(swept, tmp_path, capsys):
    raw, tmp = swept
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(raw))
    assert cli_main(["budget", "--config", str(cfg), "--stages", "g", "--runs-dir", str(tmp), "--batch", "50",
                     "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["records"]
    assert {r["settings"]["eval_batch_size"] for r in recs} == {50}
    assert cli_main(["budget", "--config", str(cfg), "--stages", "g", "--runs-dir", str(tmp), "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err


def test_dead_profile_records_read_each_step(swept, tmp_path, capsys):
    from abstopk_mini.dead import latent_profile
    from abstopk_mini.runs import dead as D

    raw, tmp = swept
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        D.run_dead_profile(raw, ["g"], runs_root=tmp, batch_size=0)
    results = tmp_path / "d.jsonl"
    recs = D.run_dead_profile(raw, ["g"], results=results, runs_root=tmp, batch_size=128, heldout_tokens=500)
    assert [r["activation"] for r in recs] == ["abstopk"]  # per-token SAEs only: batchabstopk has no per-token line
    assert [json.loads(line)["schema"] for line in results.read_text().splitlines()] == [D.SCHEMA]
    r = recs[0]
    cfg = sweep.load_config(raw)
    held = load_activations(cfg.harvest_spec(1, "heldout").directory(tmp), 500)
    sweep_rec = next(s for s in sweep.read_results(cfg.results_path) if s["key"] == r["sae"]["key"])
    run_dir = sweep.record_path(sweep_rec["provenance"]["sae_dir"], tmp)
    assert [s["step"] for s in r["steps"]] == [4, 16] and r["settings"]["heldout_tokens"] == 500
    assert r["sae"]["dead_tokens"] == sweep_rec["train"]["dead_tokens"]
    want = latent_profile(SAE.load(run_dir, device="cpu"), held, 128)  # the same blocks: the same sums
    assert {k: v for k, v in r["steps"][-1].items() if k not in ("step", "tokens")} == want
    assert r["steps"][0]["dead_frac"] == latent_profile(load_snapshots(run_dir)[0][2], held, 128)["dead_frac"]
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps(raw))
    assert cli_main(["dead", "--config", str(cfg_file), "--stages", "g", "--runs-dir", str(tmp), "--tokens", "300"]) == 0
    assert "abstopk default seed 0 (16 steps):" in capsys.readouterr().out
    assert cli_main(["dead", "--config", str(cfg_file), "--stages", "g", "--runs-dir", str(tmp), "--tokens", "0"]) == 2
    assert "--tokens" in capsys.readouterr().err
