"""Chapter 10's tables and figures from records (abstopk_mini.chapters.plots_steps)."""

import io
import math

import pytest
from PIL import Image

from abstopk_mini.chapters import plots_steps as pst
from abstopk_mini.chapters import style


def record(act, seed, batch, snaps, final_step, final_fvu, kl=0.5):
    return {"activation": act, "seed": seed, "batch_size": batch, "stage": "s", "k": 32,
            "harvest": {"n_tokens": 1000}, "train": {"n_steps": final_step, "n_tokens": final_step * batch},
            "heldout": {"fvu": final_fvu}, "splice": {"kl_sae": kl, "loss_recovered_zero": 0.9},
            "snapshots": [{"step": s, "tokens": s * batch, "heldout": {"fvu": v}} for s, v in snaps],
            "test_k": {"8": 0.3, "32": final_fvu, "128": 0.02}}


RECS = [
    record("topk", 0, 128, [(3125, 0.080), (9375, 0.050)], 10937, 0.045),
    record("abstopk", 0, 128, [(3125, 0.090), (9375, 0.052)], 10937, 0.0468),
    record("topk", 0, 4096, [], 293, 0.100),
    record("abstopk", 0, 4096, [], 293, 0.110),
]


def test_gaps_pair_runs_at_the_same_step_batch_and_seed():
    gaps = pst.pair_gaps(RECS)
    assert [(g["batch"], g["step"], g["final"]) for g in gaps] == [
        (128, 3125, False), (128, 9375, False), (128, 10937, True), (4096, 293, True)]
    assert gaps[0]["gap"] == pytest.approx(0.090 / 0.080 - 1, rel=1e-12)
    assert pst.gap_summary(RECS) == {128: [4.0], 4096: [10.0]}


def test_protocol_compares_abstopk_with_topk_stopped_three_times_earlier():
    (row,) = pst.protocol_rows(RECS)
    assert row["AbsTopK steps"] == 9375 and row["FVU TopK, steps/3"] == 0.080
    assert row["gap % 1:3"] == pytest.approx(100 * (0.052 / 0.080 - 1), rel=1e-12)
    assert row["gap % equal"] == pytest.approx(100 * (0.052 / 0.050 - 1), rel=1e-12)


def test_final_table_and_test_k_rows():
    t = pst.final_table(RECS)
    assert [r["batch"] for r in t.rows] == [4096, 128]
    assert t.rows[1]["gap %"] == pytest.approx(100 * (0.0468 / 0.045 - 1), rel=1e-12)
    assert "+4.0" in repr(t)
    ks = pst.test_k_rows(RECS)
    assert [r["test k"] for r in ks[:3]] == [8, 32, 128]


@pytest.mark.parametrize("make", [pst.steps_figure, pst.test_k_figure])
def test_figures_fit_the_page(make):
    png = make(RECS)._repr_png_()
    w, _ = Image.open(io.BytesIO(png)).size
    assert w <= style.MAX_PX


def test_ladder_and_batch_level_tables():
    from abstopk_mini.chapters import plots_verdict as pv

    def rec(act, variant, fvu, extra=None):
        return {"activation": act, "variant": variant, "heldout": {"fvu": fvu, "dead_frac": 0.01} | (extra or {}),
                "train": {"n_steps": 1172}}

    recs = [rec("topk", "default", 0.08), rec("abstopk", "default", 0.088), rec("topk", "paper_all", 0.1, {"mse_std": 0.2}),
            rec("abstopk", "paper_all", 0.09, {"mse_std": 0.18}), rec("topk", "paper_adam", 0.07)]
    recs = [r | {"seed": 0} for r in recs] + [rec("abstopk", "default", 0.5) | {"seed": 1}]  # seed 1: not paired
    t = pv.ladder_table(recs, norm_mse=True)
    assert "norm. MSE TopK" not in pv.ladder_table(recs).columns
    assert [r["rung"] for r in t.rows] == ["ours", "all of the paper's choices"]  # paper_adam lacks its AbsTopK
    assert t.rows[0]["gap %"] == pytest.approx(10.0, rel=1e-12) and t.rows[1]["norm. MSE AbsTopK"] == 0.18
    b = pv.batch_level_table([rec("batchabstopk", "default", 0.12, {"l0": 31.5}) | {"heldout_batch_inference": {"batch": 128, "fvu": 0.07, "l0": 32.0}}])
    assert b.rows[0]["FVU top k·B, B = 128"] == 0.07 and b.rows[0]["SAE"] == "BatchAbsTopK"
    assert b.rows[0]["dead"] == 0.01 and math.isnan(b.rows[0]["FVU last train batch"])  # not in this record


def test_balance_count_table_and_balanced_rows():
    from abstopk_mini.chapters import plots_verdict as pv

    t = pv.balance_count_table({"as written": {"he": 1885, "she": 226}, "balanced": {"he": 2111, "she": 2111}},
                               pairs=[("he", "she"), ("king", "queen")])
    assert t.rows == [{"pair": "he / she", "as written": "1,885 / 226", "balanced": "2,111 / 2,111"},
                      {"pair": "king / queen", "as written": "0 / 0", "balanced": "0 / 0"}]

    def sweep_rec(act, seed, key, fvu, sign):
        return {"activation": act, "seed": seed, "key": key, "heldout": {"fvu": fvu}, "splice": {"kl_sae": 0.4},
                "concepts": {"family": {"sign_latent": {"sign_accuracy": sign}}}}

    def bidir(seed, keys):
        scan = {"top_by_test": [{"latent": 3, "test_pair_share": 0.5}], "best_pair": {"test_pair_share": 0.75}}
        return {"seed": seed, "saes": {a: {"key": k} for a, k in keys.items()},
                "natural": {a: {"sign_accuracy": 0.6, "pair_share": 0.25} for a in keys},
                "scan": {a: scan for a in keys}}

    sweeps = {"balanced": [sweep_rec("topk", 0, "t0", 0.05, 0.7), sweep_rec("abstopk", 0, "a0", 0.051, 0.6)]}
    rows = pv.balanced_rows(sweeps, {"balanced": [bidir(0, {"topk": "t0", "abstopk": "a0"})]})
    assert [r["SAE"] for r in rows] == ["AbsTopK", "TopK"]
    assert rows[0] == {"training text": "balanced", "seed": 0, "SAE": "AbsTopK", "FVU": 0.051, "KL spliced": 0.4,
                       "templates sign acc.": 0.6, "natural sign acc.": 0.6, "pair share": 0.25,
                       "best latent, held-out pair share": 0.5, "pair of latents share": 0.75}
    assert rows[1]["best latent, held-out pair share"] is None  # a TopK latent has one sign
    no_bidir = pv.balanced_rows(sweeps, {})
    assert no_bidir[0]["pair share"] is None and no_bidir[0]["FVU"] == 0.051
    with pytest.raises(ValueError, match="reads SAE x, not the sweep's a0"):
        pv.balanced_rows(sweeps, {"balanced": [bidir(0, {"topk": "t0", "abstopk": "x"})]})


def test_ladder_long_and_budget_tables():
    from abstopk_mini.chapters import plots_verdict as pv

    def rec(act, variant, fvu, snaps):
        return {"activation": act, "variant": variant, "seed": 0, "heldout": {"fvu": fvu, "dead_frac": 0.2},
                "train": {"n_steps": 10938}, "snapshots": [{"step": s, "heldout": {"fvu": f}} for s, f in snaps]}

    base = [rec("topk", "default", 0.05, [(1172, 0.10)]), rec("abstopk", "default", 0.055, [(1172, 0.11)])]
    long = [rec("topk", "paper_batch_select", 0.04, [(1172, 0.08), (2344, 0.06)]),
            rec("abstopk", "paper_batch_select", 0.06, [(1172, 0.16), (2344, 0.09)])]
    t = pv.ladder_long_table(long + [rec("abstopk", "paper_batch_select", 0.5, []) | {"seed": 1}], base, at=(1172, 2344))
    assert [r["rung"] for r in t.rows] == ["ours", "batch-level selection"]
    assert t.rows[0]["gap %"] == pytest.approx(10.0) and t.rows[0]["gap % at 2,344"] is None  # no such snapshot
    assert t.rows[1]["gap % at 1,172"] == pytest.approx(100.0) and t.rows[1]["gap % at 2,344"] == pytest.approx(50.0)
    assert "dead TopK" in t.columns and "dead TopK" not in t.key

    reading = {"fvu": 0.1, "share_zero": 0.25, "l0_quantiles": {"0.01": 2.0, "0.99": 214.0}, "top_decile_share": 0.3, "l0_norm_spearman": 0.5,
               "share_below_quarter_k": 0.3, "error_share_below_quarter_k": 0.6, "negative_share": 0.5}
    step = {"step": 1172, "eval_batch_size": 128, "activation": "batchabstopk", "batch": reading, "threshold": reading | {"fvu": 0.11},
            "row": reading | {"fvu": 0.07}}
    b = pv.budget_table([{"activation": "abstopk", "variant": "paper_batch_select", "seed": 0, "steps": [step]},
                         {"activation": "topk", "variant": "paper_adam", "seed": 0, "steps": [step]}])
    assert len(b.rows) == 1 and b.rows[0]["SAE"] == "BatchAbsTopK"
    assert b.rows[0]["FVU k per token"] == 0.07 and b.rows[0]["no latent %"] == 25.0
    assert b.rows[0]["FVU top k·B (B = 128)"] == 0.1 and b.rows[0]["L0 p1–p99"] == "2–214"
    with pytest.raises(ValueError, match="budget"):
        pv.budget_table([], variant="paper_batch_select")


def test_dead_table_by_hand():
    from abstopk_mini.chapters import plots_verdict as pv

    def group(n, reach, scale, norm, pos, frac):
        return {"n": n, "reach_median": reach, "mean_abs_u_median": scale, "positive_frac_median": frac,
                "enc_norm_median": norm, "b_enc_median": 0.0, "positive_share": pos}

    last = {"step": 1172, "tokens": 150016, "dead_frac": 0.75, "alive": group(1024, 1.5, 2.0, 1.0, 1.0, 0.5),
            "dead": group(3072, 0.5, 0.5, 0.25, 0.9, 0.01)}
    none_dead = {"step": 1172, "tokens": 150016, "dead_frac": 0.0, "alive": group(4096, 1.5, 2.0, 1.0, 1.0, 0.1),
                 "dead": group(0, None, None, None, None, None)}
    recs = [{"activation": "abstopk", "variant": "paper_auxk", "seed": 1, "sae": {"dead_tokens": 640, "heldout_fvu": 0.1},
             "steps": [{"step": 100, "dead_frac": 0.1}, last]},
            {"activation": "topk", "variant": "default", "seed": 0, "sae": {"dead_tokens": 15001}, "steps": [none_dead]}]
    t = pv.dead_table(recs)
    assert t.rows[0] == {"SAE": "AbsTopK", "variant": "AuxK 512, dead after 5 batches", "seed": 1, "dead after (tokens)": 640,
                         "steps": 1172, "FVU": 0.1, "dead %": 75.0, "dead: reach": 0.5, "dead: E|u| / live": 0.25,
                         "dead: ‖w_enc‖ / live": 0.25, "live: u > 0 on %": 50.0, "dead: u > 0 on %": 1.0,
                         "dead: ever positive %": 90.0}
    assert t.rows[1]["variant"] == "ours" and t.rows[1]["dead: E|u| / live"] is None
    assert "dead: ‖w_enc‖ / live" in t.columns and "dead: ‖w_enc‖ / live" not in t.key
    assert t.key[:5] == ["SAE", "variant", "seed", "FVU", "dead %"] and t.rows[1]["FVU"] is None
    with pytest.raises(ValueError, match="python -m abstopk_mini dead"):
        pv.dead_table([])


def test_trajectory_rows_pair_every_step_of_one_run_by_hand():
    from abstopk_mini.chapters import plots_verdict as pv

    def rec(act, seed, snaps, final_step, final_fvu):
        return {"activation": act, "seed": seed, "batch_size": 128, "stage": "s",
                "train": {"n_steps": final_step, "n_tokens": final_step * 128},
                "heldout": {"fvu": final_fvu, "dead_frac": 0.5},
                "snapshots": [{"step": s, "tokens": s * 128, "heldout": {"fvu": f, "dead_frac": 0.25}} for s, f in snaps]}

    run = [rec("topk", 0, [(1172, 0.20), (10938, 0.05)], 30000, 0.04),
           rec("abstopk", 0, [(1172, 0.18), (2344, 0.12), (10938, 0.06)], 30000, 0.05),
           rec("abstopk", 1, [], 30000, 0.9)]  # another seed: not paired
    rows = pv.trajectory_rows(run)
    assert [r["steps"] for r in rows] == [1172, 10938, 30000]  # 2,344: AbsTopK only
    assert [r["final"] for r in rows] == [False, False, True]
    assert rows[0]["gap %"] == pytest.approx(-10.0, rel=1e-12) and rows[1]["gap %"] == pytest.approx(20.0, rel=1e-12)
    assert rows[2]["gap %"] == pytest.approx(25.0, rel=1e-12)
    assert rows[2]["tokens"] == 30000 * 128 and rows[0]["dead AbsTopK"] == 0.25 and rows[2]["dead TopK"] == 0.5
    t = pv.trajectory_table(run)
    assert t.key == ["steps", "FVU TopK", "FVU AbsTopK", "gap %"] and "30,000" in repr(t) and "+25.0" in repr(t)
    with pytest.raises(ValueError, match="seed 1"):
        pv.trajectory_rows(run, seed=1)

    short = [rec("topk", s, [(1172, 0.2)], 10938, 0.05) for s in (0, 1)] + \
            [rec("abstopk", s, [(1172, 0.19)], 10938, 0.06) for s in (0, 1)]
    png = pv.trajectory_figure(run, short)._repr_png_()
    w, _ = Image.open(io.BytesIO(png)).size
    assert w <= style.MAX_PX


def test_sign_table_by_hand():
    from abstopk_mini.chapters import plots_verdict as pv

    def rec(act, variant, seed, fvu, dead, flagged, bidir, neg):
        return {"activation": act, "variant": variant, "seed": seed, "train": {"final_dead_frac": flagged},
                "heldout": {"fvu": fvu, "dead_frac": dead, "bidirectional_frac": bidir, "negative_share": neg}}

    recs = [rec("topk", "paper_dead_window", 0, 0.098, 0.42, 0.75, 0.0, 0.0),
            rec("abstopk", "paper_dead_window", 0, 0.105, 0.788, 0.81, 0.77, 0.49),
            rec("abstopk", "paper_dead_window_positive_aux", 1, 0.1006, 0.008, 0.61, 0.18, 0.55)]
    t = pv.sign_table(recs)
    assert [r["variant"] for r in t.rows] == ["dead after 5 batches (AuxK 320 latents)", "dead after 5 batches, AuxK on u > 0 only"]
    assert t.rows[1] == {"variant": "dead after 5 batches, AuxK on u > 0 only", "seed": 1, "FVU": 0.1006, "dead %": 100 * 0.008,
                         "flagged dead at the end %": 100 * 0.61, "bidirectional %": 100 * 0.18, "negative codes %": 100 * 0.55}
    assert "0.1006" in repr(t) and "78.8" in repr(t)
    with pytest.raises(ValueError, match="activation='relu'"):
        pv.sign_table(recs, activation="relu")
