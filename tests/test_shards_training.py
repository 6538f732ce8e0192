"""Training straight from a harvest on disk: ShardDataset as a train_sae source."""

import torch

import abstopk_mini as am
from abstopk_mini.lm.shards import ShardDataset
from conftest import TINY_SENTENCES
from test_train import assert_same_run, keep_checkpoints  # noqa: F401  (a fixture)


def _harvest(loaded, out):
    return am.lm.activations.harvest(loaded, TINY_SENTENCES * 20, layer=1, n_tokens=1500, out_dir=out,
                                  context_length=16, batch_size=8, shard_tokens=256, min_length=2, progress=False)


def test_each_epoch_has_its_own_deterministic_order(tiny_gpt2, tmp_path):
    _harvest(tiny_gpt2, tmp_path)
    ds = ShardDataset(tmp_path)
    e0 = torch.cat(list(ds.iter_epoch(0, seed=3, batch_size=100)))
    e0_again = torch.cat(list(ds.iter_epoch(0, seed=3, batch_size=100)))
    e1 = torch.cat(list(ds.iter_epoch(1, seed=3, batch_size=100)))
    assert torch.equal(e0, e0_again)
    assert not torch.equal(e0, e1)
    # every epoch is a permutation of the same rows
    key = lambda t: t.sum(1).sort().values
    assert e0.shape == e1.shape == (len(ds), ds.d_model)
    torch.testing.assert_close(key(e0), key(e1))


def test_train_from_shards_resumes_exactly(tiny_gpt2, tmp_path, keep_checkpoints):
    _harvest(tiny_gpt2, tmp_path / "acts")
    cfg = am.SAEConfig(d_in=ShardDataset(tmp_path / "acts").d_model, d_sae=64, activation="abstopk", k=4, device="cpu")
    # ~1400 tokens in batches of 128: 11 steps per epoch; 30 steps cross two epoch boundaries
    kw = dict(n_tokens=30 * 128, batch_size=128, init_sample=512, progress=False, log_every=1)
    straight, h1 = am.train_sae(cfg, ShardDataset(tmp_path / "acts"), checkpoint_dir=str(tmp_path / "a"),
                                checkpoint_every=17, **kw)
    resumed, h2 = am.train_sae(cfg, ShardDataset(tmp_path / "acts"), resume=keep_checkpoints[17], **kw)
    assert h1["n_steps"] == h2["n_steps"] == 30
    assert_same_run(straight, h1, resumed, h2)


def test_n_tokens_defaults_to_one_pass_over_the_shards(tiny_gpt2, tmp_path):
    _harvest(tiny_gpt2, tmp_path)
    ds = ShardDataset(tmp_path)
    cfg = am.SAEConfig(d_in=ds.d_model, d_sae=32, activation="topk", k=4, device="cpu")
    _, hist = am.train_sae(cfg, ds, batch_size=256, init_sample=256, progress=False)
    assert hist["n_tokens"] == len(ds) > 1000


def test_chunk_offsets_read_the_text_again_at_new_positions(tiny_gpt2, tmp_path):
    one = am.lm.activations.harvest(tiny_gpt2, TINY_SENTENCES * 20, layer=1, n_tokens=10_000, out_dir=tmp_path / "a",
                                 context_length=16, batch_size=8, min_length=2, progress=False)
    two = am.lm.activations.harvest(tiny_gpt2, TINY_SENTENCES * 20, layer=1, n_tokens=10_000, out_dir=tmp_path / "b",
                                 context_length=16, batch_size=8, min_length=2, progress=False, chunk_offsets=(0, 3))
    assert two["chunk_offsets"] == [0, 3] and "chunk_offsets" not in one
    a, b = ShardDataset(tmp_path / "a"), ShardDataset(tmp_path / "b")
    n_a = len(a)
    # the first pass is the plain harvest; the second pass adds the text minus 3 tokens per doc, re-chunked
    assert torch.equal(torch.cat([b.read_shard(i) for i in range(len(b.shards))])[:n_a],
                       torch.cat([a.read_shard(i) for i in range(len(a.shards))]))
    assert n_a < len(b) <= 2 * n_a
