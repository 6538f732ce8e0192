"""Chapter 11's tables and figure from hand-made records (values worked out by hand)."""

import struct

import pytest
import torch

from abstopk_mini.chapters import plots_opposites as po
from abstopk_mini.chapters import style


def _rec(act, seed, verdicts, sides=()):
    v = dict(zip(("opposite", "different", "same", "one-sided"), verdicts))
    v["n"], v["opposite_logits"] = sum(verdicts), 0
    return {"activation": act, "seed": seed, "sae": {"n_steps": 100}, "verdicts": v, "gender_sides": list(sides)}


def _side(latent, sign, group, share=1.0, other=(), shares=None):
    return {"latent": latent, "sign": sign, "group": group, "share": share, "n_fires": 7, "tokens": ["he"] * 5,
            "other_latent": latent, "other_sign": "+" if sign == "-" else "-", "other_tokens": list(other),
            "other_shares": shares or {}}


RECS = [_rec("topk", 0, (0, 8, 1, 1)), _rec("abstopk", 1, (2, 6, 0, 2)), _rec("abstopk", 0, (1, 9, 0, 0))]


def test_verdict_table_orders_abstopk_first_and_counts_shares():
    t = po.verdict_table(RECS)
    assert [(r["SAE"], r["seed"]) for r in t.rows] == [("AbsTopK", 0), ("AbsTopK", 1), ("TopK", 0)]
    assert [r["opposite %"] for r in t.rows] == [10.0, 20.0, 0.0]
    assert "steps" in t.columns and "steps" not in t.key and "opposite %" in t.key


def test_gender_sides_and_their_cosines():
    rec = {"activation": "abstopk", "seed": 0,
           "gender_sides": [_side(0, "-", "female", other=["root"] * 5, shares={"male": 0.0, "female": 0.0}),
                            _side(1, "+", "male", 0.6, other=["she"] * 5, shares={"male": 0.0, "female": 1.0}),
                            _side(2, "-", "male")]}
    t = po.gender_sides_table([rec])
    assert [(r["side"], r["group"]) for r in t.rows] == [("0 -", "female 100%"), ("1 +", "male 60%"), ("2 -", "male 100%")]
    assert t.rows[0]["other side"] == "root ×5" and t.rows[2]["other side"] == "-" and t.rows[0]["SAE"] == "AbsTopK s0"
    assert po.gendered_other_sides([rec]) == 1  # side 1's other side is all female
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    c = po.side_cosine_table(rec, W)
    # female side −d0 = (−1, 0); male sides +d1 = (0, 2): cos 0; −d2 = (−3, −3): cos 1/√2
    assert [(r["female side"], r["male side"]) for r in c.rows] == [("0 -", "1 +"), ("0 -", "2 -")]
    assert [r["cosine"] for r in c.rows] == pytest.approx([0.0, 2 ** -0.5], abs=1e-12)
    with pytest.raises(ValueError, match="no record has a gendered side"):
        po.gender_sides_table([_rec("topk", 0, (0, 1, 0, 0))])


def test_reading_table_and_figure_fit_the_page():
    reading = {"seed": 0, "items": [{"sae": "abstopk", "label": "unrelated"}, {"sae": "abstopk", "label": "opposite"},
                                    {"sae": "topk", "label": "unclear"}]}
    t = po.reading_table(reading)
    assert [(r["SAE"], r["read"], r["opposite"], r["unrelated"], r["unclear"]) for r in t.rows] == [
        ("AbsTopK", 2, 1, 1, 0), ("TopK", 1, 0, 0, 1)]
    png = po.verdict_figure(RECS, reading)._repr_png_()
    w, h = struct.unpack(">II", png[16:24])
    assert w <= style.MAX_PX
