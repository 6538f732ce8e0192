"""Gender-swapped text (counterfactual augmentation) and the ``augment`` option of a harvest.

References are hand-written: the swapped sentences, hand counts of the balanced text, and the
directory key that the default harvest of chapters 9 and 10 has had since before the option
existed (``235222b195``, the folder their records name).
"""

import pytest

from abstopk_mini import concepts as C
from abstopk_mini.lm.corpus import Document
from abstopk_mini.runs.store import HarvestSpec, harvest_spec
from abstopk_mini.runs.sweep_config import SweepConfig, load_config


@pytest.mark.parametrize("text, swapped", [
    ("He gave her his hat; she thanked him.", "She gave him her hat; he thanked her."),
    ("Mr. Smith's wife met the KING and the Queen.", "Mrs. Smith's husband met the QUEEN and the King."),
    ("Her father told her the truth, with her.", "His mother told him the truth, with him."),
    ("her own house; her very own; she saw her", "his own house; his very own; he saw him"),
    ("The heat, hers, his2, men_x, the-he, himself", "The heat, hers, his2, men_x, the-she, herself"),
    ("Men and women, boys and girls.", "Women and men, girls and boys."),
])
def test_swap_gender_against_hand_written_sentences(text, swapped):
    assert C.swap_gender(text) == swapped


def test_swapping_twice_restores_text_without_her():
    text = "He and his son met a man, his uncle and Mr. King; the boys saw him."
    assert C.swap_gender(C.swap_gender(text)) == text


def test_gender_balanced_interleaves_copies_and_balances_every_pair():
    docs = [Document("He said his wife was late.", "lee"), Document("No gendered word here.", "lee"),
            Document("She and her brother; he is a king.", "wiki")]
    out = C.gender_balanced(docs)
    assert [d.text for d in out] == [
        "He said his wife was late.", "She said her husband was late.",
        "No gendered word here.",
        "She and her brother; he is a king.", "He and his sister; she is a queen."]
    assert [d.source for d in out] == ["lee", "lee", "lee", "wiki", "wiki"]
    words = ["he", "she", "his", "him", "her", "wife", "husband", "brother", "sister", "king", "queen"]
    counts = C.count_words(out, words)
    # by hand over the five texts above
    assert counts == {"he": 3, "she": 3, "his": 2, "him": 0, "her": 2, "wife": 1, "husband": 1,
                      "brother": 1, "sister": 1, "king": 1, "queen": 1}
    assert C.gender_balanced(["he ran", "rain"]) == ["he ran", "she ran", "rain"]


def test_swap_rejects_non_text():
    with pytest.raises(TypeError, match="text must be a str"):
        C.swap_gender(["he"])


def test_default_harvest_keeps_its_directory_key():
    spec = HarvestSpec(n_tokens=1_200_000, chunk_offsets=(0, 64))
    assert spec.directory("/r").name == "gemma-3-270m-L6-train-235222b195"
    swapped = HarvestSpec(n_tokens=1_200_000, chunk_offsets=(0, 64), augment="gender_swap")
    assert swapped.directory("/r").name != spec.directory("/r").name
    assert swapped.text_source == "wiki+lee+newsgroups:train+gender_swap"
    assert swapped.heldout(50_000) == HarvestSpec(n_tokens=50_000, split="heldout", chunk_offsets=(0,))


def test_augment_is_checked_and_held_out_text_is_never_swapped():
    with pytest.raises(ValueError, match="augment must name a text augmentation"):
        HarvestSpec(augment="")
    with pytest.raises(ValueError, match="augment must be one of"):  # the caller that builds the transform
        C.text_augmentation("swap")
    with pytest.raises(ValueError, match="augment must be one of"):  # a sweep config, before any model loads
        load_config({"name": "s", "results": "r.jsonl", "harvest": {"augment": "swap"},
                     "stages": [{"name": "a", "layers": [1], "widths": [8], "ks": [2]}]})
    assert C.text_augmentation("none") is None and C.text_augmentation("gender_swap") is C.gender_balanced
    with pytest.raises(ValueError, match="training split only"):
        HarvestSpec(split="heldout", augment="gender_swap")
    cfg = SweepConfig(name="s", results="r.jsonl", stages=[],
                      harvest={"n_tokens": 1000, "context_length": 128, "chunk_offsets": (0,), "augment": "gender_swap"})
    assert cfg.harvest_spec(6).augment == "gender_swap"
    assert cfg.harvest_spec(6, "heldout").augment == "none"


def test_swapped_harvest_reads_each_document_then_its_copy(tiny_gpt2, tmp_path):
    """The harvest's tokens are those of the interleaved text: the tokens of the first Lee
    document that has a gender word, then the tokens of its swapped copy."""
    from abstopk_mini.lm.shards import ShardDataset
    from abstopk_mini.runs.store import offline_texts

    kw = dict(model="tiny", layer=1, context_length=32, sources=("lee",), chunk_offsets=(0,), n_tokens=3000)
    plain = harvest_spec(HarvestSpec(**kw), tmp_path, loaded=tiny_gpt2, progress=False)
    with pytest.raises(ValueError, match="text transform that was not passed"):  # the store knows no concept
        harvest_spec(HarvestSpec(**kw, augment="gender_swap"), tmp_path, loaded=tiny_gpt2, progress=False)
    with pytest.raises(ValueError, match="spec.augment='none'"):  # a transform the directory's key would not name
        harvest_spec(HarvestSpec(**kw), tmp_path, loaded=tiny_gpt2, progress=False, augment=C.gender_balanced)
    swapped = harvest_spec(HarvestSpec(**kw, augment="gender_swap"), tmp_path, loaded=tiny_gpt2, progress=False,
                           augment=C.text_augmentation("gender_swap"))
    assert harvest_spec(HarvestSpec(**kw, augment="gender_swap"), tmp_path, progress=False) == swapped  # made: no transform needed
    assert plain != swapped
    acts = ShardDataset(swapped)
    assert acts.manifest["text_source"] == "lee:train+gender_swap"
    tokens = acts.read_shard(0, "token_ids").tolist()
    docs = offline_texts(("lee",), "train")
    first = next(i for i, d in enumerate(docs) if C.swap_gender(d.text) != d.text)
    enc = tiny_gpt2.tokenizer
    # from the space before the document's first gender word (byte-level BPE: no token crosses a space)
    start = C.word_pattern(sorted(C.swap_map()) + ["her"]).search(docs[first].text).start() - 1
    assert docs[first].text[start] == " "
    head = enc(docs[first].text[start:start + 40], add_special_tokens=False)["input_ids"][:8]
    copy = enc(C.swap_gender(docs[first].text)[start:start + 40], add_special_tokens=False)["input_ids"][:8]
    assert head != copy
    text = " ".join(map(str, tokens))
    assert " ".join(map(str, head)) in text and " ".join(map(str, copy)) in text
    assert text.index(" ".join(map(str, head))) < text.index(" ".join(map(str, copy)))
