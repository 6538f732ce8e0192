"""SAE module: config validation, the encoder formula, input scale, decoder geometry, files.

References are independent of the module: the pre-activation is recomputed with numpy in
float64, reconstruction identities are built from hand-made weights, and save/load is checked
bit for bit (``torch.equal``) on every tensor and on the outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from abstopk_mini.nonlinearities import ACTIVATIONS, K_ACTIVATIONS
from abstopk_mini.sae import CONFIG_FILE, WEIGHTS_FILE, SAE, SAEConfig
from abstopk_mini.train import train_sae

ALL_ACTIVATIONS = sorted(ACTIVATIONS)


def make_cfg(activation: str = "abstopk", d_in: int = 8, d_sae: int = 16, **kw) -> SAEConfig:
    k = kw.pop("k", 3 if activation in K_ACTIVATIONS else None)
    return SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation, k=k, device="cpu", **kw)


def randomise(sae: SAE, seed: int = 0) -> SAE:
    """Give every parameter a random value (biases too), so the formulas are really exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return sae


# --------------------------------------------------------------------------- config
def test_activation_list_is_the_seven_documented():
    assert set(ALL_ACTIVATIONS) == {"relu", "jumprelu", "absjumprelu", "topk", "batchtopk", "abstopk", "batchabstopk"}


@pytest.mark.parametrize("k", [0, -1, 17])
def test_config_rejects_k_out_of_range(k):
    with pytest.raises(ValueError) as err:
        make_cfg("topk", d_sae=16, k=k)
    msg = str(err.value)
    assert "k" in msg and str(k) in msg and "d_sae=16" in msg


def test_config_k_equal_d_sae_is_allowed_and_missing_k_is_an_error():
    assert make_cfg("abstopk", d_sae=16, k=16).k == 16
    with pytest.raises(ValueError, match="needs k"):
        SAEConfig(d_in=8, d_sae=16, activation="topk")
    with pytest.raises(TypeError, match="k must be an int"):
        make_cfg("topk", k=2.0)


def test_config_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        make_cfg("gelu")
    msg = str(err.value)
    assert "activation" in msg and "'gelu'" in msg
    for name in ALL_ACTIVATIONS:
        assert repr(name) in msg


@pytest.mark.parametrize("dtype", ["int32", "int64", "complex64", torch.int32, torch.complex64])
def test_config_rejects_integer_and_complex_dtypes(dtype):
    with pytest.raises(ValueError) as err:
        make_cfg("relu", dtype=dtype)
    msg = str(err.value)
    assert "dtype" in msg and "float32" in msg  # names the argument and a valid choice


@pytest.mark.parametrize("field,value", [("d_in", 0), ("d_sae", -3), ("d_in", 2.5), ("input_scale", 0.0), ("input_scale", float("nan"))])
def test_config_rejects_bad_sizes_and_scale(field, value):
    kw = dict(d_in=8, d_sae=16, activation="relu", device="cpu") | {field: value}
    with pytest.raises(ValueError, match=field):
        SAEConfig(**kw)


# --------------------------------------------------------------------------- the maps
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_encode_decode_shapes(activation):
    sae = randomise(SAE(make_cfg(activation)))
    sae.eval()
    x = torch.randn(5, 8)
    assert sae.encode(x).shape == (5, 16)
    assert sae.decode(sae.encode(x)).shape == (5, 8)
    assert sae(x).shape == (5, 8)
    # leading dims are kept
    assert sae.encode(torch.randn(2, 3, 8)).shape == (2, 3, 16)
    with pytest.raises(ValueError, match="d_in=8"):
        sae.encode(torch.randn(5, 7))
    with pytest.raises(TypeError, match="torch.Tensor"):
        sae.encode(np.zeros((5, 8)))


def test_pre_acts_matches_the_formula_by_hand():
    s = 0.37
    sae = randomise(SAE(make_cfg("abstopk", dtype="float64", input_scale=s)), seed=1)
    x = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    W, b_e, b_d = (t.detach().numpy() for t in (sae.W_enc, sae.b_enc, sae.b_dec))
    X = x.numpy()
    u_ref = np.empty((6, 16))
    for b in range(6):
        for j in range(16):
            u_ref[b, j] = sum((s * X[b, i] - b_d[i]) * W[i, j] for i in range(8)) + b_e[j]
    u = sae.pre_acts(x).detach().numpy()
    np.testing.assert_allclose(u, u_ref, rtol=1e-12, atol=1e-12)
    # AbsTopK keeps the 3 largest |u| with their sign
    z = sae.encode(x).detach().numpy()
    for b in range(6):
        top = np.argsort(-np.abs(u_ref[b]))[:3]
        expected = np.zeros(16)
        expected[top] = u_ref[b, top]
        np.testing.assert_allclose(z[b], expected, rtol=1e-12, atol=1e-12)
    # decode is (z W_dec + b_dec) / s. fp64, a 16-term sum per entry: rounding is ~1e-16 of the
    # operands' scale whatever the summation order (BLAS kernels differ by CPU), and an entry that
    # cancels to ~1e-4 keeps that absolute error, so the bound is 1e-12 x the operands' scale.
    W_d = sae.W_dec.detach().numpy()
    scale = ((np.abs(z) @ np.abs(W_d) + np.abs(b_d)) / s).max()
    np.testing.assert_allclose(
        sae.decode(torch.from_numpy(z)).detach().numpy(), (z @ W_d + b_d) / s, rtol=1e-12, atol=1e-12 * scale
    )


@pytest.mark.parametrize("scale", [1.0, 0.01, 250.0])
def test_input_scale_is_undone_by_decode(scale):
    """With an identity code, decode(encode(x)) returns the raw x for any scale and any b_dec."""
    d = 8
    sae = SAE(make_cfg("abstopk", d_in=d, d_sae=d, k=d, dtype="float64", input_scale=scale))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d, dtype=torch.float64))
        sae.W_dec.copy_(torch.eye(d, dtype=torch.float64))
        sae.b_dec.copy_(torch.linspace(-3, 3, d, dtype=torch.float64))
    x = torch.randn(10, d, dtype=torch.float64) * 7
    torch.testing.assert_close(sae(x), x, rtol=1e-12, atol=1e-12)
    # the code lives in the scaled space: z = s·x − b_dec
    torch.testing.assert_close(sae.encode(x), scale * x - sae.b_dec, rtol=1e-12, atol=1e-12)


def test_relu_split_code_reconstructs_raw_input():
    """ReLU with atoms [I; −I] codes x as (relu(s·x), relu(−s·x)); decode gives x back."""
    d, s = 8, 3.0
    sae = SAE(make_cfg("relu", d_in=d, d_sae=2 * d, dtype="float64", input_scale=s))
    eye = torch.eye(d, dtype=torch.float64)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    x = torch.randn(10, d, dtype=torch.float64)
    torch.testing.assert_close(sae(x), x, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- decoder geometry
def test_normalize_decoder_gives_unit_rows_and_keeps_directions():
    sae = randomise(SAE(make_cfg("topk", dtype="float64")))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.1, 10, 16, dtype=torch.float64)[:, None])
    before = sae.W_dec.detach().clone()
    sae.normalize_decoder()
    W = sae.W_dec.detach()
    torch.testing.assert_close(W.norm(dim=1), torch.ones(16, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(W, before / before.norm(dim=1, keepdim=True), rtol=1e-12, atol=1e-12)


def test_remove_parallel_grad_leaves_gradient_orthogonal_to_rows():
    sae = randomise(SAE(make_cfg("abstopk", dtype="float64")))
    x = torch.randn(32, 8, dtype=torch.float64)
    (sae(x) - x).pow(2).sum().backward()
    g_before = sae.W_dec.grad.clone()
    assert (g_before * sae.W_dec.detach()).sum(1).abs().max() > 1e-3  # there was a parallel part
    sae.remove_parallel_grad()
    W = sae.W_dec.detach()
    g = sae.W_dec.grad
    rows = W / W.norm(dim=1, keepdim=True)
    assert (g * rows).sum(1).abs().max() < 1e-12 * g_before.abs().max()
    # only the parallel component was removed: g = g_before − (g_before·r) r
    torch.testing.assert_close(g, g_before - (g_before * rows).sum(1, keepdim=True) * rows)


# --------------------------------------------------------------------------- batch variants
@pytest.mark.parametrize("activation", ["batchtopk", "batchabstopk"])
def test_batch_variants_train_mode_keep_k_times_B(activation):
    sae = randomise(SAE(make_cfg(activation, k=3)))
    sae.train()
    for B in (1, 4, 10):
        z = sae.encode(torch.randn(B, 8))
        assert int((z != 0).sum()) == 3 * B
    if activation == "batchtopk":
        assert (z >= 0).all()
    else:
        assert (z < 0).any()  # signs kept


@pytest.mark.parametrize("activation", ["batchtopk", "batchabstopk"])
def test_batch_variants_threshold_is_the_ema_of_the_smallest_kept(activation):
    sae = randomise(SAE(make_cfg(activation, k=3)))
    act = sae.act
    assert act.threshold.item() == -1.0  # untrained marker
    sae.train()
    x1, x2 = torch.randn(6, 8), torch.randn(6, 8)
    z1 = sae.encode(x1)
    first = z1[z1 != 0].abs().min().item()
    assert act.threshold.item() == pytest.approx(first, rel=1e-6)
    z2 = sae.encode(x2)
    second = z2[z2 != 0].abs().min().item()
    assert act.threshold.item() == pytest.approx(act.momentum * first + (1 - act.momentum) * second, rel=1e-6)


@pytest.mark.parametrize("activation", ["batchtopk", "batchabstopk"])
def test_batch_variants_eval_mode_is_row_independent_and_uses_threshold(activation):
    sae = randomise(SAE(make_cfg(activation, k=3)), seed=3)
    sae.train()
    for _ in range(5):
        sae.encode(torch.randn(16, 8))
    theta = sae.threshold.item()
    assert theta > 0
    sae.eval()
    x = torch.randn(12, 8)
    with torch.no_grad():
        z = sae.encode(x)
        u = sae.pre_acts(x)
        for b in range(12):  # same support; values equal up to matmul rounding (1 row vs 12)
            z_b = sae.encode(x[b : b + 1])[0]
            assert torch.equal(z_b != 0, z[b] != 0)
            torch.testing.assert_close(z_b, z[b], rtol=1e-6, atol=1e-6)
    score = u.abs() if activation == "batchabstopk" else u
    expected = torch.where(score > theta, u, torch.zeros_like(u))
    torch.testing.assert_close(z, expected, rtol=0, atol=0)
    assert sae.threshold.item() == theta  # eval does not move the threshold


def test_untrained_batch_variant_in_eval_falls_back_to_per_row_topk():
    sae = randomise(SAE(make_cfg("batchabstopk", k=3)))
    ref = SAE(make_cfg("abstopk", k=3))
    ref.load_state_dict({k: v for k, v in sae.state_dict().items() if k != "act.threshold"})
    sae.eval()
    x = torch.randn(9, 8)
    torch.testing.assert_close(sae.encode(x), ref.encode(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def trained_saes():
    """One briefly trained SAE per activation (so thresholds hold trained values)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=gen) @ torch.randn(8, 8, generator=gen)
    out = {}
    for activation in ALL_ACTIVATIONS:
        cfg = make_cfg(activation, metadata={"note": "unit test"}, hook_name="blocks.3.hook_resid_post", hook_layer=3)
        sae, _ = train_sae(cfg, x, n_tokens=40 * 64, batch_size=64, lr=1e-2, progress=False)
        out[activation] = sae
    return out, x


def test_trained_thresholds_are_not_their_init(trained_saes):
    saes, _ = trained_saes
    assert saes["batchtopk"].threshold.item() > 0
    assert saes["batchabstopk"].threshold.item() > 0
    for name in ("jumprelu", "absjumprelu"):
        th = saes[name].threshold.detach()
        assert not torch.equal(th, torch.full_like(th, 1e-3))
        assert (th >= 0).all()


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_save_load_round_trip_is_exact(activation, trained_saes, tmp_path):
    saes, x = trained_saes
    sae = saes[activation]
    sae.save(tmp_path / "sae")
    assert sorted(os.listdir(tmp_path / "sae")) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = SAE.load(tmp_path / "sae")
    assert loaded.cfg == sae.cfg.__class__(**(sae.cfg.to_dict() | {"device": None}))
    for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(loaded, key), getattr(sae, key)), key
    if sae.threshold is None:
        assert loaded.threshold is None
    else:
        assert torch.equal(loaded.threshold, sae.threshold)
    assert not loaded.training  # ready for inference: batch variants use the stored threshold
    sae.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))
        assert torch.equal(loaded(x), sae(x))


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_saved_file_uses_saelens_names(activation, trained_saes, tmp_path):
    from safetensors.torch import load_file

    sae = trained_saes[0][activation]
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    expected_arch = {"relu": "standard"}.get(activation, activation)
    assert cfg["architecture"] == expected_arch
    assert cfg["d_in"] == 8 and cfg["d_sae"] == 16 and cfg["hook_name"] == "blocks.3.hook_resid_post"
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    expected = {"W_enc": (8, 16), "W_dec": (16, 8), "b_enc": (16,), "b_dec": (8,)}
    if activation in ("jumprelu", "absjumprelu"):
        expected["threshold"] = (16,)
    elif activation in ("batchtopk", "batchabstopk"):
        expected["threshold"] = ()
    assert shapes == expected


def test_load_missing_directory_or_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        SAE.load(tmp_path / "nothing_here")
    SAE(make_cfg("relu")).save(tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        SAE.load(tmp_path / "a")


def test_load_rejects_cfg_that_does_not_match_tensors(tmp_path):
    SAE(make_cfg("topk", d_sae=16)).save(tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    cfg["d_sae"] = 32
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as err:
        SAE.load(tmp_path)
    msg = str(err.value)
    assert "d_sae=32" in msg and "(8, 16)" in msg and "(8, 32)" in msg


def test_load_rejects_bad_json_and_foreign_format(tmp_path):
    SAE(make_cfg("relu")).save(tmp_path)
    good = (tmp_path / CONFIG_FILE).read_text()
    (tmp_path / CONFIG_FILE).write_text(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        SAE.load(tmp_path)
    cfg = json.loads(good)
    del cfg["format"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="from_saelens"):
        SAE.load(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.99, 8])
def test_load_rejects_truncated_safetensors(tmp_path, keep):
    SAE(make_cfg("jumprelu")).save(tmp_path)
    f = tmp_path / WEIGHTS_FILE
    data = f.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    f.write_bytes(data[:n])
    with pytest.raises(ValueError) as err:
        SAE.load(tmp_path)
    assert WEIGHTS_FILE in str(err.value) and "truncated or corrupt" in str(err.value)


def test_save_to_a_file_path_raises_and_leaves_it_unchanged(tmp_path):
    target = tmp_path / "not_a_dir"
    target.write_bytes(b"precious")
    with pytest.raises(ValueError, match="not_a_dir"):
        SAE(make_cfg("relu")).save(target)
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]


def test_save_overwrites_in_place_without_temp_files(tmp_path):
    a, b = randomise(SAE(make_cfg("abstopk")), 0), randomise(SAE(make_cfg("abstopk")), 1)
    a.save(tmp_path)
    b.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [CONFIG_FILE, WEIGHTS_FILE]
    assert torch.equal(SAE.load(tmp_path).W_enc, b.W_enc)


def test_failed_write_leaves_previous_files_intact(tmp_path, monkeypatch):
    import safetensors.torch

    good = randomise(SAE(make_cfg("abstopk")), 0)
    good.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(tensors, filename, *a, **kw):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        randomise(SAE(make_cfg("abstopk")), 1).save(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
