"""Sparse probing (abstopk_mini.saebench.probing) against SAEBench's own implementation.

The reference is ``sae_bench.evals.sparse_probing.probe_training`` (sae-bench 0.6.0, installed with
``--no-deps`` by the README's command) and ``sae_bench.sae_bench_utils.activation_collection``;
both run on tensors, so the same inputs go through both. Without sae-bench these tests skip (CI installs it).
"""

from __future__ import annotations


import pytest
import torch

from abstopk_mini.saebench import probing as P


def _reference(module: str):
    pytest.importorskip("sklearn")
    return pytest.importorskip(module)


@pytest.fixture
def pt(monkeypatch):
    """SAEBench's probe_training with its functions' run-time shape checks (jaxtyping + beartype) taken
    off: they are not the behaviour under test, and their dimension names leak from one call into the
    next once another test has run checked code in this process."""
    module = _reference("sae_bench.evals.sparse_probing.probe_training")
    for name in ("prepare_probe_data", "get_top_k_mean_diff_mask", "apply_topk_mask_reduce_dim", "train_sklearn_probe",
                 "train_probe_on_activations"):
        fn = getattr(module, name)
        while hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        monkeypatch.setattr(module, name, fn)
    return module


def _classes(n: int = 60, d: int = 24, n_classes: int = 3, seed: int = 0, sparse: bool = True) -> dict:
    """Pooled features of ``n_classes`` classes, each with a few informative dimensions (mostly zeros when sparse)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for c in range(n_classes):
        x = torch.randn(n, d, generator=g)
        x[:, c] += 2.0  # class c shifts dimension c
        if sparse:
            x = torch.where(x.abs() > 1.0, x, torch.zeros(()))
        out[f"class{c}"] = x
    return out


def test_one_vs_rest_draws_what_saebench_draws(pt):
    feats = _classes(n=37, n_classes=4)
    for cls in feats:
        torch.manual_seed(5)
        ref_x, ref_y = pt.prepare_probe_data(feats, cls)
        x, y = P.one_vs_rest(feats, cls, torch.Generator().manual_seed(5))
        assert torch.equal(x, ref_x) and torch.equal(y, ref_y)
        assert int(y.sum()) == 37 and len(y) == 74  # balanced: every positive, as many negatives


def test_top_k_selects_saebench_features(pt):
    x, y = P.one_vs_rest(_classes(), "class1", torch.Generator().manual_seed(0))
    for k in (1, 2, 5, 20):
        mask = pt.get_top_k_mean_diff_mask(x, y, k)
        assert torch.equal(P.top_k_mean_diff(x, y, k), (~mask).nonzero().squeeze(1))
    assert P.top_k_mean_diff(x, y, 1).tolist() == [1]  # the informative dimension, found independently


def test_probe_accuracy_equals_saebench_per_class_and_k(pt):
    train, test = _classes(seed=1), _classes(n=30, seed=2)
    for k in (1, 2, 5, None):
        torch.manual_seed(42)
        _, ref = pt.train_probe_on_activations(train, test, select_top_k=k)
        ours = P.probe_classes(train, test, k, torch.Generator().manual_seed(42))
        assert ours == pytest.approx(ref, abs=0.0)
    assert min(ours.values()) > 0.6  # the shifted dimensions are learnable; chance is 0.5


def test_pooling_equals_saebench_meaned_codes():
    ac = _reference("sae_bench.sae_bench_utils.activation_collection")
    from abstopk_mini.sae import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=16, d_sae=48, activation="abstopk", k=4, seed=0))
    g = torch.Generator().manual_seed(3)
    lengths = [5, 9, 3]
    acts = torch.zeros(3, 9, 16)  # SAEBench's layout: padded positions zeroed, [B, L, D]
    for i, n in enumerate(lengths):
        acts[i, :n] = torch.randn(n, 16, generator=g)
    class Encoder:  # what SAEBench asks of an SAE here: encode and dtype
        dtype = torch.float32
        encode = staticmethod(sae.encode)

    with torch.no_grad():
        ref = ac.get_sae_meaned_activations({"c": acts}, Encoder(), 125)["c"]
    rows = torch.cat([acts[i, :n] for i, n in enumerate(lengths)])
    text = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    with torch.no_grad():
        ours = P.pool_by_text(sae.encode(rows), text, 3)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)  # a sum of <= 9 fp32 codes, then one division
    resid_ref = ac.create_meaned_model_activations({"c": acts})["c"]
    torch.testing.assert_close(P.pool_by_text(rows, text, 3), resid_ref, rtol=1e-6, atol=1e-7)


def test_signed_mean_cancels_where_abs_does_not():
    """The reason for codes='abs': a latent that fires +1 and -1 on a text's two tokens pools to 0 signed."""
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.5]])
    text = torch.tensor([0, 0])
    assert P.pool_by_text(z, text, 1).tolist() == [[0.0, 0.25]]
    assert P.pool_by_text(z.abs(), text, 1).tolist() == [[1.0, 0.25]]


def test_sparse_probing_reports_each_k_and_is_seeded():
    train, test = _classes(seed=1), _classes(n=30, seed=2)
    a = P.sparse_probing(train, test, (1, 5), seed=3, full=True)
    b = P.sparse_probing(train, test, (1, 5), seed=3, full=True)
    assert a == b and set(a["top_k"]) == {1, 5} and a["full"] is not None
    assert a["top_k"][1] == pytest.approx(sum(a["per_class"][1].values()) / 3)


@pytest.mark.parametrize("bad, match", [
    (dict(k=0), "k must be in 1..24"),
    (dict(k=25), "k must be in 1..24"),
])
def test_top_k_refuses_bad_k(bad, match):
    x, y = P.one_vs_rest(_classes(), "class0", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        P.top_k_mean_diff(x, y, **bad)


def test_one_vs_rest_refuses_one_class_and_too_few_negatives():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="at least two classes"):
        P.one_vs_rest({"a": torch.zeros(3, 2)}, "a", g)
    with pytest.raises(ValueError, match="at least as many"):
        P.one_vs_rest({"a": torch.zeros(5, 2), "b": torch.zeros(3, 2)}, "a", g)
