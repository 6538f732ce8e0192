"""am.pretrained (SAEs shipped with the book) and am.repo (finding the checkout)."""


import pytest
import torch

import abstopk_mini as am
from abstopk_mini import pretrained as P
from abstopk_mini import repo


def _sae(activation):
    torch.manual_seed(0)
    cfg = am.SAEConfig(d_in=16, d_sae=64, activation=activation, k=4, input_scale=3.0, model_name="tiny",
                       hook_name="blocks.1.hook_resid_post", hook_layer=1)
    sae = am.SAE(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
    return sae.eval()


@pytest.mark.parametrize("activation", ["topk", "abstopk"])
def test_ship_and_load_compute_what_the_float16_weights_compute(tmp_path, activation):
    sae = _sae(activation)
    entry = P.ship(sae, "tiny-" + activation, tmp_path, {"trained": {"steps": 0}})
    assert entry["dtype"] == "float16" and entry["trained"] == {"steps": 0}
    assert entry["sha256"]["sae_weights.safetensors"] == P.sha256(tmp_path / ("tiny-" + activation) / "sae_weights.safetensors")
    back = P.load("tiny-" + activation, tmp_path)
    assert back.cfg.activation == activation and back.cfg.k == 4 and back.cfg.hook_name == "blocks.1.hook_resid_post"
    # reference: the folded weights, each rounded once to float16 (float64 folding, module docstring of interop)
    s = 3.0
    ref = {"W_enc": sae.W_enc.double() * s, "W_dec": sae.W_dec.double() / s, "b_enc": sae.b_enc.double(),
           "b_dec": sae.b_dec.double() / s}
    for key, value in ref.items():
        assert torch.equal(getattr(back, key).detach().float(), value.half().float()), key
    # and the loaded SAE reads raw activations like the original, to float16 rounding of its weights
    x = torch.randn(256, 16) * 2
    with torch.no_grad():
        x_hat, x_ref = back(x), sae(x)
    rel = (x_hat - x_ref).norm() / x_ref.norm()
    assert rel < 1e-2  # float16 keeps 11 bits: ~5e-4 per weight, a few e-3 after a 16-term sum


def test_manifest_names_and_errors(tmp_path):
    P.ship(_sae("topk"), "a", tmp_path, {})
    assert list(P.available(tmp_path)) == ["a"]
    with pytest.raises(ValueError, match="already in"):
        P.ship(_sae("topk"), "a", tmp_path, {})
    with pytest.raises(ValueError, match="available: \\['a'\\]"):
        P.load("nope", tmp_path)
    weights = tmp_path / "a" / "sae_weights.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:-8] + bytes(8))  # same size, different bytes
    with pytest.raises(ValueError, match="SHA-256"):
        P.load("a", tmp_path)
    assert P.load("a", tmp_path, verify=False).cfg.d_sae == 64  # at the user's risk
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="git checkout -- pretrained/"):
        P.load("a", tmp_path)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        P.available(tmp_path / "empty")
    with pytest.raises(ValueError, match="plain folder name"):
        P.ship(_sae("topk"), "../x", tmp_path, {})


def test_repo_root_from_a_scratch_folder(tmp_path, monkeypatch):
    here = repo.repo_root()
    assert here is not None and repo.is_checkout(here)
    monkeypatch.chdir(tmp_path)  # no checkout above tmp_path: found next to the installed package (pip install -e .)
    assert repo.repo_root() == here
    assert repo.find("results/steps_vs_tokens.jsonl").is_file()
    monkeypatch.setenv("ABSTOPK_REPO", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ABSTOPK_REPO"):
        repo.repo_root()
    (tmp_path / "results").mkdir()
    assert repo.repo_root() == tmp_path.resolve()
    with pytest.raises(FileNotFoundError, match="git pull"):
        repo.find("results/nothing.jsonl")


def test_every_shipped_sae_loads_and_matches_its_manifest():
    entries = P.available()
    assert entries, "pretrained/manifest.json lists no SAE"
    for name, entry in entries.items():
        sae = P.load(name)  # verifies the SHA-256 of both files
        assert (sae.cfg.activation, sae.cfg.d_sae, sae.cfg.k, sae.cfg.hook_name) == (
            entry["activation"], entry["d_sae"], entry["k"], entry["hook_name"])
        assert sae.cfg.hook_layer == entry["layer"]
        assert entry["heldout_fvu"]["shipped"] == pytest.approx(entry["heldout_fvu"]["float32"], rel=0.01)


def test_saelens_reads_a_shipped_sae_and_computes_what_we_load():
    sae_lens = pytest.importorskip("sae_lens")
    name = "gemma-3-270m-L6-abstopk-4096-k32"
    ours = P.load(name)
    theirs = sae_lens.SAE.load_from_disk(P.pretrained_root() / P.available()[name]["dir"])
    torch.manual_seed(0)
    x = torch.randn(64, 640) * 20
    with torch.no_grad():
        z_ours, z_theirs = ours.encode(x), theirs.encode(x)
        assert torch.equal(z_ours != 0, z_theirs != 0)  # the same k latents, with the same signs
        assert torch.allclose(z_ours, z_theirs, rtol=1e-4, atol=1e-4)  # float32 sums in another order
        assert torch.allclose(ours.decode(z_ours), theirs.decode(z_theirs), rtol=1e-4, atol=1e-3)
