"""The sweep runner (content addressing, records, config checks) and the [D, −D] equivalence."""

import json

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.coding import doubling
from abstopk_mini.runs import sweep
from abstopk_mini.cli import main as cli_main


def tiny_config(model_dir, results, **stage):
    st = {"name": "g", "layers": [1], "widths": [64], "ks": [4], "activations": ["topk", "abstopk"], "train_tokens": [1024]}
    return {"name": "tiny", "results": str(results), "model": str(model_dir),
            "harvest": {"n_tokens": 2000, "context_length": 32, "chunk_offsets": [0], "sources": ["lee"]},
            "eval": {"heldout_tokens": 600, "splice_tokens": 48, "concepts": ["family", "sentiment"]},
            "batch_size": 256, "stages": [st | stage]}


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("patch, named", [
    ({"activations": ["topk", "abstop"]}, "stages[0].activations"),
    ({"widths": [64, 0]}, "stages[0].widths"),
    ({"ks": [4, 128]}, "stages[0].ks"),
    ({"layers": ["6"]}, "stages[0].layers"),
    ({"variants": ["centred"]}, "stages[0].variants"),
    ({"depth": [3]}, "'depth'"),
])
def test_bad_axis_values_are_named(tmp_path, patch, named):
    cfg = tiny_config(tmp_path, tmp_path / "r.jsonl", **patch)
    with pytest.raises(ValueError) as err:
        sweep.load_config(cfg)
    assert named in str(err.value)
    bad = [v for v in (list(patch.values())[0]) if v not in (["topk", "abstopk", 64, 4])]
    assert repr(bad[0]) in str(err.value) or named == "'depth'"


def test_bad_config_keys_and_files(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="'eval' key|eval key 'splice'"):
        sweep.load_config(cfg | {"eval": {"splice": 3}})
    with pytest.raises(ValueError, match="config key 'stage'"):
        sweep.load_config(cfg | {"stage": []})
    with pytest.raises(ValueError, match="no 'stages'"):
        sweep.load_config({k: v for k, v in cfg.items() if k != "stages"})
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        sweep.load_config(tmp_path / "nothing.json")


def test_stage_order_and_relative_results_path(tmp_path):
    raw = tiny_config(tmp_path, "../results/r.jsonl", layers=[6, 9], widths=[512, 1024], ks=[32, 8])
    path = tmp_path / "sweeps" / "c.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw))
    cfg = sweep.load_config(path)
    assert cfg.results_path.resolve() == (tmp_path / "results" / "r.jsonl").resolve()
    pts = [p for _, p in cfg.points()]
    # k > layer > width > activation, outermost first, in the order the config lists them
    assert [(p.k, p.layer, p.d_sae, p.activation) for p in pts[:5]] == [
        (32, 6, 512, "topk"), (32, 6, 512, "abstopk"), (32, 6, 1024, "topk"), (32, 6, 1024, "abstopk"), (32, 9, 512, "topk")]
    assert len(pts) == len(set(pts)) == 16
    keys = {cfg.point_key(p) for p in pts}
    assert len(keys) == 16


# ----------------------------------------------------------------------------- runner
REQUIRED = {"schema", "key", "sweep", "stage", "layer", "d_sae", "k", "activation", "seed", "variant", "train_tokens",
            "harvest", "heldout", "train", "concepts", "splice", "provenance"}


def test_rerun_does_nothing_and_a_new_setting_runs_only_its_point(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    results = tmp_path / "r.jsonl"
    cfg = tiny_config(tiny_gpt2_dir, results)
    out = sweep.run_sweep(cfg, runs_root=tmp_path, status_path=tmp_path / "status.txt", loaded=tiny_gpt2, progress=False)
    assert out["total"] == 2 and out["done_before"] == 0 and len(out["ran"]) == 2
    recs = sweep.read_results(results)
    assert [(r["activation"], r["k"]) for r in recs] == [("topk", 4), ("abstopk", 4)]
    for r in recs:
        assert REQUIRED <= set(r) and r["schema"] == sweep.SCHEMA
        fam = r["concepts"]["family"]
        for key in ("threshold_accuracy", "sign_accuracy", "coverage_a", "coverage_b", "preact_sign_accuracy",
                    "bidirectional", "bidirectional_share", "best_pair_accuracy", "dim_test_accuracy", "cos_to_dim",
                    "neutral_positions", "sign_latent", "best_survival"):
            assert key in fam
        assert set(r["concepts"]) == {"family", "sentiment"}
        assert 0 <= r["heldout"]["bidirectional_frac"] <= 1 and r["heldout"]["l0"] <= 4
        assert r["splice"]["n_tokens"] == 48
    assert recs[0]["heldout"]["bidirectional_frac"] == 0.0  # TopK codes are never negative
    assert "2/2 runs recorded" in (tmp_path / "status.txt").read_text()
    saes = sorted((tmp_path / "saes").glob("*-k4-*[!k]"))
    text = results.read_text()

    again = sweep.run_sweep(cfg, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    assert again["ran"] == [] and again["done_before"] == 2 and results.read_text() == text

    more = sweep.run_sweep(tiny_config(tiny_gpt2_dir, results, ks=[4, 2]), runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    assert more["total"] == 4 and more["done_before"] == 2 and len(more["ran"]) == 2
    recs = sweep.read_results(results)
    assert [(r["activation"], r["k"]) for r in recs[2:]] == [("topk", 2), ("abstopk", 2)]
    assert sorted((tmp_path / "saes").glob("*-k4-*[!k]")) == saes  # the k=4 SAEs were not trained again


def _train_gender_means(loaded) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean activation (layer 1, float64) of the male and of the female words of the family train
    pairs, recomputed here independently of the sweep's cache.  shape: -> ([d], [d])"""
    wa = am.concepts.pair_word_activations(loaded, "family", 1)
    train, _ = am.concepts.split_pairs(am.concepts.load_pairs("family"), seed=0)
    male = torch.stack([wa.acts[wa.words.index(a)] for a, _ in train]).double().mean((0, 1))
    female = torch.stack([wa.acts[wa.words.index(b)] for _, b in train]).double().mean((0, 1))
    return male, female


def test_frozen_b_dec_stays_at_the_gender_midpoint(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    cfg = sweep.load_config(tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", activations=["abstopk"],
                                        variants=["bdec_gender_mid_frozen"]))
    sweep.run_sweep(cfg, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    rec = sweep.read_results(tmp_path / "r.jsonl")[0]
    sae = am.SAE.load(sweep.record_path(rec["provenance"]["sae_dir"], tmp_path))
    male, female = _train_gender_means(tiny_gpt2)
    expected = (male + female) / 2 * sae.cfg.input_scale
    torch.testing.assert_close(sae.b_dec.detach().double(), expected, rtol=1e-5, atol=1e-5)
    assert rec["variant"] == "bdec_gender_mid_frozen" and rec["train"]["n_tokens"] == 1024


def test_midpoint_without_encoder_bias_puts_u_zero_at_the_midpoint(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    cfg = sweep.load_config(tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", activations=["abstopk"],
                                        variants=["bdec_gender_mid_frozen_no_b_enc"]))
    sweep.run_sweep(cfg, runs_root=tmp_path, loaded=tiny_gpt2, progress=False)
    rec = sweep.read_results(tmp_path / "r.jsonl")[0]
    sae = am.SAE.load(sweep.record_path(rec["provenance"]["sae_dir"], tmp_path))
    assert not sae.cfg.use_b_enc and rec["variant"] == "bdec_gender_mid_frozen_no_b_enc"
    male, female = _train_gender_means(tiny_gpt2)
    mid = (male + female) / 2
    torch.testing.assert_close(sae.b_dec.detach().double(), mid * sae.cfg.input_scale, rtol=1e-5, atol=1e-5)
    # u = (s x - b_dec) W_enc with no bias: zero at the midpoint, and odd about it
    with torch.no_grad():
        step = (male - female).float()[None] / 2
        u_mid = sae.pre_acts(mid.float()[None])
        plus, minus = sae.pre_acts(mid.float()[None] + step), sae.pre_acts(mid.float()[None] - step)
    scale = float(plus.abs().max())  # float32 of activations ~|x|: rounding relative to the largest u
    torch.testing.assert_close(u_mid, torch.zeros_like(u_mid), rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(plus, -minus, rtol=0, atol=1e-4 * scale)


def test_cli_dry_run_and_bad_config(tiny_gpt2_dir, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", ks=[4, 8])))
    assert cli_main(["sweep", "--config", str(path), "--dry-run", "--runs-dir", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total"] == 4 and out["ran"] == [] and len(out["todo"]) == 4
    path.write_text(json.dumps(tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", ks=[-1])))
    assert cli_main(["sweep", "--config", str(path), "--json"]) == 2
    assert "stages[0].ks" in capsys.readouterr().err


# ----------------------------------------------------------------------------- [D, -D]
def _random_abstopk(d=12, P=20, k=4, seed=0, dtype="float64"):
    sae = am.SAE(am.SAEConfig(d_in=d, d_sae=P, activation="abstopk", k=k, seed=seed, device="cpu", dtype=dtype,
                              input_scale=1.7))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.add_(0.3 * torch.randn(sae.W_enc.shape, generator=gen, dtype=sae.W_enc.dtype))
        sae.b_enc.copy_(0.2 * torch.randn(P, generator=gen, dtype=sae.b_enc.dtype))
        sae.b_dec.copy_(torch.randn(d, generator=gen, dtype=sae.b_dec.dtype))
    return sae.eval()


def test_doubled_topk_reconstructs_exactly_like_abstopk():
    sae = _random_abstopk()
    x = torch.randn(500, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    d2 = doubling.doubled_topk(sae)
    assert d2.cfg.activation == "topk" and d2.cfg.d_sae == 40 and d2.cfg.k == 4
    z, z2 = sae.encode(x), d2.encode(x)
    # The doubled pre-activations come from another matmul ([12, 40] instead of [12, 20]) whose
    # summation order depends on the CPU's kernels: the same 12-term fp64 sums up to rounding,
    # i.e. 1e-12 x the operands' scale |s x - b_dec| |W_enc| + |b_enc| (a wrong support: O(1)).
    scale = ((x * sae.cfg.input_scale - sae.b_dec).abs() @ sae.W_enc.abs() + sae.b_enc.abs()).max().item()
    tol = dict(rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(doubling.fold(z2), z, **tol)  # the same code, latent by latent
    assert ((z2[:, :20] != 0) & (z2[:, 20:] != 0)).sum() == 0  # never both halves of a pair
    torch.testing.assert_close(d2(x), sae(x), rtol=0, atol=1e-12)
    # the reference: brute-force the support of TopK on [u, -u] from a sort, independent of prox
    u = sae.pre_acts(x)
    both = torch.cat([u, -u], 1)
    order = both.argsort(1, descending=True)[:, :4]
    ref = torch.zeros_like(both).scatter(1, order, both.gather(1, order).clamp_min(0))
    torch.testing.assert_close(z2, ref, **tol)  # u comes from the [12, 20] matmul, z2 from the [12, 40] one
    with pytest.raises(ValueError, match="activation='abstopk'"):
        doubling.doubled_topk(am.SAE(am.SAEConfig(d_in=4, d_sae=8, activation="topk", k=2, device="cpu")))


def test_tied_doubled_topk_has_the_gradients_of_abstopk():
    sae = _random_abstopk(seed=3)
    sae.fast = False
    tied = doubling.TiedDoubledTopK(sae)
    x = torch.randn(64, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * sae.cfg.input_scale
    out = sae.forward_train(x / sae.cfg.input_scale)
    (out.x_hat - x).pow(2).sum().backward()
    _, x_hat = tied(x)
    (x_hat - x).pow(2).sum().backward()
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(tied, name).grad, getattr(sae, name).grad, rtol=1e-10, atol=1e-12)


def test_compare_training_tied_equals_abstopk_untied_drifts():
    x, _, _ = am.toy.bidirectional_data(4000, d=16, P=8, n_active=2, seed=0)
    h = doubling.compare_training(x.double(), 8, 2, n_steps=200, batch_size=128, lr=1e-2, log_every=50)
    assert h["steps"] == [0, 50, 100, 150, 200]
    assert max(h["max_abs_diff_tied"]) < 1e-10
    assert h["fvu"]["tied_doubled_topk"] == pytest.approx(h["fvu"]["abstopk"], abs=1e-10)
    assert h["antipodal_cos"][0] == pytest.approx(1.0) and h["antipodal_cos"][-1] < 0.999
    assert h["fvu"]["abstopk"][-1] < 0.5 * h["fvu"]["abstopk"][0]  # it learns
    assert h["activation"] == {"abstopk": "abstopk", "tied_doubled_topk": "topk", "untied_doubled_topk": "topk",
                               "topk_2P_random": "topk"}
    assert doubling.DOUBLES_INTO == {"abstopk": "topk"}  # read from the specs: the one signed per-row top-k


# --------------------------------------------------------------------------- plots of the records
def _record(activation, layer, k, d_sae, fvu):
    return {"activation": activation, "layer": layer, "k": k, "d_sae": d_sae, "seed": 0, "variant": "default",
            "train_tokens": 1000, "heldout": {"fvu": fvu}}


def test_fvu_gap_pairs_runs_that_agree_on_every_other_setting():
    import matplotlib.pyplot as plt

    from abstopk_mini.chapters import plots_sweep as ps

    recs = [_record("topk", 6, 8, 512, 0.2), _record("abstopk", 6, 8, 512, 0.25),
            _record("topk", 6, 32, 512, 0.1), _record("abstopk", 6, 32, 512, 0.09),
            _record("topk", 9, 32, 512, 0.4)]  # no AbsTopK partner: left out
    fig, ax = plt.subplots()
    ps.fvu_gap(recs, "layer", ax=ax, group=("k",))
    lines = {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers}
    assert set(lines) == {"k=8", "k=32"}
    assert lines["k=8"][0] == [6] and lines["k=8"][1] == pytest.approx([25.0])   # (0.25 − 0.2) / 0.2, in %
    assert lines["k=32"][1] == pytest.approx([-10.0])
    plt.close(fig)


def test_table_sorts_numbers_numerically_and_renames_columns():
    from abstopk_mini.chapters import plots_sweep as ps

    recs = [_record("topk", 12, 8, 4096, 0.3), _record("topk", 3, 8, 512, 0.1), _record("abstopk", 3, 8, 512, 0.2)]
    lines = ps.table(recs, ["layer", "activation", ("heldout.fvu", "FVU")], sort=("layer", "activation")).splitlines()
    assert lines[0] == "| layer | activation | FVU |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 3", "| 3", "| 12"]   # 3 before 12 (not "12" < "3")
    assert "abstopk" in lines[2] and "topk" in lines[3]
    kept = ps.table(recs, ["layer"], sort=()).splitlines()[2:]
    assert kept == ["| 12 |", "| 3 |", "| 3 |"]


def test_html_table_has_the_rows_of_table_with_key_columns_first():
    from abstopk_mini.chapters import plots_sweep as ps

    recs = [_record("topk", 12, 8, 4096, 0.3), _record("topk", 3, 8, 512, 0.1), _record("abstopk", 3, 8, 512, 0.2)]
    cols = ["layer", "activation", ("heldout.fvu", "FVU")]
    t = ps.html_table(recs, cols, sort=("layer", "activation"), key=["layer", "FVU"])
    md = ps.table(recs, cols, sort=("layer", "activation")).splitlines()[2:]
    assert [[str(r[c]) for c in t.columns] for r in t.rows] == [[v.strip() for v in line.strip("|").split("|")] for line in md]
    page = t._repr_html_()
    assert "<th>activation</th>" not in page.split("<details")[0] and "<th>activation</th>" in page.split("<details")[1]


def test_max_runs_counts_new_records_not_points_claimed_by_another_worker(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    """Two workers on one config, each with max_runs=1, train two SAEs: a point another worker holds
    is skipped without using up the count."""
    from abstopk_mini.io import Claim
    from abstopk_mini.runs.store import runs_dir

    cfg = sweep.load_config(tiny_config(tiny_gpt2_dir, tmp_path / "r.jsonl", ks=[4, 2]))
    first, second = [key for _, _, key in sweep.plan(cfg)["todo"]][:2]
    other = Claim(runs_dir(tmp_path) / "claims" / f"{first}.lock")  # another worker is training the first point
    assert other.take()
    try:
        out = sweep.run_sweep(cfg, runs_root=tmp_path, loaded=tiny_gpt2, progress=False, max_runs=1)
    finally:
        other.release()
    assert out["ran"] == [second]
    assert [r["key"] for r in sweep.read_results(cfg.results_path)] == [second]
