"""Shared fixtures: the embedded Gemma-3-270M and a tiny random GPT-2, both offline.

* ``gemma``: ``am.lm.models.load_model()`` once per test session (its first load ever builds the
  cache, about a minute; later loads take a few seconds). Mark tests that use it ``slow``.
* ``tiny_gpt2_dir``: a directory holding a randomly initialised 2-layer GPT-2 (d_model 32) and a
  byte-level BPE tokenizer trained on a few sentences, both saved with ``save_pretrained``;
  ``tiny_gpt2``: that directory loaded with ``am.lm.models.load_model(dir)`` (CPU, float32).
"""

from __future__ import annotations

import pytest

TINY_SENTENCES = [
    "The king and the queen walked through the garden.",
    "A man and a woman read books in the library.",
    "Sparse autoencoders find features in the residual stream.",
    "He said that she would come back tomorrow morning.",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers like 1, 2, 3 and 42 appear in text too.",
]


def pytest_configure(config):
    """Under pytest-xdist each worker gets one thread: two workers on two cores, no oversubscription."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_global_rng():
    """Every test starts from the same global RNG state, whatever ran before it (or on which xdist worker)."""
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def gemma():
    import abstopk_mini as am

    return am.lm.models.load_model("gemma-3-270m", device="cpu")


def build_tiny_gpt2(directory, n_layer: int = 2, n_embd: int = 32, seed: int = 0):
    """Save a random tiny GPT-2 and its tokenizer to ``directory``; return the directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TINY_SENTENCES, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", pad_token="<pad>")
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=2, n_positions=128,
                        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_gpt2_dir):
    import abstopk_mini as am

    return am.lm.models.load_model(tiny_gpt2_dir, device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (two cores are shared; one thread is also faster at these
    sizes). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_harvest_spec(model_dir, n_tokens: int = 3000):
    """A harvest of the tiny GPT-2's layer 1 on the offline ``lee`` text, one chunk offset."""
    from abstopk_mini.runs.store import HarvestSpec

    return HarvestSpec(model=str(model_dir), layer=1, n_tokens=n_tokens, context_length=32, sources=("lee",),
                       chunk_offsets=(0,))


@pytest.fixture
def spec(tiny_gpt2_dir):
    """:func:`tiny_harvest_spec` of the tiny GPT-2 (3,000 tokens)."""
    return tiny_harvest_spec(tiny_gpt2_dir)


@pytest.fixture
def acts(spec, tiny_gpt2, tmp_path):
    """The harvest of ``spec``, in a runs directory of its own (``tmp_path``)."""
    from abstopk_mini.runs.store import harvest_spec

    return harvest_spec(spec, tmp_path, loaded=tiny_gpt2, progress=False)


@pytest.fixture(autouse=True)
def _layout_check_every_book_figure(request, monkeypatch):
    """Every book figure (``abstopk_mini.chapters.style.Figure``) a test builds is saved at the end of
    the test the way the book saves it (PNG at style.DPI, tight crop), so the layout check of
    ``abstopk_mini.chapters.layout_check`` runs on it: a figure function whose texts overlap, whose
    legend covers data, whose panel is a sliver or whose font is off the book's sizes fails the
    test that drew it. tests/test_layout_check.py makes such figures on purpose and checks itself."""
    if request.module.__name__.rsplit(".", 1)[-1] == "test_layout_check":
        yield
        return
    import io

    from abstopk_mini.chapters import style

    made = []
    init = style.Figure.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(style.Figure, "__init__", record)
    yield
    for fig in made:
        if fig.axes:
            fig.savefig(io.BytesIO(), format="png", dpi=style.DPI, bbox_inches="tight", pad_inches=0.05)


# ----------------------------------------------------------------------------- the exercise checks' tests
def mutation_cases(mutations):
    """One ``pytest.param(check, wrong, says)`` per wrong implementation of a ``MUTATIONS`` table
    ``{check name: [(label, wrong function, regex the message must match), ...]}``, id ``check-label``."""
    import pytest

    return [pytest.param(check, wrong, says, id=f"{check}-{label}")
            for check, rows in mutations.items() for label, wrong, says in rows]


def check_rejects(check: str, wrong, says: str) -> None:
    """``am.exercises.<check>(wrong)`` raises AssertionError with a message matching ``says``."""
    import pytest

    from abstopk_mini import exercises

    with pytest.raises(AssertionError, match=says):
        getattr(exercises, check)(wrong)


def readers_lines(capsys, n: int) -> list[str]:
    """The ``n`` pass lines the checks just printed, each read as the reader's own success (none says it
    ran on the book's reference solution)."""
    out = capsys.readouterr().out.splitlines()
    assert len(out) == n and all(line.startswith("✓ your right_") and "reference" not in line for line in out), out
    return out
