"""Text to run language models on: offline from the gensim wheel, online from the dataset hub.

Offline sources (files shipped in ``gensim/test/test_data/``; no network):

* ``"wiki"``: ``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``, a
  shortened dump of early English Wikipedia articles. Pages are read with gensim's
  ``extract_pages`` (main namespace, redirects dropped) and cleaned with gensim's ``filter_wiki``;
  we then keep prose paragraphs only (no headings, lists, tables, reference sections).
* ``"lee"``: ``lee_background.cor``, 300 Australian news articles (Lee et al. 2005), one a line.
* ``"newsgroups"``: ``mini_newsgroup``, 200 Usenet posts (100 alt.atheism, 100 sci.space) of
  the 20 Newsgroups data set, stored as a zlib-compressed pickle of a scikit-learn ``Bunch``.
  We read it with a restricted unpickler (only plain containers and strings are built) and keep
  the subject and the post's own text (headers, quoted replies and signatures dropped).

    docs = am.corpus.load_docs()                     # list[Document], deduplicated
    train, heldout = am.corpus.train_heldout_split(docs)
    chunks = am.corpus.chunk(tokenizer, train, context_length=128)   # list[list[int]]

Online: :func:`hf_texts` streams documents of a hub dataset with the optional ``datasets``
package (``pip install abstopk_mini[online]``).
"""

from __future__ import annotations

import bz2
import hashlib
import io
import pickle
import re
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

__all__ = [
    "SOURCES", "Document", "gensim_data_dir", "gensim_file", "wiki_docs", "lee_docs", "newsgroup_docs",
    "load_docs", "dedupe", "train_heldout_split", "iter_chunks", "iter_doc_chunks", "chunk",
    "hf_texts",
]

SOURCES = ("wiki", "lee", "newsgroups")
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_FILE = "lee_background.cor"
NEWSGROUP_FILE = "mini_newsgroup"


@dataclass(frozen=True)
class Document:
    """One document. ``doc_id`` is the sha256 (16 hex digits) of its normalised text."""

    text: str
    source: str
    title: str = ""
    label: str = ""  # e.g. the newsgroup

    @property
    def doc_id(self) -> str:
        return hashlib.sha256(_normalise(self.text).encode()).hexdigest()[:16]


def _normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: two texts differing only so are duplicates."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def gensim_data_dir() -> Path:
    """``gensim/test/test_data`` of the installed gensim wheel."""
    try:
        import gensim
    except ImportError:
        raise ImportError("the offline corpus reads files shipped with gensim; pip install gensim") from None
    return Path(gensim.__file__).parent / "test" / "test_data"


def gensim_file(name: str) -> Path:
    """The path of gensim's test-data file ``name`` (FileNotFoundError when this gensim has no test data)."""
    path = gensim_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; this gensim install has no test data (pip install gensim>=4)")
    return path


# --------------------------------------------------------------------------- wikipedia
_WIKI_STOP = re.compile(r"^=+\s*(references|see also|external links|notes|bibliography|further reading|"
                        r"sources|citations|footnotes|works cited)\s*=+\s*$", re.I | re.M)
_WIKI_MARKUP = re.compile(r"'{2,}")  # ''italic'' and '''bold'''
_EMPTY_PARENS = re.compile(r"\(\s*[,;]*\s*\)")
_SPACES = re.compile(r"[ \t]+")


def _wiki_prose(text: str, min_words: int) -> str:
    """Prose paragraphs of a ``filter_wiki`` output: stop at the reference sections, drop
    headings, lists, tables and paragraphs shorter than ``min_words`` words."""
    stop = _WIKI_STOP.search(text)
    if stop:
        text = text[: stop.start()]
    paragraphs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "=*#:;|!{}" or line.startswith("Category:"):
            continue
        line = _WIKI_MARKUP.sub("", line)
        line = _EMPTY_PARENS.sub("", line)
        line = _SPACES.sub(" ", line).replace(" ,", ",").replace(" .", ".").strip()
        if len(line.split()) >= min_words:
            paragraphs.append(line)
    return "\n\n".join(paragraphs)


def wiki_docs(min_chars: int = 500, min_words: int = 10) -> list[Document]:
    """Wikipedia articles (prose only) with at least ``min_chars`` characters; title = page title."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    docs = []
    with bz2.open(gensim_file(WIKI_FILE), "rb") as f:
        for title, raw, _pageid in extract_pages(f, filter_namespaces=("0",)):
            if raw.lstrip()[:9].upper() == "#REDIRECT":
                continue
            text = _wiki_prose(filter_wiki(raw), min_words)
            if len(text) >= min_chars:
                docs.append(Document(text, "wiki", title=title))
    return docs


# --------------------------------------------------------------------------- lee
def lee_docs(min_chars: int = 200) -> list[Document]:
    """The 300 Lee background news articles (one a line) with at least ``min_chars`` characters."""
    lines = gensim_file(LEE_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    return [Document(" ".join(line.split()), "lee") for line in lines if len(line.strip()) >= min_chars]


# --------------------------------------------------------------------------- newsgroups
class _Inert:
    """Stands in for numpy arrays in the pickle; we never need them (labels come from headers)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _reconstructor(cls, base, state):  # copy_reg._reconstructor, restricted to dict subclasses
    return dict(state) if state is not None else {}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only containers and strings; every other global is refused or inert."""

    _ALLOWED = {
        ("copy_reg", "_reconstructor"): _reconstructor,
        ("__builtin__", "dict"): dict,
        ("sklearn.datasets.base", "Bunch"): dict,
        ("numpy.core.multiarray", "_reconstruct"): _Inert,
        ("numpy", "ndarray"): _Inert,
        ("numpy", "dtype"): _Inert,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{NEWSGROUP_FILE}: refusing to load {module}.{name}") from None


_ATTRIBUTION = re.compile(r"(^in article\b|\bwrites:\s*$|\bwrote:\s*$)", re.I)
_QUOTE = re.compile(r"^\s*([A-Za-z]{0,3}>|\||:)")             # "> quoted", "MB> quoted", "| box"
_HEADER = re.compile(r"^(from|to|message-id|organization|date|newsgroups|subject|reply-to|references|"
                     r"lines|distribution|path|keywords|summary|nntp-posting-host|sender|x-[\w-]+):\s", re.I)
_SIGNATURE = re.compile(r"\n-{2,}\s*\n")                          # "--", "---", "----" lines


def _newsgroup_post(raw: str) -> tuple[str, list[str], str]:
    """(subject, newsgroups, body) of one post; body without quotes, attributions and signature."""
    header, _, body = raw.partition("\n\n")
    fields = {}
    for line in header.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and " " not in key:
            fields.setdefault(key.lower(), value.strip())
    body = _SIGNATURE.split(body, maxsplit=1)[0]
    kept = [line.rstrip() for line in body.splitlines()
            if not _QUOTE.match(line) and not _ATTRIBUTION.search(line.strip()) and not _HEADER.match(line)]
    paragraphs = [" ".join(p.split()) for p in "\n".join(kept).split("\n\n")]
    groups = [g.strip() for g in fields.get("newsgroups", "").split(",")]
    return fields.get("subject", ""), groups, "\n\n".join(p for p in paragraphs if p)


def newsgroup_docs(min_chars: int = 200) -> list[Document]:
    """The 200 mini 20-Newsgroups posts: subject + own text; label = newsgroup."""
    data = zlib.decompress(gensim_file(NEWSGROUP_FILE).read_bytes())
    bunch = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    docs = []
    names = list(bunch["target_names"])  # the two folders the posts were taken from
    for raw in bunch["data"]:
        subject, groups, body = _newsgroup_post(raw)
        group = next((g for g in groups if g in names), groups[0])  # cross-posts name other groups too
        if len(body) >= min_chars:
            docs.append(Document(f"{subject}\n\n{body}" if subject else body, "newsgroups",
                                 title=subject, label=group))
    return docs


# --------------------------------------------------------------------------- together
_LOADERS = {"wiki": wiki_docs, "lee": lee_docs, "newsgroups": newsgroup_docs}


def dedupe(docs: Iterable[Document]) -> list[Document]:
    """Keep the first of documents with equal normalised text (same ``doc_id``)."""
    seen, out = set(), []
    for doc in docs:
        if doc.doc_id not in seen:
            seen.add(doc.doc_id)
            out.append(doc)
    return out


def load_docs(sources: Iterable[str] = SOURCES) -> list[Document]:
    """Documents of the offline ``sources`` (see :data:`SOURCES`), in a fixed order, deduplicated."""
    if isinstance(sources, str):
        sources = (sources,)
    sources = tuple(sources)
    unknown = [s for s in sources if s not in _LOADERS]
    if unknown:
        raise ValueError(f"sources={sources!r}: unknown {unknown}; choose from {SOURCES}")
    return dedupe(doc for s in sources for doc in _LOADERS[s]())


def train_heldout_split(docs: Iterable[Document], heldout: float = 0.1, salt: str = "abstopk_mini"
                        ) -> tuple[list[Document], list[Document]]:
    """Split by document: a document is held out when the hash of (salt, doc_id), read as a
    number in [0, 1), is below ``heldout``. Deterministic and stable: adding documents never moves
    an existing one to the other side."""
    if not 0.0 <= heldout <= 1.0:
        raise ValueError(f"heldout must be a fraction in [0, 1]; got {heldout}")
    train, held = [], []
    for doc in docs:
        h = int(hashlib.sha256(f"{salt}:{doc.doc_id}".encode()).hexdigest()[:15], 16) / 16**15
        (held if h < heldout else train).append(doc)
    return train, held


# --------------------------------------------------------------------------- chunking
def iter_chunks(tokenizer, docs: Iterable, context_length: int, *, prepend_bos: bool = True,
                min_length: int = 16, group: int = 64) -> Iterator[list[int]]:
    """Token-id chunks of at most ``context_length`` ids, document by document.

    Each document (a str or :class:`Document`) is tokenized without special tokens and cut into
    pieces of ``context_length - 1`` ids (``context_length`` if no BOS is prepended); each piece
    gets the tokenizer's BOS id in front when ``prepend_bos`` and the tokenizer has one. A
    document's last piece is kept if it has at least ``min_length`` ids. Chunks never cross a
    document boundary. Tokenizes ``group`` documents per call (fast tokenizers batch well).
    """
    for _doc_index, ids in iter_doc_chunks(tokenizer, docs, context_length, prepend_bos=prepend_bos,
                                           min_length=min_length, group=group):
        yield ids


def iter_doc_chunks(tokenizer, docs: Iterable, context_length: int, *, prepend_bos: bool = True,
                    min_length: int = 16, group: int = 64, offset: int = 0) -> Iterator[tuple[int, list[int]]]:
    """Like :func:`iter_chunks`, yielding ``(doc_index, chunk)`` (index into ``docs``).

    offset: start cutting each document at this token (the tokens before it are skipped). A second
    pass with ``offset = context_length // 2`` puts every token at another position, behind
    another context, which gives new activations of the same text.
    """
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0; got {offset!r}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length must be an int >= 2; got {context_length!r}")
    if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
        raise ValueError(f"min_length must be an int >= 1; got {min_length!r}")
    bos = tokenizer.bos_token_id if prepend_bos else None
    prefix = [bos] if bos is not None else []
    body = context_length - len(prefix)
    pending: list[tuple[int, str]] = []

    def flush():
        encoded = tokenizer([text for _, text in pending], add_special_tokens=False)["input_ids"]
        for (index, _), ids in zip(pending, encoded):
            for start in range(offset, len(ids), body):
                piece = ids[start:start + body]
                if len(piece) == body or len(piece) >= min_length:
                    yield index, prefix + piece
        pending.clear()

    for index, doc in enumerate(docs):
        text = doc.text if isinstance(doc, Document) else doc
        if not isinstance(text, str):
            raise TypeError(f"docs must hold str or Document; got {type(doc).__name__} at index {index}")
        pending.append((index, text))
        if len(pending) >= group:
            yield from flush()
    if pending:
        yield from flush()


def chunk(tokenizer, docs: Iterable, context_length: int, *, prepend_bos: bool = True,
          min_length: int = 16, as_text: bool = False) -> list:
    """All chunks of :func:`iter_chunks` as a list of token-id lists (``as_text``: decoded strings,
    BOS left out)."""
    chunks = list(iter_chunks(tokenizer, docs, context_length, prepend_bos=prepend_bos, min_length=min_length))
    if as_text:
        return tokenizer.batch_decode(chunks, skip_special_tokens=True)
    return chunks


# --------------------------------------------------------------------------- online
def hf_texts(dataset: str = "monology/pile-uncopyrighted", n_docs: int = 1000, split: str = "train",
             text_field: str = "text") -> list[str]:
    """The first ``n_docs`` texts of a hub dataset, streamed (nothing but those is downloaded).

    Needs the optional ``datasets`` package and the Hugging Face hub; raises ImportError or
    :class:`abstopk_mini.lm.models.HubUnavailableError` with what to do otherwise.
    """
    if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 1:
        raise ValueError(f"n_docs must be a positive int; got {n_docs!r}")
    try:
        import datasets
    except ImportError:
        raise ImportError("hf_texts needs the optional package 'datasets' (pip install datasets, or "
                          "pip install 'abstopk_mini[online]'); offline, use am.corpus.load_docs() "
                          "(text shipped with gensim)") from None
    from .models import HubUnavailableError, hub_offline_reason

    reason = hub_offline_reason()
    if reason is not None:
        raise HubUnavailableError(f"hf_texts(dataset={dataset!r}) streams from the Hugging Face hub, "
                                  f"which is not usable: {reason}. Offline, use am.corpus.load_docs() "
                                  "(text shipped with gensim).")
    stream = datasets.load_dataset(dataset, split=split, streaming=True)
    texts = []
    for example in stream:
        text = example[text_field]
        if text and text.strip():
            texts.append(text)
            if len(texts) >= n_docs:
                break
    return texts
