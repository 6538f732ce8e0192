"""Truncated forward, per-token activations, harvesting to shards, the shuffling reader."""

from __future__ import annotations

import json

import pytest
import torch

from abstopk_mini.lm import activations as A
from abstopk_mini.lm import hooks as H
from abstopk_mini.lm import corpus as C
from abstopk_mini.lm import models as M

from conftest import TINY_SENTENCES

TEXTS = ["The king and the queen walked.", "A woman read books in the library and a man read too.",
         "Sparse autoencoders."]


def _batch(loaded, texts):
    seqs = H.encode(loaded.tokenizer, texts, 64, prepend_bos=True)
    return H.pad(seqs, loaded.info.pad_token_id)


class _Counter:
    """Counts forward calls of a module."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1

    def remove(self):
        self.handle.remove()


def _check_against_hidden_states(loaded, texts, layers):
    """hook_resid_post at L == hidden_states[L + 1] (last layer: final norm applied there)."""
    model, info = loaded.model, loaded.info
    ids, mask = _batch(loaded, texts)
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(hidden) == info.n_layers + 1
    real = mask.bool()
    for layer in layers:
        x = H.residual_stream(loaded, ids, layer, mask)
        assert x.shape == (*ids.shape, info.d_model)
        if layer < info.n_layers - 1:
            torch.testing.assert_close(x[real], hidden[layer + 1][real], rtol=1e-5, atol=1e-5)
        else:  # transformers applies the final norm to the last hidden state; hook_resid_post does not
            final_norm = model.model.norm if info.family == "gemma3" else model.transformer.ln_f
            with torch.inference_mode():
                normed = final_norm(x)
            torch.testing.assert_close(normed[real], hidden[layer + 1][real], rtol=1e-5, atol=1e-5)
            assert (x[real] - hidden[layer + 1][real]).abs().max() > 1e-2


def _check_truncation(loaded, layer):
    blocks = M.get_blocks(loaded)
    head = loaded.model.get_output_embeddings()
    counters = [_Counter(b) for b in blocks] + [_Counter(head)]
    try:
        ids, mask = _batch(loaded, TEXTS[:2])
        H.residual_stream(loaded, ids, layer, mask)
        calls = [c.calls for c in counters]
    finally:
        for c in counters:
            c.remove()
    assert calls == [1] * (layer + 1) + [0] * (len(blocks) - layer - 1) + [0]  # later blocks, LM head: never


# --------------------------------------------------------------------------- tiny GPT-2
def test_truncated_forward_matches_hidden_states_gpt2(tiny_gpt2):
    _check_against_hidden_states(tiny_gpt2, TEXTS, layers=[0, 1])


def test_truncation_stops_after_block_gpt2(tiny_gpt2):
    _check_truncation(tiny_gpt2, 0)


def test_model_still_works_after_truncated_forward(tiny_gpt2):
    ids, mask = _batch(tiny_gpt2, TEXTS)
    with torch.inference_mode():
        before = tiny_gpt2.model(input_ids=ids, attention_mask=mask).logits
    hooks = dict(M.get_blocks(tiny_gpt2)[0]._forward_hooks)  # transformers keeps its own hooks there
    H.residual_stream(tiny_gpt2, ids, 0, mask)
    assert dict(M.get_blocks(tiny_gpt2)[0]._forward_hooks) == hooks  # ours is gone
    with torch.inference_mode():
        after = tiny_gpt2.model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(before, after, rtol=0, atol=0)


def test_right_padding_does_not_change_activations(tiny_gpt2):
    ids, mask = _batch(tiny_gpt2, TEXTS)
    x = H.residual_stream(tiny_gpt2, ids, 1, mask)
    for i, text in enumerate(TEXTS):
        alone_ids, _ = _batch(tiny_gpt2, [text])
        alone = H.residual_stream(tiny_gpt2, alone_ids, 1)
        n = int(mask[i].sum())
        torch.testing.assert_close(x[i, :n], alone[0], rtol=1e-5, atol=1e-5)


def test_residual_stream_is_a_normal_tensor(tiny_gpt2):
    ids, mask = _batch(tiny_gpt2, TEXTS[:1])
    x = H.residual_stream(tiny_gpt2, ids, 0, mask)
    assert not x.is_inference()
    w = torch.ones(x.shape[-1], requires_grad=True)
    (x @ w).sum().backward()  # would fail on an inference-mode tensor
    assert w.grad is not None


def test_token_activations_drop_bos_and_pad(tiny_gpt2):
    tok, info = tiny_gpt2.tokenizer, tiny_gpt2.info
    out = A.token_activations(tiny_gpt2, TEXTS, 1, batch_size=2)
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in TEXTS]
    assert len(out) == sum(lengths) and out.acts.shape == (sum(lengths), info.d_model)
    assert info.bos_token_id not in out.token_ids.tolist() and info.pad_token_id not in out.token_ids.tolist()
    assert out.doc.tolist() == sum(([d] * n for d, n in enumerate(lengths)), [])
    assert out.pos.tolist() == sum((list(range(1, n + 1)) for n in lengths), [])
    assert out.tokens == tok.convert_ids_to_tokens(out.token_ids.tolist())
    assert out.hook_name == "blocks.1.hook_resid_post" and out.acts.dtype == torch.float32
    # rows equal the truncated forward of each text alone
    for d, text in enumerate(TEXTS):
        ids, _ = _batch(tiny_gpt2, [text])
        ref = H.residual_stream(tiny_gpt2, ids, 1)[0, 1:]
        torch.testing.assert_close(out.acts[out.doc == d], ref, rtol=1e-5, atol=1e-5)


def test_token_activations_keep_special(tiny_gpt2):
    out = A.token_activations(tiny_gpt2, TEXTS, 0, keep_special=True)
    ids, mask = _batch(tiny_gpt2, TEXTS)
    assert len(out) == ids.numel()
    assert out.token_ids.tolist() == ids.flatten().tolist()
    assert out.tokens[0] == "<|endoftext|>"


def test_token_activations_accepts_token_ids_and_truncates(tiny_gpt2):
    chunks = C.chunk(tiny_gpt2.tokenizer, TEXTS, context_length=6, min_length=1)
    out = A.token_activations(tiny_gpt2, chunks, 0)
    assert len(out) == sum(len(c) - 1 for c in chunks)
    short = A.token_activations(tiny_gpt2, TEXTS, 0, context_length=4)
    assert short.pos.max().item() == 3 and len(short) == 3 * len(TEXTS)


def test_bad_arguments(tiny_gpt2):
    with pytest.raises(ValueError, match="0 <= layer < n_layers = 2"):
        A.token_activations(tiny_gpt2, TEXTS, 2)
    with pytest.raises(TypeError, match="LoadedModel"):
        A.token_activations(tiny_gpt2.model, TEXTS, 0)
    with pytest.raises(TypeError, match="not one str"):
        A.token_activations(tiny_gpt2, "one text", 0)
    with pytest.raises(ValueError, match="batch_size"):
        A.token_activations(tiny_gpt2, TEXTS, 0, batch_size=0)


# --------------------------------------------------------------------------- harvest
DOCS = TINY_SENTENCES * 6  # 36 short documents


def _harvest(loaded, out, **kw):
    args = dict(layer=1, n_tokens=300, context_length=8, batch_size=4, shard_tokens=64, min_length=2,
                text_source="tiny", progress=False)
    args.update(kw)
    return A.harvest(loaded, DOCS, out_dir=out, **args)


def test_harvest_writes_shards_and_manifest(tiny_gpt2, tmp_path):
    manifest = _harvest(tiny_gpt2, tmp_path)
    assert manifest["complete"] and manifest["tokens_written"] == 300 and manifest["n_shards"] == 5
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest
    for key, value in {"model": tiny_gpt2.info.name, "layer": 1, "hook_name": "blocks.1.hook_resid_post",
                       "context_length": 8, "dtype": "float32", "d_model": 32, "text_source": "tiny"}.items():
        assert manifest[key] == value
    assert [s["n_tokens"] for s in manifest["shards"]] == [64, 64, 64, 64, 44]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"] + [f"shard_0000{i}.safetensors"
                                                                              for i in range(5)]
    # independent reference: the same chunks through token_activations, in order
    chunks = C.chunk(tiny_gpt2.tokenizer, DOCS, 8, min_length=2)
    ref = A.token_activations(tiny_gpt2, chunks, 1)
    acts = A.load_activations(tmp_path)
    torch.testing.assert_close(acts, ref.acts[:300], rtol=1e-5, atol=1e-5)
    ds = A.ShardDataset(tmp_path)
    ids = torch.cat([ds.read_shard(i, "token_ids") for i in range(5)])
    assert ids.tolist() == ref.token_ids[:300].tolist()
    chunk_index = torch.cat([ds.read_shard(i, "chunk_index") for i in range(5)])
    assert chunk_index.tolist() == ref.doc[:300].tolist()
    assert A.load_activations(tmp_path, max_tokens=100).shape == (100, 32)


def test_harvest_resume_equals_uninterrupted(tiny_gpt2, tmp_path, monkeypatch):
    full = _harvest(tiny_gpt2, tmp_path / "full")
    import safetensors.torch

    real_save = safetensors.torch.save_file
    saved = []

    def crash_on_third(tensors, path, *a, **k):
        if len(saved) == 2:
            raise KeyboardInterrupt("simulated interruption")
        saved.append(path)
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _harvest(tiny_gpt2, tmp_path / "resumed")
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    partial = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert not partial["complete"] and partial["n_shards"] == 2
    assert not list((tmp_path / "resumed").glob("*.tmp"))
    (tmp_path / "resumed" / "shard_00002.safetensors.tmp").write_bytes(b"half a shard")  # a harder crash

    block0 = _Counter(M.get_blocks(tiny_gpt2)[0])
    try:
        resumed = _harvest(tiny_gpt2, tmp_path / "resumed")
        resumed_calls = block0.calls
        block0.calls = 0
        _harvest(tiny_gpt2, tmp_path / "again")
        fresh_calls = block0.calls
        block0.calls = 0
        _harvest(tiny_gpt2, tmp_path / "resumed")  # complete: nothing to do
        assert block0.calls == 0
    finally:
        block0.remove()
    assert resumed_calls < fresh_calls  # the two finished shards were not recomputed
    assert resumed["content_sha256"] == full["content_sha256"]
    assert [s["sha256"] for s in resumed["shards"]] == [s["sha256"] for s in full["shards"]]
    assert torch.equal(A.load_activations(tmp_path / "resumed"), A.load_activations(tmp_path / "full"))
    names = lambda d: sorted(p.name for p in d.iterdir())  # noqa: E731
    assert names(tmp_path / "resumed") == names(tmp_path / "full")  # no stray files


def test_harvest_resume_with_other_texts_is_refused(tiny_gpt2, tmp_path):
    _harvest(tiny_gpt2, tmp_path, n_tokens=128)
    with pytest.raises(ValueError, match="texts differ"):
        A.harvest(tiny_gpt2, list(reversed(DOCS)), 1, 300, tmp_path, context_length=8, batch_size=4,
                  shard_tokens=64, min_length=2, text_source="tiny", progress=False)


def test_harvest_refuses_a_different_manifest(tiny_gpt2, tmp_path):
    _harvest(tiny_gpt2, tmp_path, n_tokens=64)
    with pytest.raises(ValueError, match=r"layer: 1 there, 0 asked.*overwrite=True"):
        _harvest(tiny_gpt2, tmp_path, layer=0, n_tokens=64)
    with pytest.raises(ValueError, match="context_length"):
        _harvest(tiny_gpt2, tmp_path, context_length=16, n_tokens=64)
    manifest = _harvest(tiny_gpt2, tmp_path, layer=0, n_tokens=64, overwrite=True)
    assert manifest["layer"] == 0 and manifest["complete"]


def test_harvest_bfloat16_and_exhausted_texts(tiny_gpt2, tmp_path):
    f32 = _harvest(tiny_gpt2, tmp_path / "f32", n_tokens=100)
    bf16 = _harvest(tiny_gpt2, tmp_path / "bf16", n_tokens=100, dtype=torch.bfloat16)
    assert bf16["dtype"] == "bfloat16"
    ds = A.ShardDataset(tmp_path / "bf16")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "bf16" / "shard_00000.safetensors"), "pt") as f:
        assert f.get_tensor("activations").dtype == torch.bfloat16
    torch.testing.assert_close(A.load_activations(tmp_path / "bf16"), A.load_activations(tmp_path / "f32"),
                               rtol=1e-2, atol=1e-2)
    assert len(ds) == f32["tokens_written"] == 100
    with pytest.warns(UserWarning, match="only"):  # more than the texts give, within their size bound
        short = _harvest(tiny_gpt2, tmp_path / "short", n_tokens=5000)
    assert short["complete"] and short["tokens_written"] < 5000
    with pytest.raises(ValueError, match="can give at most"):  # beyond any tokenisation of the texts: refused
        _harvest(tiny_gpt2, tmp_path / "huge", n_tokens=10**6)
    assert not (tmp_path / "huge").exists()


def test_shuffled_batches(tiny_gpt2, tmp_path, monkeypatch):
    _harvest(tiny_gpt2, tmp_path)  # 300 tokens in 5 shards
    everything = A.load_activations(tmp_path)
    batches = list(A.iter_batches(tmp_path, 32, seed=1, buffer_shards=2))
    assert [len(b) for b in batches] == [32] * 9 + [12]
    assert all(b.dtype == torch.float32 and b.shape[1] == 32 for b in batches)
    got = torch.cat(batches)
    key = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731 - order rows for a set comparison
    torch.testing.assert_close(key(got), key(everything), rtol=0, atol=0)  # each token exactly once
    assert not torch.equal(got, everything)  # shuffled
    again = torch.cat(list(A.iter_batches(tmp_path, 32, seed=1, buffer_shards=2)))
    other = torch.cat(list(A.iter_batches(tmp_path, 32, seed=2, buffer_shards=2)))
    assert torch.equal(got, again) and not torch.equal(got, other)
    two = list(A.iter_batches(tmp_path, 32, seed=1, epochs=2, drop_last=True))
    assert len(two) == 2 * 9 and not torch.equal(torch.cat(two[:9]), torch.cat(two[9:]))
    # streaming: the first batch needs only buffer_shards shards read
    reads = []
    real_read = A.ShardDataset.read_shard
    monkeypatch.setattr(A.ShardDataset, "read_shard", lambda self, i, key="activations":
                        reads.append(i) or real_read(self, i, key))
    next(iter(A.iter_batches(tmp_path, 8, seed=0, buffer_shards=2)))
    assert len(reads) == 2


def test_reader_errors_and_compatibility(tiny_gpt2, tmp_path):
    with pytest.raises(FileNotFoundError, match="harvest"):
        A.ShardDataset(tmp_path)
    _harvest(tiny_gpt2, tmp_path, n_tokens=64)
    name = tiny_gpt2.info.name
    A.check_compatible(tmp_path, name, 1, d_model=32)
    A.check_compatible(A.ShardDataset(tmp_path), name, 1)
    with pytest.raises(ValueError, match=r"layer 1 / blocks.1.hook_resid_post \(expected layer 0\)"):
        A.check_compatible(tmp_path, name, 0)
    with pytest.raises(ValueError, match="expected 'gemma-3-270m'"):
        A.check_compatible(A.read_manifest(tmp_path), "gemma-3-270m", 1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="incomplete"):
        A.ShardDataset(tmp_path)


# --------------------------------------------------------------------------- Gemma
GEMMA_TEXTS = ["The capital of France is Paris, and the capital of Italy is Rome.",
               "She gave him the book yesterday.", "1, 2, 3, 4, 5"]


@pytest.mark.slow
def test_truncated_forward_matches_hidden_states_gemma(gemma):
    _check_against_hidden_states(gemma, GEMMA_TEXTS, layers=[0, 8, 16, 17])


@pytest.mark.slow
def test_truncation_stops_after_block_gemma(gemma):
    _check_truncation(gemma, 8)


@pytest.mark.slow
def test_gemma_harvest_and_batches(gemma, tmp_path):
    docs = [d for d in C.lee_docs()[:4]]
    manifest = A.harvest(gemma, docs, 6, 200, tmp_path, context_length=32, batch_size=4, shard_tokens=128,
                         text_source="lee[:4]", progress=False)
    assert manifest["hook_name"] == "blocks.6.hook_resid_post" and manifest["d_model"] == 640
    batches = list(A.iter_batches(tmp_path, 50, seed=0))
    assert [b.shape for b in batches] == [torch.Size([50, 640])] * 4
    ref = A.token_activations(gemma, C.chunk(gemma.tokenizer, docs, 32), 6, batch_size=4)  # same batches
    assert 2 not in ref.token_ids.tolist()  # BOS dropped
    torch.testing.assert_close(A.load_activations(tmp_path), ref.acts[:200], rtol=1e-5, atol=1e-4)
    A.check_compatible(tmp_path, "gemma-3-270m", 6, d_model=640)
    with pytest.raises(ValueError, match="model 'gemma-3-270m' \\(expected 'gpt2'\\)"):
        A.check_compatible(tmp_path, "gpt2", 6)
