"""``python -m abstopk_mini bench`` end to end on the tiny random GPT-2, and its refusals of bad input."""

from __future__ import annotations

import json

import pytest

import abstopk_mini as am
from abstopk_mini.cli import main as cli_main
from abstopk_mini.saebench import first_letter as FL


def _sae(path, model_dir, layer=1, activation="abstopk"):
    cfg = am.SAEConfig(d_in=32, d_sae=48, activation=activation, k=4, device="cpu", model_name=str(model_dir),
                       hook_layer=layer, hook_name=f"blocks.{layer}.hook_resid_post")
    am.SAE(cfg).save(path)
    return str(path)


def test_bench_writes_one_record_per_sae(tiny_gpt2_dir, tmp_path, capsys):
    saes = [_sae(tmp_path / a, tiny_gpt2_dir, activation=a) for a in ("abstopk", "topk")]
    results = tmp_path / "bench.jsonl"
    rc = cli_main(["bench", "--sae", *saes, "--n-words", "260", "--splits", "2", "--ks", "1", "2", "--icl-examples", "2",
                   "--results", str(results), "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["activation"] for r in records] == ["abstopk", "topk"]
    assert json.loads(out)["records"][0]["sae"] == "abstopk"  # outside the runs directory: by its folder's name
    r = records[0]
    assert set(r["absorption"]) == {"signed", "split"} and len(r["absorption"]["split"]["letters"]) == 26
    assert set(r["sparse_probing"]) == {"sentiment", "newsgroups"}
    probe = r["sparse_probing"]["sentiment"]
    assert set(probe["sae"]) == {"1", "2"} and 0 <= probe["sae"]["1"]["mean"] <= 1 and probe["splits"] == 2
    assert r["made"] == {"seed": 0, "recipe": "ours"}
    assert r["settings"]["n_words"] == 260 and r["provenance"]["wall_s"] > 0
    # a TopK code is >= 0, so pooling z or |z| is the same probe
    t = records[1]["sparse_probing"]["sentiment"]
    assert t["sae"] == t["sae_abs"]
    # TPP on the four classes of both tasks, SAEBench's N up to the width (48 latents), both views
    tpp = r["tpp"]["split"]
    assert len(tpp["classes"]) == 4 and list(tpp["overall"]) == ["2", "5", "10", "20"]
    assert all(-1 <= v["total"]["mean"] <= 1 for v in tpp["overall"].values())
    assert records[1]["tpp"]["split"]["clean_accuracy"] == records[1]["tpp"]["signed"]["clean_accuracy"]


def test_word_position_is_the_words_last_token(tiny_gpt2):
    """The tiny tokenizer splits the template differently from Gemma's: the position comes from offsets."""
    tok = tiny_gpt2.tokenizer
    prompts = ["\nking has the first letter: K\nqueen has the first letter:", "\nman has the first letter: M\n garden has the first letter:"]
    seqs, where = FL.word_positions(tok, prompts)
    for prompt, ids, w in zip(prompts, seqs, where):
        word = prompt.split("\n")[-1].removesuffix(" has the first letter:")
        upto = tok.decode(ids[1:w + 1])  # BOS left out
        assert upto.endswith(word) and not tok.decode(ids[1:w]).endswith(word)


@pytest.mark.parametrize("args, contains", [
    (["--metrics", "autointerp"], "--metrics must be one or more of"),
    (["--n-words", "100"], "--n-words must be >= 260"),
    (["--ks", "0"], "--ks must be one or more ints >= 1"),
    (["--splits", "0"], "--splits"),
    (["--icl-examples", "8", "--metrics", "absorption"], "more than the model's 128 positions"),
    (["--icl-examples", "40", "--metrics", "absorption"], "need at least 41 words"),
])
def test_bench_refuses_bad_settings_in_one_line(tiny_gpt2_dir, tmp_path, capsys, args, contains):
    sae = _sae(tmp_path / "s", tiny_gpt2_dir)
    rc = cli_main(["bench", "--sae", sae, *args, "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and contains in err and "Traceback" not in err


def test_bench_refuses_saes_of_two_layers(tiny_gpt2_dir, tmp_path, capsys):
    a, b = _sae(tmp_path / "a", tiny_gpt2_dir, layer=0), _sae(tmp_path / "b", tiny_gpt2_dir, layer=1)
    rc = cli_main(["bench", "--sae", a, b, "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and "different models or layers" in err
