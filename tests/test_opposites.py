"""The opposites runner: dashboards of the most bidirectional latents of sweep SAEs, their verdicts and
the gendered sides, one record per SAE (issue 16), on the tiny model."""

import json

import pytest

from abstopk_mini import dashboard as D
from abstopk_mini.runs import opposites as O
from abstopk_mini.runs import sweep
from abstopk_mini.cli import main as cli_main

from test_sweep import tiny_config


@pytest.fixture(scope="module")
def swept(tiny_gpt2, tiny_gpt2_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("opp")
    raw = tiny_config(tiny_gpt2_dir, tmp / "r.jsonl", seeds=[0])
    raw["harvest"]["sources"] = ["lee"]
    sweep.run_sweep(raw, runs_root=tmp, loaded=tiny_gpt2, progress=False)
    return raw, tmp


def test_runner_records_match_the_saved_dashboards(swept, tiny_gpt2):
    raw, tmp = swept
    with pytest.raises(ValueError, match="not in the config's stages"):
        O.run_opposites(raw, ["nope"], out=tmp / "d", runs_root=tmp, loaded=tiny_gpt2)
    with pytest.raises(ValueError, match="min_share"):
        O.run_opposites(raw, ["g"], out=tmp / "d", runs_root=tmp, loaded=tiny_gpt2, min_share=0)
    results = tmp / "res" / "opp.jsonl"
    recs = O.run_opposites(raw, ["g"], out=tmp / "res" / "dash", results=results, runs_root=tmp, loaded=tiny_gpt2,
                           n=6, n_top=3)
    assert [r["activation"] for r in recs] == ["abstopk", "topk"]
    assert [json.loads(line)["activation"] for line in results.read_text().splitlines()] == ["abstopk", "topk"]
    for r in recs:
        assert r["schema"] == O.SCHEMA and r["seed"] == 0
        assert r["files"]["top"] == f"dash/{r['activation']}-seed0-top6.json.gz"  # relative to the records file
        data = D.DashboardData.load(results.parent / r["files"]["top"])
        assert data.requested == r["requested"] and 0 < len(data.requested) <= 6
        assert data.sae["signed"] == (r["activation"] == "abstopk")
        # the record's verdicts are the judge's on the saved data
        assert r["judgements"] == json.loads(json.dumps([j.to_dict() for j in D.judge(data)]))
        assert r["verdicts"] == D.count_verdicts(D.judge(data)) and r["verdicts"]["n"] == len(data.requested)
        assert r["settings"]["n_top"] == 3 and r["sae"]["key"]
        # every gendered side is a latent whose dashboards were saved
        assert r["gendered_latents"] == list(dict.fromkeys(s["latent"] for s in r["gender_sides"]))
        if r["gendered_latents"]:
            g = D.DashboardData.load(results.parent / r["files"]["gender"])
            assert g.requested == r["gendered_latents"]
        assert all(s["share"] >= 0.5 for s in r["gender_sides"])


def test_cli_opposites(swept, tmp_path, capsys):
    raw, tmp = swept
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(raw))
    assert cli_main(["opposites", "--config", str(cfg), "--stages", "g", "--out", str(tmp_path / "d"),
                     "--runs-dir", str(tmp), "--n", "4", "--n-top", "2", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["records"]
    assert [r["activation"] for r in recs] == ["abstopk", "topk"] and all(r["verdicts"]["n"] <= 4 for r in recs)
    assert cli_main(["opposites", "--config", str(cfg), "--stages", "g", "--out", str(tmp_path / "d"),
                     "--min-share", "1.5"]) == 2
    assert "--min-share" in capsys.readouterr().err
