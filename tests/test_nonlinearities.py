"""The SAE activation modules agree with the reference proximal maps in abstopk_mini.coding.prox,
and JumpReLU's straight-through gradients follow the formulas in the nonlinearities docstring."""

from __future__ import annotations

import pytest
import torch

from abstopk_mini import nonlinearities as nl
from abstopk_mini.coding import prox


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- forward maps
def test_relu_is_nonneg_soft_threshold():
    u = randn(64, 32)
    torch.testing.assert_close(nl.ReLU()(u), prox.soft_threshold(u, 0.0, nonneg=True), rtol=0, atol=0)
    # with the threshold folded into a bias: ReLU(u − λ) = prox of λ‖z‖₁ + ι_{z≥0}
    torch.testing.assert_close(nl.ReLU()(u - 0.4), prox.soft_threshold(u, 0.4, nonneg=True), rtol=0, atol=0)


@pytest.mark.parametrize("cls, nonneg", [(nl.JumpReLU, True), (nl.AbsJumpReLU, False)])
def test_jumprelu_is_hard_threshold(cls, nonneg):
    d = 32
    act = cls(d).double()
    theta = randn(d, seed=1).abs()
    with torch.no_grad():
        act.threshold.copy_(theta)
    u = randn(3, 64, d, seed=2)
    expected = prox.hard_threshold(u, theta, nonneg=nonneg)
    torch.testing.assert_close(act(u), expected, rtol=0, atol=0)
    # the l0 count is the number of non-zeros
    assert torch.equal(act.l0(u), (expected != 0).sum(-1).double())


def test_jumprelu_infinite_input_gives_zero_not_nan():
    act = nl.JumpReLU(3)
    z = act(torch.tensor([[-float("inf"), 0.5, float("inf")]]))
    assert z.tolist() == [[0.0, 0.5, float("inf")]]


@pytest.mark.parametrize("cls, ref", [(nl.TopK, prox.topk), (nl.AbsTopK, prox.abs_topk)])
@pytest.mark.parametrize("k", [1, 5, 32])
def test_topk_modules_match_prox(cls, ref, k):
    u = randn(128, 32, seed=k)  # continuous: no ties
    act = cls(k)
    expected = ref(u, k)
    torch.testing.assert_close(act(u), expected, rtol=0, atol=0)
    vals, idx = act.select(u)
    assert vals.shape == idx.shape == (128, k)
    # select returns exactly the support chosen by the prox (as a set), with the kept values
    support = torch.zeros_like(u, dtype=torch.bool).scatter(-1, idx, True)
    assert (support.sum(-1) == k).all()
    assert ((expected != 0) & ~support).sum() == 0
    torch.testing.assert_close(vals, expected.gather(-1, idx), rtol=0, atol=0)


def test_topk_gradient_flows_to_kept_entries_only():
    u = randn(4, 10, seed=3).requires_grad_()
    z = nl.AbsTopK(3)(u)
    z.sum().backward()
    assert torch.equal(u.grad, (z != 0).double())


# ----------------------------------------------------------------------------- batch variants
@pytest.mark.parametrize("cls, nonneg", [(nl.BatchTopK, True), (nl.BatchAbsTopK, False)])
def test_batch_topk_eval_with_threshold_is_hard_threshold(cls, nonneg):
    act = cls(k=4).double().eval()
    act.threshold.fill_(0.8)
    u = randn(50, 20, seed=4)
    torch.testing.assert_close(act(u), prox.hard_threshold(u, 0.8, nonneg=nonneg), rtol=0, atol=0)
    # and a row's code does not depend on the other rows
    torch.testing.assert_close(act(u[:1]), act(u)[:1], rtol=0, atol=0)


@pytest.mark.parametrize("cls, ref", [(nl.BatchTopK, prox.topk), (nl.BatchAbsTopK, prox.abs_topk)])
def test_batch_topk_eval_untrained_falls_back_to_row_topk(cls, ref):
    act = cls(k=3).double().eval()
    assert act.threshold.item() == -1
    u = randn(10, 12, seed=5)
    torch.testing.assert_close(act(u), ref(u, 3), rtol=0, atol=0)


@pytest.mark.parametrize("cls, signed", [(nl.BatchTopK, False), (nl.BatchAbsTopK, True)])
@pytest.mark.parametrize("B, d, k", [(8, 16, 2), (32, 64, 5), (1, 10, 3)])
def test_batch_topk_train_keeps_the_kB_largest(cls, signed, B, d, k):
    act = cls(k=k).double().train()
    u = randn(B, d, seed=B + d + k) + (0.0 if signed else 1.0)  # enough positive entries for k·B
    score = u.abs() if signed else torch.relu(u)
    assert (score > 0).sum() >= k * B
    z = act(u)
    assert (z != 0).sum().item() == k * B
    # the kept entries are the k·B largest scores of the whole batch, with their value (sign kept)
    cutoff = score.flatten().sort(descending=True).values[k * B - 1]
    expected = torch.where(score >= cutoff, u if signed else score, torch.zeros_like(u))
    torch.testing.assert_close(z, expected, rtol=0, atol=0)
    # rows may keep more or fewer than k
    assert (z != 0).sum(-1).sum().item() == k * B


def test_batch_topk_threshold_is_ema_of_smallest_kept():
    act = nl.BatchAbsTopK(k=2, threshold_momentum=0.9).double().train()
    u1, u2 = randn(6, 10, seed=6), randn(6, 10, seed=7)
    smallest = []
    for u in (u1, u2):
        z = act(u)
        smallest.append(z[z != 0].abs().min().item())
        if len(smallest) == 1:
            assert act.threshold.item() == pytest.approx(smallest[0], rel=1e-12)
    assert act.threshold.item() == pytest.approx(0.9 * smallest[0] + 0.1 * smallest[1], rel=1e-12)


# ----------------------------------------------------------------------------- JumpReLU STE
def rect(t):
    return (t.abs() < 0.5).double()


@pytest.mark.parametrize("cls, signed", [(nl.JumpReLU, False), (nl.AbsJumpReLU, True)])
def test_jumprelu_threshold_gradient_matches_hand_formula(cls, signed):
    eps = 0.1
    act = cls(3, threshold_init=0.0, bandwidth=eps).double()
    theta = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    with torch.no_grad():
        act.threshold.copy_(theta)
    # entries inside (|s − θ| < ε/2) and outside the kernel window, both signs
    u = torch.tensor(
        [[0.52, 0.97, 2.2], [-0.48, -1.04, 1.96], [0.3, 1.2, -2.03]], dtype=torch.float64, requires_grad=True
    )
    w = torch.tensor([[1.0, -2.0, 0.5], [3.0, 1.5, -1.0], [2.0, 1.0, 4.0]], dtype=torch.float64)
    (w * act(u)).sum().backward()
    s = u.detach().abs() if signed else u.detach()
    jump = theta * (torch.sign(u.detach()) if signed else 1.0)
    expected = (-(jump / eps) * rect((s - theta) / eps) * w).sum(0)
    torch.testing.assert_close(act.threshold.grad, expected, rtol=0, atol=1e-12)
    # written out for the entries in the window:
    if signed:
        # θ0: u=0.52 (w=1) and u=-0.48 (w=3, sign -1): -(0.5/0.1)*(1*1 + 3*(-1)) = +10
        # θ1: u=0.97 (w=-2), u=-1.04 (w=1.5): -(1/0.1)*(-2*1 + 1.5*(-1)) = 35
        # θ2: u=1.96 (w=-1), u=-2.03 (w=4): -(2/0.1)*(-1*1 + 4*(-1)) = 100
        assert act.threshold.grad.tolist() == pytest.approx([10.0, 35.0, 100.0], rel=1e-12)
    else:
        # θ0: only u=0.52 (w=1): -5;  θ1: only u=0.97 (w=-2): +20;  θ2: only u=1.96 (w=-1): +20
        assert act.threshold.grad.tolist() == pytest.approx([-5.0, 20.0, 20.0], rel=1e-12)
    # the input gradient is the mask (the jump itself is not differentiated w.r.t. u)
    torch.testing.assert_close(u.grad, w * (s > theta).double(), rtol=0, atol=0)


def test_absjumprelu_sign_convention():
    """Raising θ zeroes an entry near −θ, i.e. moves z *up*: the estimate must be positive there."""
    act = nl.AbsJumpReLU(1, bandwidth=0.2).double()
    with torch.no_grad():
        act.threshold.fill_(1.0)
    for u0, sign in ((-1.05, +1), (1.05, -1)):
        act.threshold.grad = None
        act(torch.tensor([[u0]], dtype=torch.float64)).sum().backward()
        assert act.threshold.grad.item() == pytest.approx(sign * 1.0 / 0.2)


@pytest.mark.parametrize("cls, signed", [(nl.JumpReLU, False), (nl.AbsJumpReLU, True)])
def test_ste_matches_finite_difference_of_a_dense_sum(cls, signed):
    """On a dense grid of u (spacing δ) the loss Σ |z| has slope −θ/δ per side in θ; the STE gets it.

    For the signed map the grid holds ±u and the loss Σ sign(u)·z = Σ |z|, so a wrong sign in the
    negative side's estimate would cancel the positive side instead of doubling it.
    """
    delta, eps, theta0 = 1e-3, 0.05, 1.0
    grid = torch.arange(0.0, 2.0, delta, dtype=torch.float64) + delta / 2
    u = (torch.cat([grid, -grid]) if signed else grid)[:, None]
    act = cls(1, bandwidth=eps).double()

    def loss(th):
        with torch.no_grad():
            act.threshold.fill_(th)
        return (torch.sign(u) * act(u)).sum()

    h = 0.05
    finite_diff = (loss(theta0 + h) - loss(theta0 - h)).item() / (2 * h)
    act.threshold.grad = None
    loss(theta0).backward()
    ste = act.threshold.grad.item()
    sides = 2 if signed else 1
    assert finite_diff == pytest.approx(-sides * theta0 / delta, rel=0.02)
    assert ste == pytest.approx(finite_diff, rel=0.02)

    # the l0 count: d/dθ #{s > θ} = −(entries per unit of s) = −sides/δ
    act.threshold.grad = None
    with torch.no_grad():
        act.threshold.fill_(theta0)
    act.l0(u).sum().backward()
    assert act.threshold.grad.item() == pytest.approx(-sides / delta, rel=0.02)


# ----------------------------------------------------------------------------- one batch selection
def test_batch_keep_across_two_ranks_equals_one_process_on_the_whole_batch():
    """BatchTopK.keep with a Sync: each rank keeps its rows' entries above the global k·B·R-th
    score and both move the threshold alike, as one process does on the concatenated batch."""
    import threading

    class ThreadSync:  # two ranks as two threads; all_gather concatenates in rank order
        world_size = 2

        def __init__(self):
            self.slots, self.barrier = [None, None], threading.Barrier(2)

        def rank_view(self, rank):
            outer = self

            class View:
                world_size = 2

                def all_gather(self, t):
                    outer.slots[rank] = t
                    outer.barrier.wait()
                    out = torch.cat(outer.slots)
                    outer.barrier.wait()  # both have read before a later call overwrites
                    return out
            return View()

    B, d, k = 6, 16, 3
    for cls in (nl.BatchTopK, nl.BatchAbsTopK):
        # rank 1's rows are larger, so the global cut differs from each rank's own k·B cut
        u = torch.cat([randn(B, d, seed=20), 3 * randn(B, d, seed=21)])
        one = cls(k).double().train()
        ranks = [cls(k).double().train() for _ in range(2)]
        for step in range(2):  # the second step exercises the running-threshold update
            ref = set(one.keep(u + step).tolist())
            sync, got = ThreadSync(), [None, None]

            def run(r):
                got[r] = ranks[r].keep(u[r * B:(r + 1) * B] + step, sync.rank_view(r))
            threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            assert set(got[0].tolist()) | {i + B * d for i in got[1].tolist()} == ref
            for r in range(2):
                assert ranks[r].threshold.item() == one.threshold.item()
        # alone, rank 0 would keep k·B of its own entries; under the global cut it keeps fewer
        assert len(got[0]) < k * B


@pytest.mark.parametrize("cls", [nl.BatchTopK, nl.BatchAbsTopK])
@pytest.mark.parametrize("training", [True, False])
def test_batch_forward_is_its_keep(cls, training):
    """forward scatters exactly the entries keep selects (the one selection fast.select uses too)."""
    act, twin = cls(3).double(), cls(3).double()
    act.train(training), twin.train(training)
    if not training:
        act.threshold.fill_(0.7), twin.threshold.fill_(0.7)
    u = randn(2, 5, 12, seed=8)  # leading dims are flattened into rows
    z = act(u)
    idx = twin.keep(u)
    assert torch.equal((z != 0).reshape(-1).nonzero().squeeze(1), idx.sort().values)
    assert act.threshold.item() == twin.threshold.item()


@pytest.mark.parametrize("cls", [nl.BatchTopK, nl.BatchAbsTopK])
@pytest.mark.parametrize("training", [True, False])
def test_forward_batch_is_the_training_selection_without_moving_the_threshold(cls, training):
    """forward_batch in either mode = a training-mode forward of a twin, and the threshold stays."""
    act, twin = cls(3).double().train(training), cls(3).double().train()
    act.threshold.fill_(0.7)
    u = randn(2, 5, 12, seed=9)
    assert torch.equal(act.forward_batch(u), twin(u))
    assert act.threshold.item() == 0.7 and act.training == training
    assert twin.threshold.item() != 0.7  # the twin's training forward did move its threshold


# ----------------------------------------------------------------------------- specs
def _module(s, d_sae=32, k=4):
    """A fresh module of spec ``s`` (through make_activation, as the SAE builds it)."""
    from abstopk_mini.sae import SAEConfig

    return nl.make_activation(SAEConfig(d_in=8, d_sae=d_sae, activation=s.name, k=k if s.k_based else None))


def _check_spec(s) -> None:
    """Every field of an ActivationSpec agrees with what its module does."""
    import inspect

    assert s.selection in ("row", "batch", "threshold") and s.param in ("k", "threshold", None)
    assert s.penalty in ("l1", "l0", None) and s.prox
    d, k = 32, 4
    params = inspect.signature(s.module).parameters
    assert s.k_based == ("k" in params)
    assert s.threshold_based == ("threshold_init" in params)
    assert s.k_based == (s.selection in ("row", "batch")) == s.aux  # the top-k family trains with AuxK
    assert s.threshold_based == (s.penalty == "l0")
    act = _module(s, d, k).double().train()
    assert act.name == s.name
    assert getattr(act, "signed", s.signed) == s.signed
    # signed ⇔ negative codes on random u (zero-mean: half the entries are negative)
    u = randn(64, d, seed=11)
    z = act(u)
    assert bool((z < 0).any()) == s.signed
    assert bool((z > 0).any())
    if s.selection == "row":  # k per row, whatever the other rows
        assert ((z != 0).sum(-1) == k).all()
    # per_batch ⇔ a row's code depends on the other rows of the batch (a loud row takes the budget)
    alone = _module(s, d, k).double().train()(u[:1])
    loud = torch.cat([u[:1], 100 * randn(1, d, seed=12)])
    with_loud = _module(s, d, k).double().train()(loud)[:1]
    assert (not torch.equal(with_loud, alone)) == s.per_batch


@pytest.mark.parametrize("name", sorted(nl.SPECS))
def test_spec_fields_match_the_module(name):
    s = nl.SPECS[name]
    assert s.name == name and nl.spec(name) is s
    _check_spec(s)


@pytest.mark.parametrize("name", sorted(nl.SPECS))
def test_spec_architecture_round_trips_through_save_and_load(name, tmp_path):
    import json

    from abstopk_mini.sae import CONFIG_FILE, SAE, SAEConfig

    s = nl.SPECS[name]
    sae = SAE(SAEConfig(d_in=6, d_sae=16, activation=name, k=3 if s.k_based else None, device="cpu"))
    sae.save(tmp_path / "a")
    raw = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert raw["architecture"] == s.architecture and raw["activation"] == name
    assert SAE.load(tmp_path / "a").cfg.activation == name
    # the architecture alone names the activation (the names are one-to-one)
    del raw["activation"]
    (tmp_path / "a" / CONFIG_FILE).write_text(json.dumps(raw))
    loaded = SAE.load(tmp_path / "a")
    assert loaded.cfg.activation == name and loaded.cfg.spec is s and loaded.cfg.signed == s.signed


def test_spec_names_and_architectures_are_unique():
    assert len({s.architecture for s in nl.SPECS.values()}) == len(nl.SPECS)
    with pytest.raises(ValueError, match="activation='gated' is not known.*abstopk"):
        nl.spec("gated")


class Shrink(torch.nn.Module):
    """A trivial eighth activation for the test below: the signed soft threshold at 0.5."""

    name = "shrink"
    signed = True

    def forward(self, u):
        return prox.soft_threshold(u, 0.5)


def test_a_new_activation_is_one_spec(monkeypatch, tmp_path):
    """Registering a spec is all the SAE (config checks, build, encode, signedness, forward, save and
    load) and the one-step encoder need: no other table names activations."""
    from abstopk_mini import interop
    from abstopk_mini.coding import unroll
    from abstopk_mini.sae import SAE, SAEConfig

    new = nl.ActivationSpec("shrink", Shrink, "sign(u)·max(|u| − ½, 0) = prox of ½‖z‖₁", True, "threshold", None,
                            "l1", "shrink")
    with pytest.raises(ValueError, match="shrink"):
        SAEConfig(d_in=6, d_sae=16, activation="shrink")
    monkeypatch.setitem(nl.SPECS, "shrink", new)
    _check_spec(new)

    cfg = SAEConfig(d_in=6, d_sae=16, activation="shrink", device="cpu", dtype="float64")
    sae = SAE(cfg)
    assert cfg.signed and cfg.architecture == "shrink" and isinstance(sae.act, Shrink)
    x = randn(20, 6, seed=13)
    z = sae.encode(x)
    torch.testing.assert_close(z, prox.soft_threshold(sae.pre_acts(x), 0.5), rtol=0, atol=0)
    assert (z < 0).any() and (z > 0).any()
    torch.testing.assert_close(sae(x), sae.decode(z), rtol=0, atol=0)  # not k-based: the dense path
    sae.save(tmp_path / "shrink")
    loaded = SAE.load(tmp_path / "shrink")
    assert loaded.cfg.activation == "shrink"
    torch.testing.assert_close(loaded.encode(x), z, rtol=0, atol=0)
    with pytest.raises(ValueError, match="activation='shrink' has no SAELens architecture"):
        interop.to_saelens(sae, tmp_path / "saelens")
    # one proximal-gradient step of ½‖x − Dz‖² + λ‖z‖₁ (the spec's l1 penalty, signed: no z ≥ 0)
    D = randn(6, 16, seed=14)
    D = D / D.norm(dim=0)
    torch.testing.assert_close(unroll.one_step(x, D, "shrink", eta=0.5, lam=0.2),
                               prox.soft_threshold(0.5 * x @ D, 0.1), rtol=0, atol=0)
