"""SAELens interop: every architecture encodes and decodes the same through SAELens and through
abstopk_mini, in both directions, with the input normalisation folded correctly."""

import json
import warnings

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

import abstopk_mini as am  # noqa: E402
from abstopk_mini import interop  # noqa: E402

D_IN, D_SAE, K = 12, 40, 5
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _x(n=64, seed=0):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _randomize(module, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        p.copy_(noise.abs() * 0.3 if "threshold" in name else noise * 0.3)


@torch.no_grad()
def _assert_same(ours, theirs, x, split=False):
    z_theirs = theirs.encode(x)
    x_hat_theirs = theirs.decode(z_theirs)
    if split:  # a signed latent j was written as j (u > θ) and d_sae + j (u < −θ)
        z_theirs = z_theirs[:, :D_SAE] - z_theirs[:, D_SAE:]
    z_ours = ours.encode(x)
    assert (z_ours != 0).any()
    torch.testing.assert_close(z_ours, z_theirs, **TOL)
    torch.testing.assert_close(ours.decode(z_ours), x_hat_theirs, **TOL)
    torch.testing.assert_close(ours(x), x_hat_theirs, **TOL)


def _saelens_inference(arch):
    classes = {
        "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
        "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
        "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": K}),
        "abstopk": (sae_lens.AbsTopKSAE, sae_lens.AbsTopKSAEConfig, {"k": K}),
    }
    cls, cfg_cls, kw = classes[arch]
    sae = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **kw))
    _randomize(sae)
    return sae


# ----------------------------------------------------------------------------- SAELens -> ours
@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk", "abstopk"])
def test_from_saelens_matches_saelens(tmp_path, arch):
    theirs = _saelens_inference(arch)
    theirs.save_model(tmp_path)
    ours = interop.from_saelens(tmp_path)
    assert ours.cfg.activation == interop.SUPPORTED_FROM_SAELENS[arch]
    _assert_same(ours, theirs, _x())


def test_from_saelens_batchtopk_both_files(tmp_path):
    """SAELens ships a trained BatchTopK SAE as JumpReLU with one threshold; its checkpoint is 'batchtopk'."""
    train = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    _randomize(train)
    train.topk_threshold = torch.tensor(0.3, dtype=torch.float64)
    train.save_model(tmp_path / "ckpt")
    train.save_inference_model(tmp_path / "infer")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "infer")
    assert json.loads((tmp_path / "infer" / "cfg.json").read_text())["architecture"] == "jumprelu"
    x = _x()
    ours = interop.from_saelens(tmp_path / "ckpt")  # rescale_acts_by_decoder_norm folded in
    assert ours.cfg.activation == "batchtopk" and not ours.training
    _assert_same(ours, theirs, x)
    _assert_same(interop.from_saelens(tmp_path / "infer"), theirs, x)


def test_from_saelens_topk_training_checkpoint_with_decoder_norm_rescaling(tmp_path):
    train = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K))
    _randomize(train)
    assert train.cfg.rescale_acts_by_decoder_norm
    train.save_model(tmp_path)
    ours = interop.from_saelens(tmp_path)
    train.eval()
    _assert_same(ours, train, _x())


def test_from_saelens_folds_expected_average_normalisation(tmp_path):
    """SAELens's trainer scales inputs by s outside the SAE; our SAE applies s itself."""
    theirs = _saelens_inference("abstopk")
    theirs.cfg.normalize_activations = "expected_average_only_in"
    theirs.save_model(tmp_path)
    s = 2.5
    (tmp_path / interop.SCALER_FILE).write_text(json.dumps({"scaling_factor": s}))
    ours = interop.from_saelens(tmp_path)
    assert ours.cfg.input_scale == s
    x = _x()
    with torch.no_grad():  # SAELens's trained-SAE semantics: x -> s·x -> SAE -> /s
        z = theirs.encode(s * x)
        torch.testing.assert_close(ours.encode(x), z, **TOL)
        torch.testing.assert_close(ours(x), theirs.decode(z) / s, **TOL)
    theirs.fold_activation_norm_scaling_factor(s)  # SAELens's own fold gives the same SAE
    _assert_same(ours, theirs, x)
    # an explicit factor wins; no factor at all: warn and use 1 (what SAE.load_from_disk does)
    assert interop.from_saelens(tmp_path, scaling_factor=4.0).cfg.input_scale == 4.0
    (tmp_path / interop.SCALER_FILE).unlink()
    with pytest.warns(UserWarning, match="scaling factor"):
        assert interop.from_saelens(tmp_path).cfg.input_scale == 1.0


def test_from_saelens_without_b_dec_on_input(tmp_path):
    theirs = _saelens_inference("jumprelu")
    theirs.cfg.apply_b_dec_to_input = False
    theirs.save_model(tmp_path)
    _assert_same(interop.from_saelens(tmp_path), sae_lens.SAE.load_from_disk(tmp_path), _x())


# ----------------------------------------------------------------------------- ours -> SAELens
@torch.no_grad()
def _ours(activation, scale=2.5):
    sae = am.SAE(am.SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=K, input_scale=scale, device="cpu",
                              hook_name="blocks.3.hook_resid_post", model_name="toy"))
    _randomize(sae, seed=3)
    if activation in ("batchtopk", "batchabstopk"):
        sae.act.threshold.fill_(0.4)
    sae.eval()
    return sae


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk", "abstopk", "batchtopk"])
def test_to_saelens_loads_and_matches(tmp_path, activation):
    ours = _ours(activation)
    interop.to_saelens(ours, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert theirs.cfg.architecture() == interop.SAELENS_ARCHITECTURE[activation]
    assert theirs.cfg.normalize_activations == "none"
    assert theirs.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    _assert_same(ours, theirs, _x(seed=4) * 0.6)
    back = interop.from_saelens(tmp_path)  # round trip: the same function (scale now folded in)
    assert back.cfg.input_scale == 1.0 and back.cfg.hook_layer == 3
    with torch.no_grad():
        torch.testing.assert_close(back(_x(seed=5)), ours(_x(seed=5)), **TOL)


@pytest.mark.parametrize("activation", ["batchabstopk", "absjumprelu"])
def test_signed_thresholds_export_only_when_split(tmp_path, activation):
    ours = _ours(activation)
    with pytest.raises(ValueError, match="split_signed=True"):
        interop.to_saelens(ours, tmp_path)
    interop.to_saelens(ours, tmp_path, split_signed=True)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert theirs.cfg.d_sae == 2 * D_SAE
    _assert_same(ours, theirs, _x(seed=6) * 0.6, split=True)


def test_untrained_batchtopk_exports_as_topk(tmp_path):
    ours = _ours("batchtopk")
    ours.act.threshold.fill_(-1.0)  # never trained: eval is a per-row top-k
    interop.to_saelens(ours, tmp_path)
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert theirs.cfg.architecture() == "topk"
    _assert_same(ours, theirs, _x())


# ----------------------------------------------------------------------------- bad input
def test_bad_input(tmp_path):
    gated = sae_lens.GatedSAE(sae_lens.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE))
    gated.save_model(tmp_path / "gated")
    with pytest.raises(ValueError, match=r"architecture='gated'.*abstopk.*batchtopk.*jumprelu.*standard.*topk"):
        interop.from_saelens(tmp_path / "gated")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        interop.from_saelens(tmp_path / "missing")
    theirs = _saelens_inference("topk")
    theirs.cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    theirs.save_model(tmp_path / "topk")
    with pytest.raises(ValueError, match="d_in=12.*d_in=640"):
        interop.from_saelens(tmp_path / "topk", d_in=640)
    with pytest.raises(ValueError, match="blocks.2.hook_resid_post.*blocks.5"):
        interop.from_saelens(tmp_path / "topk", hook_name="blocks.5.hook_resid_post")
    assert interop.from_saelens(tmp_path / "topk", d_in=D_IN, hook_name="blocks.2.hook_resid_post").cfg.hook_layer == 2
    cfg = json.loads((tmp_path / "topk" / "cfg.json").read_text())
    (tmp_path / "topk" / "cfg.json").write_text(json.dumps(cfg | {"normalize_activations": "constant_norm_rescale"}))
    with pytest.raises(ValueError, match="constant_norm_rescale"):
        interop.from_saelens(tmp_path / "topk")
    (tmp_path / "topk" / "cfg.json").write_text(json.dumps(cfg | {"d_sae": 41}))
    with pytest.raises(ValueError, match="do not belong together"):
        interop.from_saelens(tmp_path / "topk")
    _ours("abstopk").save(tmp_path / "native")
    with pytest.raises(ValueError, match="SAE.load"):
        interop.from_saelens(tmp_path / "native")
