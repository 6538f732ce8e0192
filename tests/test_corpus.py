"""Offline corpus from the gensim wheel, dedup, the by-document split, chunking, the online path."""

from __future__ import annotations

import io
import pickle
import sys
import time
import types

import pytest

from abstopk_mini.lm import corpus as C
from abstopk_mini.lm import models as M


@pytest.fixture(scope="module")
def docs():
    return C.load_docs()


def test_sources_give_clean_documents(docs):
    by_source = {s: [d for d in docs if d.source == s] for s in C.SOURCES}
    assert set(d.source for d in docs) == set(C.SOURCES)
    wiki, lee, news = by_source["wiki"], by_source["lee"], by_source["newsgroups"]
    assert 50 <= len(wiki) <= 107  # 107 non-redirect articles in the dump, short ones dropped
    assert 250 <= len(lee) <= 300 and 100 <= len(news) <= 200
    titles = {d.title for d in wiki}
    assert "Anarchism" in titles and "AccessibleComputing" not in titles  # a redirect
    for d in wiki:
        assert len(d.text) >= 500 and "'''" not in d.text and "[[" not in d.text and "{{" not in d.text
        lines = d.text.splitlines()
        assert not any(line.startswith(("=", "* ", "|", "{")) for line in lines)  # headings, lists, tables
    anarchism = next(d for d in wiki if d.title == "Anarchism").text
    assert anarchism.startswith("Anarchism is a political philosophy")
    assert "References" not in anarchism.splitlines()
    assert {d.label for d in news} == {"alt.atheism", "sci.space"}
    for d in news:
        assert not any(line.lstrip().startswith(">") for line in d.text.splitlines())
        assert not any(line.startswith(("Message-ID:", "Path:", "From:")) for line in d.text.splitlines())
    assert lee[0].text.startswith("Hundreds of people have been forced to vacate their homes")


def test_dedupe_by_normalised_text(docs):
    assert len({d.doc_id for d in docs}) == len(docs)
    a = C.Document("The  Cat sat.\n", "x")
    b = C.Document("the cat   SAT.", "y")
    c = C.Document("the dog sat.", "x")
    assert a.doc_id == b.doc_id != c.doc_id
    assert C.dedupe([a, c, b]) == [a, c]
    lee = C.lee_docs()
    assert len(C.load_docs(["lee", "lee"])) == len(C.dedupe(lee))


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown \\['books'\\]"):
        C.load_docs(["lee", "books"])


def test_split_by_document_is_deterministic_and_stable(docs):
    train, held = C.train_heldout_split(docs)
    ids_train, ids_held = {d.doc_id for d in train}, {d.doc_id for d in held}
    assert not ids_train & ids_held and len(train) + len(held) == len(docs)
    assert 0.05 < len(held) / len(docs) < 0.15  # about 10 %
    assert C.train_heldout_split(docs) == (train, held)
    sub_train, sub_held = C.train_heldout_split(docs[::3])  # a document never changes side
    assert {d.doc_id for d in sub_held} <= ids_held and {d.doc_id for d in sub_train} <= ids_train
    other_train, _ = C.train_heldout_split(docs, salt="other")
    assert other_train != train
    with pytest.raises(ValueError, match="heldout"):
        C.train_heldout_split(docs, heldout=1.5)


def test_chunk_covers_each_document(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    texts = ["The king and the queen walked through the garden. " * 3, "Short one.", "A man read books."]
    chunks = C.chunk(tok, texts, context_length=10, min_length=3)
    bos = tok.bos_token_id
    assert all(c[0] == bos and 2 <= len(c) <= 10 for c in chunks)
    pairs = list(C.iter_doc_chunks(tok, texts, 10, min_length=3))
    assert [ids for _, ids in pairs] == chunks
    for index, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False).input_ids
        body = [t for d, c in pairs if d == index for t in c[1:]]
        full = len(ids) // 9 * 9
        tail = ids[full:]
        assert body == ids[:full] + (tail if len(tail) >= 3 else [])  # short tails (< min_length) dropped
    no_bos = C.chunk(tok, texts, context_length=10, prepend_bos=False, min_length=1)
    assert sum(map(len, no_bos)) == sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
    assert C.chunk(tok, [C.Document("Short one.", "x")], 10, as_text=True, min_length=1) == ["Short one."]
    with pytest.raises(ValueError, match="context_length"):
        C.chunk(tok, texts, context_length=1)
    with pytest.raises(TypeError, match="index 1"):
        C.chunk(tok, ["fine", 3], context_length=8)


def test_newsgroup_pickle_loader_refuses_other_globals():
    evil = pickle.dumps(__import__("os").getcwd, protocol=0)  # any non-whitelisted global
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        C._RestrictedUnpickler(io.BytesIO(evil)).load()


def test_hf_texts_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        C.hf_texts(n_docs=3)


def test_hf_texts_offline_fails_fast(monkeypatch):
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda *a, **k: pytest.fail("load_dataset must not be called offline")
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(M.HubUnavailableError, match="load_docs"):
        C.hf_texts("monology/pile-uncopyrighted", n_docs=3)
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueError, match="n_docs"):
        C.hf_texts(n_docs=0)
