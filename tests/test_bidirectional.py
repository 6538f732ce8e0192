"""The bidirectional runner: occurrences, the scan, top contexts and steering controls for the
TopK / AbsTopK pairs of a sweep stage, one record per seed (issue 14, items 5 and 6)."""

import json

import pytest
import torch

from abstopk_mini.runs import bidirectional as B
from abstopk_mini.runs import sweep
from abstopk_mini.cli import main as cli_main

from test_sweep import tiny_config


def test_pair_records_groups_by_seed_and_refuses_two_of_a_kind():
    recs = [{"stage": "a", "activation": act, "seed": s} for s in (0, 1) for act in ("topk", "abstopk")]
    recs.append({"stage": "b", "activation": "topk", "seed": 2})
    assert sorted(B.pair_records(recs, ["a"])) == [0, 1]
    assert B.pair_records(recs, ["a", "b"]).keys() == {0, 1}  # seed 2 has no AbsTopK: left out
    with pytest.raises(ValueError, match="two topk SAEs of seed 0"):
        B.pair_records(recs + [{"stage": "b", "activation": "topk", "seed": 0}], ["a", "b"])


def test_runner_on_the_tiny_model(tiny_gpt2, tiny_gpt2_dir, tmp_path, capsys):
    raw = tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", seeds=[0])
    raw["harvest"]["sources"] = ["lee"]
    sweep.run_sweep(raw, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    with pytest.raises(ValueError, match="not in the config's stages"):
        B.run_bidirectional(raw, ["nope"], runs_root=tmp_path, loaded=tiny_gpt2)
    out = tmp_path / "bidir.jsonl"
    (rec,) = B.run_bidirectional(raw, ["g"], results=out, runs_root=tmp_path, loaded=tiny_gpt2, context_tokens=2000,
                                 top_n=5, n_random=1, max_per_word=20)
    assert json.loads(out.read_text().splitlines()[0])["seed"] == 0
    assert rec["schema"] == B.SCHEMA and set(rec["saes"]) == {"topk", "abstopk"}
    nat = rec["natural"]["abstopk"]
    assert nat["choose_on"] == "train_text" and nat["n_test"] == nat["n_occurrences"] > 0
    assert rec["scan"]["topk"]["signed"] is False and rec["scan"]["abstopk"]["signed"] is True
    # the steering record: every control at every value, clamp values in units of q
    st = rec["steering"]
    assert st["methods"][:3] == ["abstopk_clamp", "topk_add", "dim"] and len(st["methods"]) == 5
    assert st["values"] == pytest.approx([v * st["q"] for v in B.VALUES], rel=1e-12)
    assert torch.tensor(st["shift"]).shape == (5, len(B.VALUES))
    # matched norm: every added direction moves the residual by as much as the clamp's decoder row
    norms = {k: v["norm"] for k, v in st["methods_info"].items() if "norm" in v}
    assert len(set(round(n, 9) for n in norms.values())) == 1
    assert {"abstopk", "topk_male", "topk_female"} == set(rec["contexts"])
    # the chapter's tables and figure read the record
    from abstopk_mini.chapters import plots_verdict as pv

    nt = pv.natural_table([rec])
    assert [(r["SAE"], r["latent"]) for r in nt.rows][0] == ("AbsTopK", nat["best_latent"])
    assert "strict" in nt.columns and "strict" not in nt.key and "pair share" in nt.key  # the page shows the quoted columns
    assert len(pv.contexts_table(rec).rows) == 6 and len(pv.word_count_table(rec).rows) >= 1
    ct = pv.controls_table(rec)
    assert ct.rows[0]["method"] == "AbsTopK latent clamped"
    assert ct.rows[0][f"shift at {B.VALUES[-1]:+g} q"] == st["shift"][0][-1]
    assert pv.controls_figure(rec)._repr_png_()[:4] == b"\x89PNG"
    # the CLI writes the same kind of record
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(raw))
    assert cli_main(["bidirectional", "--config", str(cfg_path), "--stages", "g", "--runs-dir", str(tmp_path),
                     "--context-tokens", "1000", "--top-n", "3", "--max-per-word", "20", "--json"]) == 0
    (cli_rec,) = json.loads(capsys.readouterr().out)["records"]
    assert cli_rec["natural"]["abstopk"]["best_latent"] == nat["best_latent"]  # same inputs, same choice
    assert cli_main(["bidirectional", "--config", str(cfg_path), "--stages", "g", "--top-n", "0"]) == 2
    assert "--top-n" in capsys.readouterr().err
