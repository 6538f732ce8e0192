"""The paper's recipe as options (abstopk_mini.recipes and the SAEConfig/TrainConfig fields it sets).

Each option is checked against a reference computed by hand in numpy/plain torch: no encoder bias,
per-token standardisation (forward, training loss, decoding back to the raw space), the encoder
init scale, the constant schedule, the dead window in batches and the presets' values; then the
fast path against the dense one with the options on, the files (cfg.json round trip, unchanged
content-addressed keys at the defaults) and the SAELens export.

Tolerances: float64 references at 1e-12 relative (a handful of reductions of O(1) numbers);
fp32 fast-vs-dense at 1e-5 (as tests/test_fast.py).
"""

import copy
import json
import math
import warnings

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini.kernels import fast
from abstopk_mini import losses
from abstopk_mini.nonlinearities import K_ACTIVATIONS
from abstopk_mini.runs.store import content_key as _key
from abstopk_mini.recipes import RECIPES, recipe_configs
from abstopk_mini.sae import ADDED_FIELDS, STANDARDIZE_EPS, SAE, SAEConfig, standardize
from abstopk_mini.train import TrainConfig, lr_at

D_IN, D_SAE, K, B = 12, 48, 4, 32
F64 = dict(rtol=1e-12, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-5)


def _x(n=B, d=D_IN, seed=0, dtype=torch.float64):
    """Activations with a per-token offset and spread, so standardisation is not a no-op."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x = 3.0 * torch.rand(n, 1, generator=gen, dtype=torch.float64) * x + torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return x.to(dtype)


def _sae(activation="abstopk", dtype="float64", seed=0, **kw):
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=K, device="cpu", dtype=dtype, seed=seed, **kw)
    sae = SAE(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_dec.copy_(0.5 * torch.randn(D_IN, generator=gen))
        sae.W_enc.mul_(1 + torch.rand(D_IN, D_SAE, generator=gen))
        if cfg.use_b_enc:
            sae.b_enc.copy_(0.3 * torch.randn(D_SAE, generator=gen))
    return sae


def _np(t):
    return t.detach().double().numpy()


def _standardize_by_hand(X):
    mu = X.mean(1, keepdims=True)
    sd = np.sqrt(((X - mu) ** 2).sum(1, keepdims=True) / (X.shape[1] - 1))
    return (X - mu) / (sd + STANDARDIZE_EPS), mu, sd


def _abstopk_by_hand(U, k):
    Z = np.zeros_like(U)
    for b in range(U.shape[0]):
        top = np.argsort(-np.abs(U[b]))[:k]
        Z[b, top] = U[b, top]
    return Z


# ----------------------------------------------------------------------------- keys and files
def test_default_config_keys_are_unchanged():
    """The keys were computed with the code before these options existed (commit edbb88d); ``key_dict``
    is what keys hash since bandwidth's default moved (0.2), and it must give the same keys."""
    cfg = SAEConfig(d_in=640, d_sae=4096, activation="topk", k=32, model_name="gemma-3-270m",
                    hook_name="blocks.6.hook_resid_post", hook_layer=6, context_size=128)
    ident = {"acts": "sha-of-the-harvest", "cfg": cfg.key_dict() | {"device": None},
             "train": {"n_tokens": 1200000, "batch_size": 1024, "seed": 0}}
    assert _key(ident) == "553ff04601"
    cfg = SAEConfig(d_in=8, d_sae=16, activation="batchabstopk", k=3, input_scale=0.5, seed=2)
    assert _key({"cfg": cfg.key_dict()}) == "c29ba336e4"
    assert not set(ADDED_FIELDS) & set(cfg.to_dict())
    # a non-default option enters the key; an explicit default (even as int 1 for 1.0) does not
    assert SAEConfig(d_in=8, d_sae=16, activation="relu", enc_init_scale=1).to_dict() == SAEConfig(d_in=8, d_sae=16, activation="relu").to_dict()
    for name, value in (("use_b_enc", False), ("input_unit_norm", True), ("enc_init_scale", 0.5), ("recipe", "paper")):
        d = SAEConfig(d_in=8, d_sae=16, activation="relu", **{name: value}).to_dict()
        assert d[name] == value and set(d) - set(cfg.to_dict()) == {name}


def test_paper_sae_saves_every_option_and_loads_back_exactly(tmp_path):
    cfg, train_kw = recipe_configs("paper", D_IN, "abstopk", d_sae=D_SAE, k=K, batch_size=16, device="cpu")
    x = _x(n=256, dtype=torch.float32)
    sae, hist = am.train_sae(cfg, x, **(train_kw | {"n_tokens": 8 * 16, "progress": False}))
    sae.save(tmp_path / "sae")
    raw = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert raw["recipe"] == "paper" and raw["activation"] == "batchabstopk"
    assert raw["use_b_enc"] is False and raw["input_unit_norm"] is True
    assert raw["enc_init_scale"] == pytest.approx(math.sqrt(2 * D_IN / D_SAE), rel=1e-15)
    assert set(SAEConfig.__dataclass_fields__) <= set(raw)  # every option, default or not
    loaded = SAE.load(tmp_path / "sae")
    assert loaded.cfg == SAEConfig(**(sae.cfg.to_full_dict() | {"device": None}))
    assert "b_enc" not in dict(loaded.named_parameters()) and torch.equal(loaded.b_enc, torch.zeros(D_SAE))
    for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(loaded, key), getattr(sae, key)), key
    assert torch.equal(loaded.threshold, sae.threshold)
    sae.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), sae(x))
    # a file written before the options existed (no such keys) loads with the defaults
    for name in ADDED_FIELDS:
        raw.pop(name)
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(raw))
    old = SAE.load(tmp_path / "sae")
    assert all(getattr(old.cfg, name) == default for name, default in ADDED_FIELDS.items())


# ----------------------------------------------------------------------------- the SAE options
def test_no_encoder_bias_by_hand():
    s = 0.7
    sae = _sae(use_b_enc=False, input_scale=s)
    x = _x()
    assert "b_enc" not in dict(sae.named_parameters()) and "b_enc" in dict(sae.named_buffers())
    X, W, bd = _np(x), _np(sae.W_enc), _np(sae.b_dec)
    U = (s * X - bd) @ W
    np.testing.assert_allclose(_np(sae.pre_acts(x)), U, **F64)
    Z = _abstopk_by_hand(U, K)
    np.testing.assert_allclose(_np(sae.encode(x)), Z, **F64)
    np.testing.assert_allclose(_np(sae(x)), (Z @ _np(sae.W_dec) + bd) / s, **F64)
    # training leaves it at zero and never hands it to the optimiser
    trained, _ = am.train_sae(sae.cfg, _x(n=128), sae=sae, n_tokens=4 * 32, batch_size=32, progress=False)
    assert torch.equal(trained.b_enc, torch.zeros(D_SAE, dtype=torch.float64))
    assert not trained.b_enc.requires_grad


def test_standardize_matches_hand_and_saelens():
    x = _x()
    X = _np(x)
    ref, mu, sd = _standardize_by_hand(X)
    got, got_mu, got_sd = standardize(x)
    np.testing.assert_allclose(_np(got), ref, **F64)
    np.testing.assert_allclose(_np(got_mu), mu, **F64)
    np.testing.assert_allclose(_np(got_sd), sd, **F64)
    sae_lens = pytest.importorskip("sae_lens")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=D_IN, d_sae=8, normalize_activations="layer_norm",
                                                                 dtype="float64"))
    y = theirs.run_time_activation_norm_fn_in(x)
    torch.testing.assert_close(y, got, rtol=0, atol=0)  # the same operations in the same order
    torch.testing.assert_close(theirs.run_time_activation_norm_fn_out(2 * y), 2 * got * got_sd + got_mu, rtol=0, atol=0)


@pytest.mark.parametrize("fast_path", [True, False])
def test_input_unit_norm_forward_loss_and_raw_decoding_by_hand(fast_path):
    s = 1.3
    sae = _sae(input_unit_norm=True, input_scale=s)
    sae.fast = fast_path
    x = _x()
    Xs, mu, sd = _standardize_by_hand(_np(x))
    W, be, bd, Wd = _np(sae.W_enc), _np(sae.b_enc), _np(sae.b_dec), _np(sae.W_dec)
    U = (s * Xs - bd) @ W + be
    Z = _abstopk_by_hand(U, K)
    Y = Z @ Wd + bd  # the reconstruction in the SAE's (standardised, scaled) space
    np.testing.assert_allclose(_np(sae.pre_acts(x)), U, **F64)
    np.testing.assert_allclose(_np(sae.encode(x)), Z, **F64)
    # forward returns to the raw space: x_hat = sd * Y / s + mu
    np.testing.assert_allclose(_np(sae(x)), sd * Y / s + mu, **F64)
    np.testing.assert_allclose(_np(sae.decode(sae.encode(x), sae.input_stats(x))), sd * Y / s + mu, **F64)
    # the training loss lives in the standardised space
    out = fast.forward_train(sae, x) if fast_path else sae.forward_train(x)
    np.testing.assert_allclose(_np(out.x_in), s * Xs, **F64)
    np.testing.assert_allclose(_np(out.x_hat), Y, **F64)
    np.testing.assert_allclose(losses.mse(out.x_in, out.x_hat).item(), ((s * Xs - Y) ** 2).sum(1).mean(), **F64)
    with pytest.raises(ValueError, match="input_unit_norm.*stats=sae.input_stats"):
        sae.decode(sae.encode(x))


def test_input_unit_norm_training_init_and_logged_loss_by_hand():
    """The input scale and b_dec are set from the standardised sample; the logged mse is the
    loss in that space (lr = 0 keeps the weights, so step 1's loss can be recomputed)."""
    x = _x(n=64)
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="topk", k=K, device="cpu", dtype="float64", input_unit_norm=True)
    sae, hist = am.train_sae(cfg, [x], n_tokens=64, batch_size=64, lr=0.0, b_dec_init="mean", init_sample=64,
                             progress=False, log_every=1)
    Xs, _, _ = _standardize_by_hand(_np(x))
    s = math.sqrt(D_IN / (Xs ** 2).sum(1).mean())
    assert sae.cfg.input_scale == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(_np(sae.b_dec), (s * Xs).mean(0), **F64)
    U = (s * Xs - _np(sae.b_dec)) @ _np(sae.W_enc)
    Z = np.zeros_like(U)
    for b in range(U.shape[0]):
        top = np.argsort(-U[b])[:K]
        Z[b, top] = np.maximum(U[b, top], 0)
    Y = Z @ _np(sae.W_dec) + _np(sae.b_dec)
    assert hist["mse"][0] == pytest.approx(((s * Xs - Y) ** 2).sum(1).mean(), rel=1e-10)


def test_enc_init_scale_by_hand():
    c = 0.35
    base, scaled = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="relu", device="cpu", dtype="float64")), SAE(
        SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="relu", device="cpu", dtype="float64", enc_init_scale=c))
    assert torch.equal(base.W_enc, base.W_dec.T)  # W_enc = W_decᵀ at the default
    assert torch.equal(scaled.W_dec, base.W_dec)
    np.testing.assert_allclose(_np(scaled.W_enc), c * _np(base.W_dec).T, **F64)
    np.testing.assert_allclose(np.linalg.norm(_np(scaled.W_enc), axis=0), c, **F64)


def test_paper_encoder_scale_is_kaimings_expected_column_norm():
    """The paper's code draws W_enc = kaiming_uniform_ [d_in, d_sae] and sets W_dec to its normalised
    transpose; the recipe's c = sqrt(2 d_in / d_sae) is the mean column norm of such a draw."""
    d_in, d_sae = 64, 16 * 64
    W = torch.nn.init.kaiming_uniform_(torch.empty(d_in, d_sae, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    cfg, _ = recipe_configs("paper", d_in, "abstopk")
    assert cfg.d_sae == d_sae
    # 1024 columns, each norm with relative spread ~ 1/sqrt(5 d_in) ≈ 5.6 %: the mean is within ~0.2 %
    assert W.norm(dim=0).mean().item() == pytest.approx(cfg.enc_init_scale, rel=0.01)


# ----------------------------------------------------------------------------- the training options
def test_constant_schedule_and_default_schedule_by_hand():
    n, lr = 40, 3e-4
    assert [lr_at(t, n, lr, 0.05, 0.2, "constant") for t in range(n)] == [lr] * n
    warm, decay = 2, 8  # max(1, int(0.05 * 40)), int(0.2 * 40)
    for t in range(n):
        ref = lr * (t + 1) / warm if t < warm else (lr * (n - t) / decay if t >= n - decay else lr)
        assert lr_at(t, n, lr, 0.05, 0.2) == pytest.approx(ref, rel=1e-15)
    with pytest.raises(ValueError, match="lr_schedule='cosine'"):
        TrainConfig(lr_schedule="cosine")
    with pytest.raises(ValueError, match="schedule='cosine'"):
        lr_at(0, n, lr, 0.05, 0.2, "cosine")
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, activation="topk", k=K, device="cpu")
    _, hist = am.train_sae(cfg, _x(n=320, dtype=torch.float32), n_tokens=320, batch_size=32, lr=lr,
                           lr_schedule="constant", progress=False, log_every=1)
    assert hist["lr"] == [lr] * 10


def test_dead_window_is_five_batches():
    """Latent j is dead once it has not fired in 5 consecutive batches (the paper's
    n_batches_to_dead); with lr = 0 the selection of every batch can be computed by hand."""
    Bt = 8
    cfg, train_kw = recipe_configs("paper", D_IN, "topk", d_sae=D_SAE, k=2, batch_size=Bt, device="cpu", dtype="float64")
    assert train_kw["dead_tokens"] == 5 * Bt and cfg.activation == "batchtopk"
    batches = [_x(n=Bt, seed=10 + i) for i in range(12)]
    sae = SAE(cfg)
    _, hist = am.train_sae(cfg, batches, sae=copy.deepcopy(sae), **(train_kw | {"lr": 0.0, "log_every": 1, "progress": False}))
    W = _np(sae.W_enc)
    since = np.zeros(D_SAE)
    expected = []
    for xb in batches:
        U = standardize(xb)[0].numpy() @ W  # b_dec = 0, no b_enc, s = 1
        flat = np.maximum(U, 0).ravel()
        kept = np.argsort(-flat)[: 2 * Bt]
        fired = np.zeros(U.size, bool)
        fired[kept[flat[kept] > 0]] = True
        fired = fired.reshape(U.shape).any(0)
        since = np.where(fired, 0, since + 1)
        expected.append((since >= 5).mean())
    assert max(expected) > 0  # some latents did go dead
    assert hist["dead_frac"] == pytest.approx(expected, abs=0)


def test_presets_values():
    cfg, kw = recipe_configs("paper", 640, "abstopk")
    assert (cfg.d_sae, cfg.k, cfg.activation) == (16 * 640, 64, "batchabstopk")
    assert recipe_configs("paper", 640, "topk")[0].activation == "batchtopk"
    assert (cfg.use_b_enc, cfg.input_unit_norm, cfg.recipe) == (False, True, "paper")
    assert cfg.enc_init_scale == pytest.approx(math.sqrt(0.125), rel=1e-15)
    assert kw == {"batch_size": 128, "lr": 3e-4, "adam_betas": (0.9, 0.99), "adam_eps": 1e-8, "lr_schedule": "constant",
                  "grad_clip": None, "aux_k": 512, "aux_coef": 1 / 32, "b_dec_init": "zeros", "normalize_input": False, "dead_tokens": 640}
    TrainConfig(**kw)  # valid options
    assert recipe_configs("paper", 640, "abstopk", batch_size=1024)[1]["dead_tokens"] == 5 * 1024
    ours, kw = recipe_configs("ours", 640, "abstopk", d_sae=4096, k=32, seed=3)
    assert kw == {} and RECIPES["ours"].sae == {}
    assert ours == SAEConfig(d_in=640, d_sae=4096, activation="abstopk", k=32, seed=3, recipe="ours")
    with pytest.raises(ValueError, match="d_sae=..."):
        recipe_configs("ours", 640, "abstopk", k=32)
    with pytest.raises(ValueError, match="recipe='theirs'"):
        recipe_configs("theirs", 640, "abstopk")
    with pytest.raises(TypeError, match="use_b_enc"):
        SAEConfig(d_in=8, d_sae=16, activation="relu", use_b_enc="no")
    with pytest.raises(ValueError, match="enc_init_scale"):
        SAEConfig(d_in=8, d_sae=16, activation="relu", enc_init_scale=0.0)


# ----------------------------------------------------------------------------- fast path
@pytest.mark.parametrize("activation", K_ACTIVATIONS)
def test_fast_equals_dense_with_the_paper_options(activation):
    ref = _sae(activation, dtype="float32", use_b_enc=False, input_unit_norm=True, input_scale=1.4)
    fst = copy.deepcopy(ref)
    x = _x(dtype=torch.float32)
    dead = torch.zeros(D_SAE, dtype=torch.bool)
    dead[::3] = True
    o_ref = ref.forward_train(x)
    (losses.mse(o_ref.x_in, o_ref.x_hat) + losses.auxk_loss(o_ref.x_in - o_ref.x_hat, o_ref.u, ref.W_dec, dead, 6, ref.cfg.signed)).backward()
    o_fast = fast.forward_train(fst, x)
    (losses.mse(o_fast.x_in, o_fast.x_hat) + fast.auxk_loss(fst, o_fast, dead, 6)).backward()
    assert torch.equal(o_fast.u, o_ref.u)
    assert torch.equal(o_fast.code.to_dense() != 0, o_ref.z != 0)
    torch.testing.assert_close(o_fast.x_hat, o_ref.x_hat, **F32)
    grads = {n for n, p in ref.named_parameters()}
    assert grads == {"W_enc", "W_dec", "b_dec"}
    for name in grads:
        torch.testing.assert_close(dict(fst.named_parameters())[name].grad, dict(ref.named_parameters())[name].grad, **F32)
    ref.eval(), fst.eval()
    with torch.no_grad():
        with fast.reference_path(ref):
            dense = ref(x)
        torch.testing.assert_close(fst(x), dense, **F32)


def test_train_sae_fast_equals_reference_with_the_paper_recipe():
    """The whole loop with every option of the paper's recipe, fast vs dense, in float64 (see tests/test_fast.py)."""
    cfg, kw = recipe_configs("paper", 16, "abstopk", d_sae=64, k=3, batch_size=64, device="cpu", dtype="float64")
    x, _, _ = am.toy.bidirectional_data(n_samples=1024, d=16, P=24, n_active=3, seed=0)
    kw = kw | dict(n_tokens=20 * 64, progress=False, log_every=1, aux_k=8)
    sae_f, h_f = am.train_sae(cfg, x.double(), fast=True, **kw)
    sae_r, h_r = am.train_sae(cfg, x.double(), fast=False, **kw)
    assert max(h_r["aux"]) > 0
    for name in ("W_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(sae_f, name), getattr(sae_r, name), rtol=1e-8, atol=1e-9)
    assert h_f["dead_frac"] == h_r["dead_frac"]


# ----------------------------------------------------------------------------- SAELens
@pytest.mark.parametrize("activation", K_ACTIVATIONS)
def test_paper_options_export_to_saelens_layer_norm(activation, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    ours = _sae(activation, dtype="float32", use_b_enc=False, input_unit_norm=True, input_scale=1.4)
    x = _x(dtype=torch.float32)
    if activation.startswith("batch"):
        with torch.no_grad():
            ours.forward_train(_x(seed=1, dtype=torch.float32))  # sets the eval threshold on another batch:
            # on x itself the smallest kept score IS the threshold, a knife edge that rounding decides
    ours.eval()
    split = activation == "batchabstopk"
    if split:
        with pytest.raises(ValueError, match="split_signed=True"):
            am.interop.to_saelens(ours, tmp_path / "x")
    path = am.interop.to_saelens(ours, tmp_path / "x", split_signed=split)
    assert json.loads((path / "cfg.json").read_text())["normalize_activations"] == "layer_norm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sae_lens.SAE.load_from_disk(str(path), device="cpu")
    with torch.no_grad():
        x_hat = theirs(x)
        torch.testing.assert_close(x_hat, ours(x), **F32)
    if activation in ("topk", "abstopk"):  # and back: SAELens layer_norm -> input_unit_norm
        back = am.interop.from_saelens(path)
        assert back.cfg.input_unit_norm and back.cfg.input_scale == 1.0
        with torch.no_grad():
            torch.testing.assert_close(back(x), ours(x), **F32)
