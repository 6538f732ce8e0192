"""The fast top-k paths (abstopk_mini.kernels.fast) against the dense reference path.

The reference — SAE.forward_train, losses.auxk_loss, SAE.decode(SAE.encode(x)) — is the oracle:
same selection, values to fp32 tolerance, same gradients for every parameter, same BatchTopK
threshold, and the same trained SAE after a few steps of train_sae.
"""

import copy

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.kernels import fast
from abstopk_mini import losses
from abstopk_mini.nonlinearities import K_ACTIVATIONS

D_IN, D_SAE, K, B = 24, 96, 5, 40


def _pair(activation, dtype="float32", scale=1.7, seed=0):
    """Two identical SAEs with non-trivial biases and input scale."""
    cfg = am.SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=K, input_scale=scale, device="cpu", dtype=dtype, seed=seed)
    ref = am.SAE(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        ref.b_dec.copy_(torch.randn(D_IN, generator=gen))
        ref.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
        ref.W_enc.mul_(1 + torch.rand(D_IN, D_SAE, generator=gen))
    return ref, copy.deepcopy(ref)


def _x(dtype=torch.float32, n=B, seed=2):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _grads(sae):
    return {name: p.grad.detach().clone() for name, p in sae.named_parameters()}


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", K_ACTIVATIONS)
@pytest.mark.parametrize("n_dead", [0, 30, 90])  # none dead; AuxK on a dense dead block; AuxK sparse (k_aux/n_dead < 0.1)
def test_forward_train_and_auxk_match_reference(activation, dtype, n_dead):
    ref, fst = _pair(activation, dtype)
    x = _x(getattr(torch, dtype))
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(3))[:n_dead]] = True
    k_aux = 8 if n_dead != 90 else 6
    assert (k_aux >= fast.AUX_DENSE_FRACTION * n_dead) == (n_dead == 30) or n_dead == 0

    o_ref = ref.forward_train(x)
    aux_ref = losses.auxk_loss(o_ref.x_in - o_ref.x_hat, o_ref.u, ref.W_dec, dead, k_aux, ref.cfg.signed)
    (losses.mse(o_ref.x_in, o_ref.x_hat) + aux_ref).backward()

    o_fast = fast.forward_train(fst, x)
    aux_fast = fast.auxk_loss(fst, o_fast, dead, k_aux)
    (losses.mse(o_fast.x_in, o_fast.x_hat) + aux_fast).backward()

    tol = _tol(dtype)
    assert torch.equal(o_fast.u, o_ref.u)  # the same dense pre-activations, bit for bit
    torch.testing.assert_close(o_fast.code.to_dense(), o_ref.z, **tol)
    torch.testing.assert_close(o_fast.x_hat, o_ref.x_hat, **tol)
    torch.testing.assert_close(aux_fast, aux_ref, **tol)
    if n_dead:
        assert aux_ref > 0
    g_ref, g_fast = _grads(ref), _grads(fst)
    assert set(g_ref) == set(g_fast) == {"W_enc", "W_dec", "b_enc", "b_dec"}
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], **tol, msg=f"gradient of {name}")
    if activation.startswith("batch"):  # the running threshold moved the same way
        assert torch.equal(fst.act.threshold, ref.act.threshold) and ref.act.threshold > 0
    # metrics from the sparse code equal the dense ones
    assert torch.equal(o_fast.code.fired(), (o_ref.z != 0).any(0))
    assert torch.equal(o_fast.code.l0(), (o_ref.z != 0).sum(-1))


def test_unsigned_topk_keeps_negative_selections_at_zero_with_no_gradient():
    ref, fst = _pair("topk")
    with torch.no_grad():
        for sae in (ref, fst):
            sae.b_enc.fill_(-4.0)  # most rows have fewer than k positive pre-activations
    x = _x()
    o_ref, o_fast = ref.forward_train(x), fast.forward_train(fst, x)
    assert ((o_ref.z > 0).sum(-1) < K).any()
    torch.testing.assert_close(o_fast.code.to_dense(), o_ref.z)
    losses.mse(o_ref.x_in, o_ref.x_hat).backward()
    losses.mse(o_fast.x_in, o_fast.x_hat).backward()
    for name, g in _grads(ref).items():
        torch.testing.assert_close(_grads(fst)[name], g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", K_ACTIVATIONS)
def test_inference_forward_matches_decode_encode(activation):
    sae, _ = _pair(activation)
    if activation.startswith("batch"):
        sae.train()
        with torch.no_grad():
            sae.forward_train(_x(seed=7))  # sets the eval threshold
    sae.eval()
    x = _x(seed=5).reshape(4, 10, D_IN)  # leading dims are kept
    with torch.no_grad():
        dense = sae.decode(sae.encode(x))
        assert sae.fast
        sparse = sae(x)
        with fast.reference_path(sae):
            assert not sae.fast
            torch.testing.assert_close(sae(x), dense, rtol=0, atol=0)
    assert sae.fast
    assert sparse.shape == x.shape
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)
    code = fast.encode_sparse(sae, x.reshape(-1, D_IN))
    torch.testing.assert_close(code.to_dense(), sae.encode(x.reshape(-1, D_IN)).detach(), rtol=1e-5, atol=1e-5)


def test_untrained_batchtopk_eval_falls_back_to_per_row_topk():
    sae, _ = _pair("batchabstopk")
    sae.eval()
    assert sae.threshold < 0
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(sae(x), sae.decode(sae.encode(x)), rtol=1e-5, atol=1e-5)


def test_reconstruct_gradients_match_reference_including_input():
    ref, fst = _pair("abstopk", "float64")
    x1 = _x(torch.float64).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    w = torch.randn(B, D_IN, dtype=torch.float64)
    with fast.reference_path(ref):
        (ref(x1) * w).sum().backward()
    (fst(x2) * w).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-10)
    for name, g in _grads(ref).items():
        torch.testing.assert_close(_grads(fst)[name], g, rtol=1e-10, atol=1e-10)


def test_low_precision_selection_keeps_exact_values():
    """bf16 chooses the latents (the GPU default); the kept values are the exact fp32 pre-activations."""
    sae, _ = _pair("abstopk")
    x = _x()
    out = fast.forward_train(sae, x, low_precision=True)
    exact = sae.pre_acts(x).detach()
    pat = out.code.pat
    torch.testing.assert_close(out.code.vals.detach(), exact[pat.rows, pat.cols], rtol=1e-6, atol=1e-6)
    chosen = out.code.to_dense().detach() != 0
    best = torch.zeros_like(chosen).scatter(1, exact.abs().topk(K, dim=1).indices, True)
    assert (chosen & best).sum() >= 0.9 * chosen.sum()  # bf16 rounding may swap a near-tie


@pytest.mark.parametrize("activation", ["abstopk", "batchabstopk"])
@pytest.mark.parametrize("n_dead", [30, 90])  # the dense dead block and the sparse kernels
def test_auxk_on_positive_u_only_matches_reference(activation, n_dead):
    """``signed=False`` on a signed SAE (TrainConfig.aux_sign="positive"): the fast AuxK scores and
    decodes ReLU(u) of the dead latents, as the reference does, in value and gradients (float64)."""
    ref, fst = _pair(activation, "float64")
    x = _x(torch.float64)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(3))[:n_dead]] = True
    k_aux = 8 if n_dead != 90 else 6
    o_ref = ref.forward_train(x)
    aux_ref = losses.auxk_loss(o_ref.x_in - o_ref.x_hat, o_ref.u, ref.W_dec, dead, k_aux, signed=False)
    aux_ref.backward()
    o_fast = fast.forward_train(fst, x)
    aux_fast = fast.auxk_loss(fst, o_fast, dead, k_aux, signed=False)
    aux_fast.backward()
    tol = _tol("float64")
    torch.testing.assert_close(aux_fast, aux_ref, **tol)
    signed = losses.auxk_loss(o_ref.x_in - o_ref.x_hat, o_ref.u, ref.W_dec, dead, k_aux, signed=True)
    assert aux_ref > 0 and abs(aux_ref.item() - signed.item()) > 1e-6 * signed.item()  # the option changes the loss
    g_ref, g_fast = _grads(ref), _grads(fst)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], **tol, msg=f"gradient of {name}")
    # no gradient reaches a dead latent's encoder column through AuxK where its u <= 0 on every row
    never_positive = dead & (o_ref.u.detach() <= 0).all(0)
    assert torch.all(g_ref["W_enc"][:, never_positive] == 0)


@pytest.mark.parametrize("activation", ["abstopk", "batchtopk", "batchabstopk"])
def test_train_sae_fast_equals_reference(activation):
    """The whole loop (AuxK with dead latents, dead tracking, decoder constraint, Adam) agrees.

    In float64: Adam divides by sqrt(v) + eps, so a latent whose gradient is rounding noise
    (~1e-9 in fp32) moves by ~lr in either path, by a different amount; fp64 makes that noise
    negligible, and the per-step fp32 agreement is the test above.
    """
    x, _, _ = am.toy.bidirectional_data(n_samples=1024, d=16, P=24, n_active=3, seed=0)
    x = x.double()
    cfg = am.SAEConfig(d_in=16, d_sae=64, activation=activation, k=3, device="cpu", dtype="float64")
    kw = dict(n_tokens=20 * 64, batch_size=64, dead_tokens=128, progress=False, seed=0, log_every=1)
    sae_f, h_f = am.train_sae(cfg, x, fast=True, **kw)
    sae_r, h_r = am.train_sae(cfg, x, fast=False, **kw)
    assert max(h_r["aux"]) > 0  # AuxK was active
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(sae_f, name), getattr(sae_r, name), rtol=1e-8, atol=1e-9)
    assert h_f["l0"] == pytest.approx(h_r["l0"])
    assert h_f["dead_frac"] == h_r["dead_frac"]
    torch.testing.assert_close(torch.tensor(h_f["loss"]), torch.tensor(h_r["loss"]), rtol=1e-8, atol=1e-10)


def _toy_train(activation, **kw):
    x, _, _ = am.toy.bidirectional_data(n_samples=1024, d=16, P=24, n_active=3, seed=0)
    cfg = am.SAEConfig(d_in=16, d_sae=64, activation=activation, k=3, device="cpu", dtype="float64")
    return am.train_sae(cfg, x.double(), n_tokens=20 * 64, batch_size=64, dead_tokens=128, progress=False, seed=0,
                        log_every=1, **kw)


@pytest.mark.parametrize("activation", ["abstopk", "batchabstopk"])
def test_aux_sign_positive_trains_alike_on_both_paths_and_changes_signed_saes(activation):
    sae_f, h_f = _toy_train(activation, aux_sign="positive", fast=True)
    sae_r, h_r = _toy_train(activation, aux_sign="positive", fast=False)
    assert max(h_r["aux"]) > 0
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(sae_f, name), getattr(sae_r, name), rtol=1e-8, atol=1e-9)
    sae_s, h_s = _toy_train(activation, fast=True)  # aux_sign="activation": |u| with its sign
    assert h_s["aux"][:len(h_f["aux"])] != h_f["aux"]
    assert not torch.allclose(sae_s.W_enc, sae_f.W_enc)


def test_aux_sign_positive_is_the_same_training_for_unsigned_saes():
    """For TopK the option takes the same code path (ReLU scores either way): bit-identical."""
    sae_a, h_a = _toy_train("topk", aux_sign="activation")
    sae_p, h_p = _toy_train("topk", aux_sign="positive")
    assert max(h_a["aux"]) > 0 and h_a["aux"] == h_p["aux"]
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(sae_a, name), getattr(sae_p, name)), name


def test_aux_sign_must_be_known():
    with pytest.raises(ValueError, match="aux_sign='negative'.*activation.*positive"):
        am.TrainConfig(aux_sign="negative")


def test_bad_input():
    relu = am.SAE(am.SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="relu", device="cpu"))
    with pytest.raises(ValueError, match="relu"):
        fast.forward_train(relu, _x())
    sae, _ = _pair("abstopk")
    with pytest.raises(ValueError, match="d_in=24"):
        fast.forward_train(sae, torch.randn(3, D_IN + 1))
    with pytest.raises(ValueError, match="B, d_in"):
        fast.encode_sparse(sae, torch.randn(2, 3, D_IN))


def test_sparse_kernels_gradcheck_with_empty_rows_and_repeated_latents():
    """The custom backward passes against numerical differentiation (float64)."""
    from abstopk_mini.kernels.sparse import GatherPreacts, Pattern, sparse_decode

    gen = torch.Generator().manual_seed(0)
    B, d, P = 5, 4, 7
    flat = torch.tensor([0 * P + 3, 0 * P + 1, 2 * P + 3, 2 * P + 6, 4 * P + 0, 4 * P + 3])  # rows 1, 3 empty
    pat = Pattern.from_flat(flat, B, P)
    assert pat.crow.tolist() == [0, 2, 2, 4, 4, 6]
    vals = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    W_dec = torch.randn(P, d, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, W: sparse_decode(v, W, pat), (vals, W_dec))
    x_in = torch.randn(B, d, dtype=torch.float64, generator=gen, requires_grad=True)
    b_dec = torch.randn(d, dtype=torch.float64, generator=gen, requires_grad=True)
    W_enc = torch.randn(d, P, dtype=torch.float64, generator=gen, requires_grad=True)
    b_enc = torch.randn(P, dtype=torch.float64, generator=gen, requires_grad=True)

    def preacts(x, bd, We, be):
        u = (x - bd) @ We + be
        return GatherPreacts.apply(u.detach()[pat.rows, pat.cols], x, bd, We, be, pat)

    assert torch.autograd.gradcheck(preacts, (x_in, b_dec, W_enc, b_enc))


@pytest.mark.parametrize("n", [300, 2**16, 2**17])
def test_stable_argsort_matches_torch(n):
    from abstopk_mini.kernels.sparse import _stable_argsort

    keys = torch.randint(n, (5000,), generator=torch.Generator().manual_seed(n))
    assert torch.equal(_stable_argsort(keys, n), torch.argsort(keys, stable=True))
