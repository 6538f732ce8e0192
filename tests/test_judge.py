"""The opposite-meaning rules of am.dashboard.judge on hand-built dashboards (verdicts worked out by hand)."""

import pytest

import abstopk_mini as am
from abstopk_mini.dashboard import Context, DashboardData, LatentDashboard, LogitEffects
from abstopk_mini.dashboard.judge import count_verdicts, judge, judge_latent, normalise_token, opposite_lexicon

# token id -> display string, as tokenizer.decode([id]) gives them (leading spaces, punctuation)
TOKENS = {0: "<bos>", 1: " he", 2: " She", 3: " his", 4: " her", 5: " the", 6: " cat", 7: " dog", 8: ",",
          9: " unaware", 10: " aware", 11: " Paris", 12: " tree", 13: " The"}


def _contexts(ids, sign=1.0):
    """One context per chosen token id, the window [BOS, id] with the id chosen (max_pos 1)."""
    return [Context(token_ids=[0, t], values=[0.0, sign * (10 - r)], max_pos=1, value=sign * (10 - r),
                    token_index=100 * r + t, doc=0, chunk=r, position=1) for r, t in enumerate(ids)]


def _latent(i, pos, neg, *, antipode=-1, cos=0.0, pos_boost=(), neg_boost=()):
    return LatentDashboard(latent=i, n_pos=len(pos), n_neg=len(neg), pos_rate=0.0, neg_rate=0.0, hist_width=1.0,
                           hist_counts=[0, 0], top_pos=_contexts(pos), top_neg=_contexts(neg, -1.0),
                           logits=LogitEffects([(t, 1.0) for t in pos_boost], [], [(t, 1.0) for t in neg_boost], []),
                           summary_pos="", summary_neg="", antipode=antipode, antipode_cos=cos)


def _data(latents, requested, signed=True):
    return DashboardData(latents=latents, requested=requested, tokens=TOKENS, n_tokens=1000,
                         sae={"signed": signed})


def test_normalise_token_strips_case_space_and_punctuation():
    assert normalise_token(" Women,") == "women"
    assert normalise_token(" “she”") == "she"
    assert normalise_token(" ,") == ""
    assert normalise_token("didn't") == "didn't"  # inner apostrophes stay


def test_lexicon_holds_gender_antonym_and_extra_pairs():
    lex = opposite_lexicon()
    for pair in [("he", "she"), ("his", "her"), ("king", "queen"), ("aware", "unaware"), ("up", "down")]:
        assert pair in lex
    assert len(lex) == len(set(lex))
    assert all(a == a.lower() and b == b.lower() for a, b in lex)


def test_signed_verdicts_by_hand():
    data = _data([
        _latent(0, pos=[1, 1, 3, 1, 3], neg=[2, 4, 2, 2, 4], pos_boost=[1], neg_boost=[2]),  # he/his vs she/her
        _latent(1, pos=[5, 5, 6, 5, 13], neg=[5, 13, 7, 5, 5]),  # "the" on both sides
        _latent(2, pos=[6, 6, 6, 6, 6], neg=[11, 12, 11, 12, 11]),  # cat vs Paris/tree
        _latent(3, pos=[6, 6, 6, 6, 6], neg=[7, 8, 8, 8, 8]),  # the negative side: 1 word token (',' drops)
        _latent(4, pos=[10, 10, 10, 6, 6], neg=[9, 9, 9, 7, 7]),  # aware vs unaware: gram2-opposite
    ], requested=[0, 1, 2, 3, 4])
    v = {j.latent: j for j in judge(data)}
    assert v[0].verdict == "opposite" and v[0].pair == ("he", "she")
    assert v[0].side_a == ["he", "he", "his", "he", "his"] and v[0].side_b == ["she", "her", "she", "she", "her"]
    assert v[0].other == 0 and v[0].antipode_cos is None
    assert v[0].opposite_logits == ("he", "she")
    # {"the", "cat"} vs {"the", "dog"}: Jaccard 1/3 >= 0.25
    assert v[1].verdict == "same" and v[1].jaccard == pytest.approx(1 / 3)
    assert v[2].verdict == "different" and v[2].jaccard == 0.0 and v[2].pair is None
    assert v[3].verdict == "one-sided" and v[3].side_b == ["dog"]
    assert v[4].verdict == "opposite" and v[4].pair == ("aware", "unaware")
    assert count_verdicts(judge(data)) == {"opposite": 2, "different": 1, "same": 1, "one-sided": 1, "n": 5,
                                           "opposite_logits": 1}


def test_a_word_on_both_sides_is_not_evidence_of_opposition():
    # "he" and "she" on both sides: the pair spans the sides only through shared words -> not opposite
    data = _data([_latent(0, pos=[1, 2, 6, 6, 6], neg=[1, 2, 7, 7, 7])], requested=[0])
    j = judge_latent(data, 0)
    assert j.pair is None and j.verdict == "same" and j.jaccard == pytest.approx(2 / 4)  # {he, she, cat} vs {he, she, dog}
    assert judge_latent(data, 0, same_jaccard=0.6).verdict == "different"


def test_unsigned_latent_reads_its_antipode_positive_side():
    # TopK: latent 0's other side is latent 7's positive contexts (its negative lists are empty)
    data = _data([_latent(0, pos=[1, 1, 1, 3, 3], neg=[], antipode=7, cos=-0.9, pos_boost=[3]),
                  _latent(7, pos=[2, 2, 4, 4, 4], neg=[], antipode=0, cos=-0.9, pos_boost=[4])],
                 requested=[0], signed=False)
    (j,) = judge(data)
    assert (j.latent, j.other, j.antipode_cos) == (0, 7, -0.9)
    assert j.verdict == "opposite" and j.pair == ("he", "she") and j.opposite_logits == ("his", "her")


def test_judge_names_a_latent_it_does_not_hold():
    data = _data([_latent(0, pos=[1] * 5, neg=[2] * 5)], requested=[0])
    with pytest.raises(ValueError, match="latent=3"):
        judge(data, latents=[3])


def test_exported_from_the_dashboard_package():
    assert am.dashboard.judge is judge and am.dashboard.count_verdicts is count_verdicts


GENDER = {"male": {"he", "his"}, "female": {"she", "her"}}


def test_lexicon_sides_signed_finds_each_gendered_side_and_its_other_sign():
    data = _data([
        _latent(0, pos=[1, 1, 3, 6, 1], neg=[2, 4, 2, 2, 7]),  # + 4/5 male, - 4/5 female
        _latent(1, pos=[2, 2, 6, 7, 6], neg=[6, 6, 6, 6, 6]),  # + 2/5 female: below 0.5
        _latent(2, pos=[2, 2, 2, 2, 2, 2], neg=[8, 8]),       # + all female; - has no word token
    ], requested=[0, 1, 2])
    rows = am.dashboard.lexicon_sides(data, GENDER)
    got = [(r["latent"], r["sign"], r["group"], r["share"], r["other_sign"]) for r in rows]
    assert got == [(2, "+", "female", 1.0, "-"), (0, "+", "male", 0.8, "-"), (0, "-", "female", 0.8, "+")]
    r0 = rows[1]
    assert r0["other_tokens"] == ["she", "her", "she", "she", "dog"] and r0["other_shares"] == {"male": 0.0, "female": 0.8}
    assert rows[0]["other_tokens"] == [] and rows[0]["other_shares"] == {} and rows[0]["n_fires"] == 6
    assert [r["latent"] for r in am.dashboard.lexicon_sides(data, GENDER, min_share=0.4)] == [2, 0, 0, 1]


def test_lexicon_sides_unsigned_pairs_with_the_antipode():
    data = _data([_latent(0, pos=[2, 4, 2, 2, 2], neg=[], antipode=7, cos=-0.5),
                  _latent(7, pos=[6, 6, 7, 7, 1], neg=[], antipode=0, cos=-0.5)], requested=[0], signed=False)
    (r,) = am.dashboard.lexicon_sides(data, GENDER)
    assert (r["latent"], r["sign"], r["group"], r["other_latent"], r["other_sign"]) == (0, "+", "female", 7, "+")
    assert r["other_shares"] == {"male": 0.2, "female": 0.0}


def test_blind_sample_hides_the_sae_and_is_reproducible():
    a = _data([_latent(i, pos=[1, 3, 1, 3, 1], neg=[6, 7, 6, 7, 6]) for i in range(6)], requested=list(range(6)))
    t = _data([_latent(i, pos=[11, 12, 11, 12, 11], neg=[], antipode=i + 10) for i in range(4)]
              + [_latent(i + 10, pos=[2, 4, 2, 4, 2], neg=[], antipode=i) for i in range(4)],
              requested=list(range(4)), signed=False)
    items = am.dashboard.blind_sample({"abstopk": a, "topk": t}, 3)
    assert items == am.dashboard.blind_sample({"abstopk": a, "topk": t}, 3)
    assert sorted(it["sae"] for it in items) == ["abstopk"] * 3 + ["topk"] * 3
    assert [it["item"] for it in items] == list(range(6))
    it = next(i for i in items if i["sae"] == "topk")
    assert it["other"] == it["latent"] + 10 and it["side_b"] == ["she", "her", "she", "her", "she"]
    assert it["ctx_b"][0] == "<bos>[ She]"
    sheet = am.dashboard.reading_sheet(items)
    assert "abstopk" not in sheet and "topk" not in sheet and sheet.count("#") == 6
    with pytest.raises(ValueError, match="n=7"):
        am.dashboard.blind_sample({"abstopk": a}, 7)


def test_committed_records_are_what_the_rules_say_of_the_committed_dashboards():
    """results/opposite_meanings.jsonl and the blinded reading agree with results/dashboards/ (chapter 11)."""
    import json
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    records = [json.loads(line) for line in (results / "opposite_meanings.jsonl").read_text().splitlines()]
    assert sorted((r["activation"], r["seed"]) for r in records) == [("abstopk", 0), ("abstopk", 1), ("topk", 0), ("topk", 1)]
    data = {}
    for r in records:
        d = data[r["activation"], r["seed"]] = DashboardData.load(results / r["files"]["top"])
        verdicts = judge(d)
        assert r["verdicts"] == count_verdicts(verdicts)
        assert r["judgements"] == json.loads(json.dumps([j.to_dict() for j in verdicts]))
    reading = json.loads((results / "opposite_reading.json").read_text())
    items = am.dashboard.blind_sample({"abstopk": data["abstopk", 0], "topk": data["topk", 0]}, 30)
    keys = ("item", "sae", "latent", "other", "side_a", "side_b", "ctx_a", "ctx_b")
    assert [{k: it[k] for k in keys} for it in reading["items"]] == [{k: it[k] for k in keys} for it in items]
    assert {it["label"] for it in reading["items"]} <= set(reading["labels"])
