"""TPP (abstopk_mini.saebench.tpp) against SAEBench's own implementation, and its rules on cases worked by hand.

The reference is ``sae_bench.evals.scr_and_tpp.main`` (sae-bench 0.6.0, installed with ``--no-deps`` by
the README's command): its probe training, clean accuracies, latent effects, ablations and TPP numbers,
called in the order of its ``run_eval_single_dataset`` on token activations and a stand-in SAE, against
ours on the same texts pooled. Without sae-bench the comparison skips (CI installs it).
"""

from __future__ import annotations

import pytest
import torch

from abstopk_mini.saebench import tpp as T
from abstopk_mini.saebench.absorption import split_view


@pytest.fixture
def sb(monkeypatch):
    pytest.importorskip("sklearn")
    main = pytest.importorskip("sae_bench.evals.scr_and_tpp.main")
    pt = pytest.importorskip("sae_bench.evals.sparse_probing.probe_training")
    for name in ("prepare_probe_data", "train_probe_on_activations", "train_probe_gpu"):
        fn = getattr(pt, name)  # jaxtyping/beartype shape checks leak dimension names between calls (test_saebench_probing.py)
        while hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        monkeypatch.setattr(pt, name, fn)
    return main, pt


class StandInSAE:
    """What SAEBench's TPP calls on an SAE: encode, decode and W_dec. Signed codes when ``signed``."""

    def __init__(self, d: int, F: int, seed: int, signed: bool):
        g = torch.Generator().manual_seed(seed)
        self.W_enc = torch.randn(d, F, generator=g) / d ** 0.5
        self.W_dec = torch.randn(F, d, generator=g) * torch.rand(F, 1, generator=g) * 3  # rows of unequal norm
        self.b_dec = torch.randn(d, generator=g) * 0.1
        self.signed = signed

    def encode(self, x):
        u = (x - self.b_dec) @ self.W_enc
        keep = u.abs().topk(4, dim=-1).indices
        z = torch.zeros_like(u).scatter(-1, keep, u.gather(-1, keep))
        return z if self.signed else z.clamp(min=0)

    def decode(self, z):
        return z @ self.W_dec + self.b_dec


def _texts(n: int, L: int = 6, d: int = 16, classes: int = 4, seed: int = 0, padding: bool = True) -> dict:
    """Token activations [n, L, d] per class, class c shifted along dimension c; with ``padding`` the last
    tokens of some texts are padding (zeros)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for c in range(classes):
        x = torch.randn(n, L, d, generator=g)
        x[:, :, c] += 1.0
        lengths = torch.randint(2, L + 1, (n,), generator=g) if padding else torch.full((n,), L)
        x[torch.arange(L)[None, :] >= lengths[:, None]] = 0.0
        out[f"class{c}"] = x
    return out


def _pool(acts_BLD, f=lambda x: x):
    """Mean over each text's real (non-zero) tokens of f(tokens)."""
    real = (acts_BLD.sum(-1) != 0).float()
    return (f(acts_BLD) * real[..., None]).sum(1) / real.sum(1)[:, None]


@pytest.mark.parametrize("signed", [False, True])
def test_tpp_equals_saebench(sb, signed):
    main, pt = sb
    # no padding: SAEBench's ablation also moves masked positions (x = 0 encodes to codes that are not
    # zero once b_dec is subtracted, and their removed contributions enter the text's mean); ours pools real tokens only
    train, test = _texts(30, seed=1, padding=False), _texts(12, seed=2, padding=False)
    sae = StandInSAE(16, 40, seed=3, signed=signed)
    ns, classes = [2, 5, 10], list(train)

    torch.manual_seed(42)  # SAEBench's order (run_eval_single_dataset), on its global generator
    mean_train, mean_test = ({c: _pool(v) for c, v in s.items()} for s in (train, test))
    probes, _ = pt.train_probe_on_activations(mean_train, mean_test, select_top_k=None, use_sklearn=False, batch_size=16,
                                              epochs=20, lr=1e-3, perform_scr=False, early_stopping_patience=20,
                                              l1_penalty=1e-3)
    clean = main.get_probe_test_accuracy(probes, classes, mean_test, 500, False)
    node_effects = main.get_all_node_effects_for_one_sae(sae, probes, classes, False, train, 125)
    ablated = main.perform_feature_ablations(probes, sae, 125, test, node_effects, ns, classes, 500, False)
    ref_overall, ref_per_class = main.create_tpp_plotting_dict(ablated, clean)

    norms = sae.W_dec.norm(dim=1)  # ours: codes in residual units along unit rows
    codes = [{c: _pool(v, lambda x: sae.encode(x) * norms) for c, v in s.items()} for s in (train, test)]
    out = T.tpp(mean_train, mean_test, codes[0], codes[1], sae.W_dec / norms[:, None], ns, seed=42)

    assert out["clean"] == pytest.approx(clean, abs=1e-9)
    for n in ns:
        for part, key in (("total", "total_metric"), ("intended", "intended_diff_only"), ("unintended", "unintended_diff_only")):
            assert out["overall"][n][part] == pytest.approx(ref_overall[f"tpp_threshold_{n}_{key}"], abs=1e-6)
            for c in classes:
                assert out["per_class"][c][n][part] == pytest.approx(ref_per_class[c][f"tpp_threshold_{n}_{key}"], abs=1e-6)
    # the ablations moved something: the comparison is not of two untouched probes
    assert any(abs(v["intended"]) > 0 for v in out["overall"].values())


def test_trained_probe_equals_saebench(sb):
    _, pt = sb
    x = {c: _pool(v) for c, v in _texts(40, seed=4).items()}
    torch.manual_seed(7)
    xtr, ytr = pt.prepare_probe_data(x, "class1")
    xte, yte = pt.prepare_probe_data(x, "class2")
    ref, ref_acc = pt.train_probe_gpu(xtr, ytr, xte, yte, dim=16, batch_size=16, epochs=20, lr=1e-3, l1_penalty=1e-3,
                                      early_stopping_patience=20)
    g = torch.Generator().manual_seed(7)
    from abstopk_mini.saebench.probing import one_vs_rest

    a, b = one_vs_rest(x, "class1", g), one_vs_rest(x, "class2", g)
    probe, acc = T.train_probe(*a, *b, g)
    assert torch.equal(a[0], xtr) and torch.equal(b[1], yte)
    assert torch.allclose(probe.weight, ref.net.weight.detach()[0], atol=1e-6) and acc == ref_acc


def test_effects_keep_only_latents_higher_on_the_class():
    codes = {"a": torch.tensor([[2.0, 0.0, -3.0]] * 4), "b": torch.tensor([[0.0, 1.0, 0.0]] * 4),
             "c": torch.tensor([[0.0, 1.0, 0.0]] * 4)}
    dirs = torch.eye(3)
    probe = T.Probe(torch.tensor([1.0, 1.0, -1.0]), torch.zeros(1))
    e = T.effects(codes, dirs, probe, "a", torch.Generator().manual_seed(0))
    # latent 0: +2 on "a", aligned: effect 2; latent 1: lower on "a": 0; latent 2: -3 on "a" (a signed
    # latent carrying "a" by negative values, and the probe reads -x2): SAEBench's max(., 0) drops it
    assert e.tolist() == [2.0, 0.0, 0.0]
    z, W = split_view(torch.cat(list(codes.values())), dirs)
    split = {c: z[4 * i:4 * i + 4] for i, c in enumerate(codes)}
    e = T.effects(split, W, probe, "a", torch.Generator().manual_seed(0))
    assert e.tolist() == [2.0, 0.0, 0.0, 0.0, 0.0, 3.0]  # the split view finds latent 2's negative side


def test_top_n_and_ablation():
    scores = torch.tensor([0.5, 0.0, 2.0, -1.0, 1.0])
    assert T.top_n(scores, 2).tolist() == [False, False, True, False, True]
    assert T.top_n(scores, 5).sum() == 4  # only non-zero scores are chosen
    with pytest.raises(ValueError, match="more than the 5 latents"):
        T.top_n(scores, 6)
    x, codes, dirs = torch.ones(2, 3), torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert T.ablate(x, codes, dirs, torch.tensor([False, True])).tolist() == [[1.0, -1.0, 1.0], [1.0, 2.0, 1.0]]


def test_metric_by_hand():
    clean = {"a": 0.9, "b": 0.8, "c": 1.0}
    ablated = {"a": {2: {"a": 0.5, "b": 0.8, "c": 0.9}}, "b": {2: {"a": 0.9, "b": 0.8, "c": 1.0}},
               "c": {2: {"a": 0.7, "b": 0.6, "c": 0.6}}}
    out = T.tpp_metric(ablated, clean)
    assert out["per_class"]["a"][2]["total"] == pytest.approx(0.4 - 0.05)
    assert out["per_class"]["b"][2]["total"] == pytest.approx(0.0)
    assert out["per_class"]["c"][2]["total"] == pytest.approx(0.4 - 0.2)
    assert out["overall"][2]["total"] == pytest.approx((0.35 + 0.0 + 0.2) / 3)


def test_two_classes_refused():
    x = {"a": torch.zeros(4, 2), "b": torch.ones(4, 2)}
    with pytest.raises(ValueError, match="at least 3 classes"):
        T.tpp(x, x, x, x, torch.eye(2))


def test_split_view_agrees_with_signed_for_non_negative_codes():
    """A TopK-like code has no negative side, so both views choose and ablate the same latents (while
    every class has at least N positive effects: below that, SAEBench's rule fills with zero-effect latents)."""
    g = torch.Generator().manual_seed(0)
    classes = [f"c{i}" for i in range(4)]
    make = lambda n: ({c: torch.randn(n, 8, generator=g) + i for i, c in enumerate(classes)},  # noqa: E731
                      {c: torch.randn(n, 30, generator=g).clamp(min=0) for c in classes})
    (x, codes), (xt, ct) = make(24), make(12)
    d = torch.randn(30, 8, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    split = lambda cc: {c: split_view(v, d)[0] for c, v in cc.items()}  # noqa: E731
    probes = T.train_probes(x, xt, torch.Generator().manual_seed(1))
    assert all((T.effects(codes, d, probes[c], c, torch.Generator().manual_seed(0)) > 0).sum() >= 5 for c in classes)
    a = T.tpp(x, xt, codes, ct, d, (2, 5), seed=1)
    b = T.tpp(x, xt, split(codes), split(ct), split_view(codes[classes[0]], d)[1], (2, 5), seed=1)
    assert a["overall"] == b["overall"] and a["clean"] == b["clean"]


def test_saebench_ablation_also_moves_masked_positions(sb):
    """The one deliberate difference, pinned: on padded texts SAEBench's ablated mean is ours minus the
    ablated latents' contributions at the masked (zero) positions, over the text's real token count."""
    main, _ = sb
    acts = _texts(10, seed=5)["class0"]  # [10, 6, 16], some trailing positions zero
    sae = StandInSAE(16, 40, seed=6, signed=True)
    mask = torch.zeros(40, dtype=torch.bool)
    mask[[1, 7, 19, 33]] = True
    ref = main.ablated_precomputed_activations(acts, sae, mask, 125)
    norms = sae.W_dec.norm(dim=1)
    ours = T.ablate(_pool(acts), _pool(acts, lambda x: sae.encode(x) * norms), sae.W_dec / norms[:, None], mask)
    real = (acts.sum(-1) != 0).float()
    n_masked = (1 - real).sum(1)
    at_zero = sae.encode(torch.zeros(1, 16))[0, mask] @ sae.W_dec[mask]  # a masked position's ablated contributions
    assert (n_masked > 0).any()
    assert torch.allclose(ref, ours - n_masked[:, None] * at_zero / real.sum(1)[:, None], atol=1e-5)
