"""The training loop: exact resume, schedules, initialisation, bad input, NaN handling, dead latents,
AuxK and the sparsity penalties. Tiny sizes (d_in 8-16, d_sae 16-32, <= a few hundred steps)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import abstopk_mini.train as train_mod
from abstopk_mini import metrics
from abstopk_mini.sae import SAE, SAEConfig
from abstopk_mini.coding.toy import bidirectional_data
from abstopk_mini.checkpoint import load_checkpoint
from abstopk_mini.train import CHECKPOINT_FILE, geometric_median, lr_at, train_sae

QUIET = dict(progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg_for(activation="abstopk", d_in=16, d_sae=32, k=4, **kw):
    k = k if activation in ("topk", "abstopk", "batchtopk", "batchabstopk") else None
    return SAEConfig(d_in=d_in, d_sae=d_sae, activation=activation, k=k, device="cpu", **kw)


def toy(n=2000, d=16, P=16, n_active=3, seed=0, **kw):
    return bidirectional_data(n, d=d, P=P, n_active=n_active, seed=seed, **kw)


def params(sae):
    return {name: t.detach().clone() for name, t in sae.state_dict().items()}


def assert_same_run(sae_a, hist_a, sae_b, hist_b):
    pa, pb = params(sae_a), params(sae_b)
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.equal(pa[name], pb[name]), name
    skip = {"wall_time_s"}  # the only non-deterministic entry
    assert {k for k in hist_a if k not in skip} == {k for k in hist_b if k not in skip}
    for key in hist_a:
        if key not in skip:
            assert hist_a[key] == hist_b[key], key


# --------------------------------------------------------------------------- resume
@pytest.fixture
def keep_checkpoints(monkeypatch):
    """Copy every checkpoint the loop writes to ``step_<n>.safetensors`` next to it (a spy, no behaviour change)."""
    real = train_mod.save_checkpoint
    saved = {}

    def spy(directory, sae, opt, step, *args, **kw):
        target = real(directory, sae, opt, step, *args, **kw)
        copy = Path(directory) / f"step_{step}.safetensors"
        shutil.copyfile(target, copy)
        saved[step] = copy
        return target

    monkeypatch.setattr(train_mod, "save_checkpoint", spy)
    return saved


def _resume_check(activation, data, tmp_path, keep_checkpoints, n_steps=24, **kw):
    cfg = cfg_for(activation, d_in=8, d_sae=16, k=2, seed=3)
    common = dict(n_tokens=n_steps * 32, batch_size=32, lr=3e-3, dead_tokens=96, log_every=1, **QUIET) | kw
    straight, h_straight = train_sae(cfg, data, checkpoint_dir=str(tmp_path / "a"), checkpoint_every=n_steps // 2, **common)
    mid = keep_checkpoints[n_steps // 2]
    resumed, h_resumed = train_sae(cfg, data, resume=mid, checkpoint_dir=str(tmp_path / "b"), **common)
    assert h_straight["n_steps"] == h_resumed["n_steps"]
    assert_same_run(straight, h_straight, resumed, h_resumed)
    return h_straight


@pytest.mark.parametrize("activation", ["abstopk", "batchtopk", "jumprelu", "relu"])
def test_resume_is_exact_tensor_source(activation, tmp_path, keep_checkpoints):
    x = toy(300, d=8, P=8, n_active=2)[0]  # 300 rows, batch 32: epochs of 10 steps, last one partial
    h = _resume_check(activation, x, tmp_path, keep_checkpoints)
    assert h["n_steps"] == 24 and h["tokens"][-1] == 2 * 300 + 4 * 32  # two epochs, then 4 batches


def test_resume_is_exact_list_source(tmp_path, keep_checkpoints):
    """A re-iterable list of uneven batches; the resume point lies in the second pass, after a
    partial batch at the end of the first (125 rows per pass, batches of 32)."""
    x = toy(125, d=8, P=8, n_active=2, seed=1)[0]
    batches = [x[:50], x[50:80], x[80:]]
    h = _resume_check("abstopk", batches, tmp_path, keep_checkpoints)
    assert 125 in h["tokens"]  # the straight run did flush the partial batch at the end of pass 1


def test_resume_is_exact_with_dropped_rows(tmp_path, keep_checkpoints):
    x = toy(125, d=8, P=8, n_active=2, seed=2)[0]
    x[[3, 60, 61, 100]] = float("nan")
    batches = [x[:50], x[50:80], x[80:]]
    h = _resume_check("abstopk", batches, tmp_path, keep_checkpoints, drop_nonfinite=True)
    # 4 bad rows per pass; 24 steps of <= 32 rows over 121-row passes read 7 passes
    assert h["n_dropped_nonfinite"] == 4 * math.ceil(h["n_tokens"] / 121)


def test_resume_from_missing_or_corrupt_checkpoint(tmp_path):
    x = toy(200, d=8, P=8)[0]
    with pytest.raises(FileNotFoundError, match="resume"):
        train_sae(cfg_for(d_in=8, d_sae=16), x, resume=tmp_path / "none", **QUIET)
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="resume"):
        train_sae(cfg_for(d_in=8, d_sae=16), x, resume=tmp_path, **QUIET)


# --------------------------------------------------------------------------- it trains
@pytest.mark.parametrize("activation", ["relu", "jumprelu", "absjumprelu", "topk", "abstopk", "batchtopk", "batchabstopk"])
def test_training_reduces_fvu_and_keeps_unit_decoder(activation):
    x, _, _ = toy(3000, d=16, P=16, n_active=3, seed=0)
    cfg = cfg_for(activation, d_in=16, d_sae=32, k=4)
    sae0 = SAE(cfg)  # same seed: the initial decoder of the run
    sae, hist = train_sae(cfg, x, n_tokens=300 * 128, batch_size=128, lr=1e-2, l1_coefficient=0.05, l0_coefficient=0.01, **QUIET)
    assert not sae.training
    torch.testing.assert_close(sae.W_dec.detach().norm(dim=1), torch.ones(32), rtol=0, atol=1e-5)
    with torch.no_grad():
        sae0.cfg.input_scale, sae0.b_dec.data = sae.cfg.input_scale, sae.b_dec.detach().clone()
        fvu0 = metrics.fvu(x, sae0(x))  # the random dictionary, for scale
        fvu = metrics.fvu(x, sae(x))
    # measured (seeds 0, 1): fvu0 0.65-3.0, fvu 0.002-0.108 after 300 steps
    assert fvu0 > 0.5
    assert fvu < 0.2 * fvu0 and fvu < 0.15, (fvu0, fvu)
    assert hist["fvu"][-1] < 0.2 * hist["fvu"][0]
    # 3000 rows in batches of 128: 24 steps per epoch (the last of 56 rows)
    assert hist["n_steps"] == 300 and hist["n_tokens"] == 12 * 3000 + 12 * 128


# --------------------------------------------------------------------------- schedule
def lr_reference(step, n, lr, warm_frac, decay_frac):
    """The schedule written out: linear warm-up to lr over W steps, flat, linear to 0 over the last Dk."""
    W = max(1, int(warm_frac * n))
    Dk = int(decay_frac * n)
    if step < W:
        return lr * (step + 1) / W
    if Dk > 0 and step >= n - Dk:
        return lr * (n - step) / Dk
    return lr


def test_lr_schedule_closed_form():
    lr = 0.01
    n = 100  # warm-up 5 steps, decay over the last 20
    expected = {0: lr / 5, 1: 2 * lr / 5, 4: lr, 5: lr, 50: lr, 80: lr, 81: lr * 19 / 20, 90: lr / 2, 99: lr / 20, 100: 0.0}
    for step, value in expected.items():
        assert lr_at(step, n, lr, 0.05, 0.2) == pytest.approx(value, rel=1e-12, abs=1e-15), step
    for n, wf, df in [(100, 0.05, 0.2), (37, 0.1, 0.3), (10, 0.0, 0.0), (1000, 0.0, 1.0)]:
        values = [lr_at(s, n, lr, wf, df) for s in range(n + 1)]
        assert values == pytest.approx([lr_reference(s, n, lr, wf, df) for s in range(n + 1)], rel=1e-12, abs=1e-15)
        assert max(values) == pytest.approx(lr) and min(values) >= 0
    # the lr each step actually used is the schedule
    x = toy(500, d=8, P=8)[0]
    _, hist = train_sae(cfg_for(d_in=8, d_sae=16, k=2), x, n_tokens=40 * 32, batch_size=32, lr=lr, log_every=1, **QUIET)
    assert hist["lr"] == pytest.approx([lr_at(s, 40, lr, 0.05, 0.2) for s in range(40)], rel=1e-12)


# --------------------------------------------------------------------------- initialisation
def scipy_geometric_median(X):
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float64)
    f = lambda m: np.linalg.norm(X - m, axis=1).sum()
    g = lambda m: -((X - m) / np.linalg.norm(X - m, axis=1, keepdims=True)).sum(0)
    res = minimize(f, X.mean(0), jac=g, method="BFGS", options=dict(gtol=1e-12, maxiter=10_000))
    return res.x, res.fun


@pytest.mark.parametrize("seed,n,d", [(0, 200, 3), (1, 500, 8), (2, 50, 16)])
def test_geometric_median_matches_scipy(seed, n, d):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.rand(d, generator=gen, dtype=torch.float64) * 3 + 1
    m = geometric_median(X).numpy()
    m_ref, f_ref = scipy_geometric_median(X.numpy())
    np.testing.assert_allclose(m, m_ref, atol=1e-4)
    assert np.linalg.norm(X.numpy() - m, axis=1).sum() <= f_ref * (1 + 1e-9)


def test_geometric_median_is_robust_to_an_outlier():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(99, 8, generator=gen, dtype=torch.float64)
    m0 = geometric_median(X)
    far = torch.cat([X, torch.full((1, 8), 1e4, dtype=torch.float64)])
    shift_median = (geometric_median(far) - m0).norm().item()
    shift_mean = (far.mean(0) - X.mean(0)).norm().item()
    assert shift_mean > 200  # 1e4·sqrt(8)/100
    assert shift_median < 0.1


def test_input_scale_and_b_dec_init_from_the_sample():
    x, _, _ = toy(600, d=16, P=16, n_active=3, seed=4, bias_norm=5.0)
    x = x * 37.0  # a raw scale far from 1
    # lr = 0: one step that moves nothing, so the SAE holds its initial values
    sae, hist = train_sae(cfg_for("topk", d_in=16), x, n_tokens=32, batch_size=32, lr=0.0, init_sample=1000, **QUIET)
    s = sae.cfg.input_scale
    assert hist["input_scale"] == s
    assert (s * x.double()).pow(2).sum(1).mean().item() == pytest.approx(16.0, rel=1e-9)
    m_ref, _ = scipy_geometric_median(s * x.double().numpy())
    np.testing.assert_allclose(sae.b_dec.detach().double().numpy(), m_ref, atol=1e-4)
    # b_dec_init="mean" and normalize_input=False
    sae2, _ = train_sae(cfg_for("topk", d_in=16), x, n_tokens=32, batch_size=32, lr=0.0, b_dec_init="mean",
                        normalize_input=False, **QUIET)
    assert sae2.cfg.input_scale == 1.0
    torch.testing.assert_close(sae2.b_dec.detach(), x.double().mean(0).float())


def test_input_scale_makes_training_scale_invariant():
    x = toy(1000, d=8, P=8, n_active=2)[0]
    kw = dict(n_tokens=30 * 64, batch_size=64, lr=1e-2, **QUIET)
    a, _ = train_sae(cfg_for("abstopk", d_in=8, d_sae=16, k=2), x, **kw)
    b, _ = train_sae(cfg_for("abstopk", d_in=8, d_sae=16, k=2), 1000.0 * x, **kw)
    assert b.cfg.input_scale == pytest.approx(a.cfg.input_scale / 1000, rel=1e-6)
    torch.testing.assert_close(b.W_dec, a.W_dec, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(b(1000.0 * x[:50]) / 1000.0, a(x[:50]), rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- bad input
def _no_files(path: Path) -> bool:
    return not path.exists() or not any(path.iterdir())


@pytest.mark.parametrize(
    "data,exc,words",
    [
        (torch.randn(100, 9), ValueError, ["width 9", "d_in=8"]),
        ([torch.randn(50, 8), torch.randn(50, 9)], ValueError, ["batch 1", "width 9", "d_in=8"]),
        (torch.randint(0, 5, (100, 8)), TypeError, ["activations", "torch.int64", "float"]),
        (torch.randn(100, 8, dtype=torch.complex64), TypeError, ["activations", "complex64"]),
        ([torch.randn(10, 8).double(), torch.ones(10, 8, dtype=torch.int32)], TypeError, ["batch 1", "int32"]),
        (torch.empty(0, 8), ValueError, ["activations", "empty"]),
        ([], ValueError, ["activations", "empty"]),
        ([torch.empty(0, 8)], ValueError, ["activations", "empty"]),
        (torch.randn(100), ValueError, ["2-D"]),
        (np.zeros((100, 8), dtype=np.float32), TypeError, ["activations", "ndarray"]),
        (42, TypeError, ["activations", "int"]),
    ],
)
def test_bad_activations_raise_clear_errors_and_write_nothing(data, exc, words, tmp_path):
    with pytest.raises(exc) as err:
        train_sae(cfg_for(d_in=8, d_sae=16, k=2), data, n_tokens=640, batch_size=32, checkpoint_dir=str(tmp_path / "ck"), **QUIET)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert _no_files(tmp_path / "ck")


def test_nonfinite_rows_are_an_error_naming_how_many(tmp_path):
    x = torch.randn(100, 8)
    x[5, 2] = float("nan")
    x[7] = float("inf")
    x[9, 0] = -float("inf")
    with pytest.raises(ValueError) as err:
        train_sae(cfg_for(d_in=8, d_sae=16, k=2), x, n_tokens=640, batch_size=32, checkpoint_dir=str(tmp_path / "ck"), **QUIET)
    msg = str(err.value)
    assert "3 row(s)" in msg and "out of 100" in msg and "drop_nonfinite=True" in msg
    assert _no_files(tmp_path / "ck")
    # an iterable source: the error names the batch
    with pytest.raises(ValueError, match=r"batch 1 .* 1 row\(s\) with NaN"):
        train_sae(cfg_for(d_in=8, d_sae=16, k=2), [torch.randn(10, 8), x[5:6]], n_tokens=640, batch_size=32, **QUIET)


def test_drop_nonfinite_drops_and_counts():
    x = toy(300, d=8, P=8, n_active=2)[0]
    x[[1, 50, 51]] = float("nan")
    x[200, 3] = float("inf")
    sae, hist = train_sae(cfg_for(d_in=8, d_sae=16, k=2), x, n_tokens=20 * 32, batch_size=32, drop_nonfinite=True, **QUIET)
    assert hist["n_dropped_nonfinite"] == 4
    assert all(math.isfinite(v) for v in hist["loss"])
    assert all(torch.isfinite(p).all() for p in sae.parameters())
    # the run equals one on the cleaned tensor
    clean = x[torch.isfinite(x).all(1)]
    sae2, hist2 = train_sae(cfg_for(d_in=8, d_sae=16, k=2), clean, n_tokens=20 * 32, batch_size=32, **QUIET)
    assert hist2["n_dropped_nonfinite"] == 0
    assert torch.equal(sae.W_dec, sae2.W_dec)


def test_one_shot_iterator_needs_n_tokens(tmp_path):
    x = toy(300, d=8, P=8, n_active=2)[0]
    with pytest.raises(ValueError) as err:
        train_sae(cfg_for(d_in=8, d_sae=16, k=2), iter(x.split(32)), checkpoint_dir=str(tmp_path / "ck"), **QUIET)
    assert "n_tokens" in str(err.value) and "one-shot" in str(err.value)
    assert _no_files(tmp_path / "ck")
    # with n_tokens it trains, and the rows read for initialisation are not lost
    gen = (b for b in x.split(32))
    _, hist = train_sae(cfg_for(d_in=8, d_sae=16, k=2), gen, n_tokens=10_000, batch_size=32, init_sample=64, **QUIET)
    assert hist["n_tokens"] == 300  # one pass over the whole iterator, then it stops
    # a re-iterable source without n_tokens: one pass
    _, hist = train_sae(cfg_for(d_in=8, d_sae=16, k=2), list(x.split(50)), batch_size=32, **QUIET)
    assert hist["n_tokens"] == 300 and hist["n_steps"] == math.ceil(300 / 32)


# --------------------------------------------------------------------------- NaN during training
class BlowsUp:
    """Re-iterable source: finite batches, then (from batch ``at`` of each pass) rows of 1e30."""

    def __init__(self, x, at, batch=32):
        self.x, self.at, self.batch = x, at, batch

    def __iter__(self):
        for i, b in enumerate(self.x.split(self.batch)):
            yield b * 1e30 if i >= self.at else b


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    x = toy(1000, d=8, P=8, n_active=2)[0]
    ck = tmp_path / "ck"
    with pytest.raises(FloatingPointError) as err:
        train_sae(cfg_for(d_in=8, d_sae=16, k=2), BlowsUp(x, at=13), n_tokens=30 * 32, batch_size=32,
                  checkpoint_dir=str(ck), checkpoint_every=5, init_sample=256, **QUIET)
    msg = str(err.value)
    assert "at step 13" in msg and "step 10, " in msg and str(ck) in msg
    assert sorted(p.name for p in ck.iterdir()) == [CHECKPOINT_FILE]  # no temp file left
    state = load_checkpoint(ck / CHECKPOINT_FILE)
    assert state["step"] == 10
    assert all(torch.isfinite(t).all() for t in state["sae"].values())
    # the checkpoint resumes on clean data and finishes
    sae, hist = train_sae(cfg_for(d_in=8, d_sae=16, k=2), [x[i : i + 32] for i in range(0, 1000, 32)],
                          resume=ck, n_tokens=30 * 32, batch_size=32, **QUIET)
    assert hist["n_steps"] == 30 and all(torch.isfinite(p).all() for p in sae.parameters())


def test_nan_without_checkpoint_says_none_saved():
    x = toy(500, d=8, P=8, n_active=2)[0]
    with pytest.raises(FloatingPointError, match=r"at step 3.*none saved"):
        train_sae(cfg_for(d_in=8, d_sae=16, k=2), BlowsUp(x, at=3), n_tokens=10 * 32, batch_size=32, init_sample=64, **QUIET)


def test_huge_lr_stops_at_the_first_bad_step(tmp_path):
    """lr = 1e37: the first update sends the encoder to ~1e38, the next loss overflows."""
    x = toy(1000, d=8, P=8, n_active=2)[0]
    ck = tmp_path / "ck"
    with pytest.raises(FloatingPointError) as err:
        train_sae(cfg_for("relu", d_in=8, d_sae=16), x, n_tokens=60 * 32, batch_size=32, lr=1e37, warmup_frac=0.0,
                  checkpoint_dir=str(ck), checkpoint_every=1, **QUIET)
    step = int(err.value.args[0].split("at step ")[1].split()[0])
    assert 1 <= step < 60
    state = load_checkpoint(ck / CHECKPOINT_FILE)
    assert state["step"] == step and f"step {step}, " in str(err.value)
    assert all(torch.isfinite(t).all() for t in state["sae"].values())


# --------------------------------------------------------------------------- dead latents
def test_a_latent_that_cannot_fire_is_counted_dead_after_dead_tokens(tmp_path):
    x = toy(2000, d=16, P=16, n_active=3)[0]
    cfg = cfg_for("relu", d_in=16, d_sae=32)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_enc[:, 7] = 0.0
        sae.b_enc[7] = -1e6  # u_7 = -1e6 for every input: ReLU never lets it through
    B, n_steps, dead_tokens = 64, 30, 640  # dead after 10 steps
    _, hist = train_sae(cfg, x, sae=sae, n_tokens=n_steps * B, batch_size=B, lr=1e-3, l1_coefficient=0.0,
                        dead_tokens=dead_tokens, log_every=1, checkpoint_dir=str(tmp_path), **QUIET)
    state = load_checkpoint(tmp_path / CHECKPOINT_FILE)
    since = state["since_fired"]
    assert since[7].item() == n_steps * B  # never fired
    assert (since >= dead_tokens).nonzero().flatten().tolist() == [7]  # and it is the only dead one
    assert hist["final_dead_frac"] == 1 / 32
    dead_frac = dict(zip(hist["tokens"], hist["dead_frac"]))
    assert all(f == 0 for t, f in dead_frac.items() if t < dead_tokens)
    assert all(f == 1 / 32 for t, f in dead_frac.items() if t >= dead_tokens)


@pytest.mark.parametrize("activation,P,d_sae", [("abstopk", 16, 16), ("topk", 8, 16)])
def test_auxk_revives_dead_latents(activation, P, d_sae):
    """A quarter of the latents start dead (zero encoder column, so u = 0 for abstopk / a tiny
    constant for topk: never in the top k, no gradient from the main loss). Without AuxK they stay
    dead; with AuxK they learn from the residual and fire. Measured on the data after training."""
    x, _, _ = toy(4000, d=16, P=P, n_active=2, seed=0)
    scale = math.sqrt(16 / x.pow(2).sum(1).mean().item())
    n_killed = d_sae // 4
    result = {}
    for coef in (0.0, 1.0):
        cfg = cfg_for(activation, d_in=16, d_sae=d_sae, k=2, input_scale=scale)
        sae = SAE(cfg)
        with torch.no_grad():
            sae.W_enc[:, :n_killed] = 0.0
            sae.b_enc[:n_killed] = 0.0 if activation == "abstopk" else 0.01
        sae, hist = train_sae(cfg, x, sae=sae, n_tokens=600 * 128, batch_size=128, lr=1e-2, aux_coef=coef,
                              dead_tokens=640, **QUIET)
        with torch.no_grad():
            z = sae.encode(x)
        counts = metrics.firing_counts(z)
        result[coef] = dict(dead=metrics.dead_fraction(counts), revived=int((counts[:n_killed] > 0).sum()),
                            fvu=metrics.fvu(x, sae.decode(z)))
    # measured (seed 0, 600 steps): abstopk dead 0.25 -> 0.0, 0/4 -> 4/4 revived; topk dead 0.19 -> 0.0, 1/4 -> 4/4
    # (with the gradient clipped to norm 1, 300 steps revived 3/4 for abstopk: AuxK's share of the step is clipped too)
    assert result[0.0]["revived"] <= 1 and result[1.0]["revived"] == n_killed, result
    assert result[1.0]["dead"] < result[0.0]["dead"] - 0.15, result
    assert result[1.0]["fvu"] < 0.5 * result[0.0]["fvu"], result


# --------------------------------------------------------------------------- sparsity penalties
def _l0_fvu(activation, **kw):
    x, _, _ = toy(3000, d=16, P=16, n_active=3, seed=1)
    sae, _ = train_sae(cfg_for(activation, d_in=16, d_sae=32), x, n_tokens=200 * 128, batch_size=128, lr=1e-2, **kw, **QUIET)
    with torch.no_grad():
        z = sae.encode(x)
        return metrics.l0(z), metrics.fvu(x, sae.decode(z)), sae


def test_relu_l1_coefficient_trades_l0_for_fvu():
    # measured: L0 20.4 / 16.8 / 9.5, FVU 0.011 / 0.018 / 0.148
    runs = [_l0_fvu("relu", l1_coefficient=c)[:2] for c in (0.01, 0.1, 1.0)]
    l0s, fvus = [r[0] for r in runs], [r[1] for r in runs]
    assert l0s[0] > l0s[1] > l0s[2], runs
    assert fvus[0] < fvus[1] < fvus[2], runs


@pytest.mark.parametrize("activation", ["jumprelu", "absjumprelu"])
def test_jumprelu_l0_coefficient_trades_l0_for_fvu_and_thresholds_learn(activation):
    # measured: jumprelu L0 20.4 / 18.9 / 12.8, FVU 0.009 / 0.011 / 0.022 (the smallest θ is
    # clamped at exactly 0 in the first run); absjumprelu L0 30.7 / 26.9 / 15.3, FVU 0.001 / 0.002 / 0.025
    runs = [_l0_fvu(activation, l0_coefficient=c) for c in (0.001, 0.01, 0.1)]
    l0s, fvus = [r[0] for r in runs], [r[1] for r in runs]
    assert l0s[0] > l0s[1] > l0s[2], (l0s, fvus)
    assert fvus[0] < fvus[1] < fvus[2], (l0s, fvus)
    for _, _, sae in runs:
        th = sae.threshold.detach()
        assert (th >= 0).all()
        assert (th != 1e-3).float().mean() > 0.9  # moved away from the init for almost every latent


def test_jumprelu_threshold_gets_gradient_from_both_terms():
    from abstopk_mini import losses

    x = toy(256, d=16, P=16)[0]
    sae = SAE(cfg_for("jumprelu", d_in=16, d_sae=32, threshold_init=0.3, bandwidth=0.5))
    out = sae.forward_train(x)
    (g_mse,) = torch.autograd.grad(losses.mse(out.x_in, out.x_hat), sae.act.threshold)
    out = sae.forward_train(x)
    (g_l0,) = torch.autograd.grad(sae.act.l0(out.u).mean(), sae.act.threshold)
    assert (g_l0 <= 0).all() and (g_l0 < 0).any()  # raising θ lowers L0
    assert g_mse.abs().sum() > 0


# --------------------------------------------------------------------------- L0 controller
@pytest.mark.parametrize("activation,coef", [("relu", "l1_coefficient"), ("jumprelu", "l0_coefficient")])
def test_target_l0_steers_the_coefficient_towards_the_target(activation, coef):
    # free runs on this data settle at L0 ~20 (see above); targets 4 and 12 must order and approach
    x, _, _ = toy(3000, d=16, P=16, n_active=3, seed=1)
    got = {}
    for target in (4, 12):
        start = 0.01 if activation == "relu" else 2.0  # JumpReLU: the weight of its two-sided term, held fixed
        sae, hist = train_sae(cfg_for(activation, d_in=16, d_sae=32), x, n_tokens=400 * 128, batch_size=128, lr=1e-2,
                              target_l0=target, target_rate=0.05, **{coef: start}, **QUIET)
        with torch.no_grad():
            got[target] = metrics.l0(sae.encode(x))
        if activation == "relu":
            assert hist["coef"][-1] > start  # too dense at the start: the coefficient rose
        else:
            assert set(hist["coef"]) == {start}  # the two-sided term pulls L0 itself
    assert got[4] < got[12], got
    assert abs(got[12] - 12) < 6 and got[4] < 8, got


def test_an_unreachable_target_keeps_the_coefficient_bounded_and_the_loss_finite():
    # target_rate 1: e^1 per step, e^300 after 300 steps without the bound
    x, _, _ = toy(2000, d=16, P=16, n_active=3, seed=0)
    _, hist = train_sae(cfg_for("relu", d_in=16, d_sae=32), x, n_tokens=300 * 128, batch_size=128, lr=1e-4,
                        l1_coefficient=0.5, target_l0=1e-3, target_rate=1.0, **QUIET)
    assert max(hist["coef"]) == pytest.approx(0.5 * train_mod.COEF_RANGE)
    assert all(math.isfinite(v) for v in hist["loss"])


# --------------------------------------------------------------------------- gradient clipping
@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "1"])
def test_grad_clip_rejects_what_is_not_a_positive_norm(bad):
    with pytest.raises(ValueError, match="grad_clip"):
        train_mod.TrainConfig(grad_clip=bad)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_each_step_is_adam_on_the_gradient_scaled_to_grad_clip(clip):
    """Three steps of train_sae against the step written out by hand: the loss's gradient with each
    decoder row's parallel part removed, multiplied by clip / (‖g‖ + 1e-6) over all parameters together
    where ‖g‖ > clip,
    then torch's Adam and unit rows. One batch holds all rows, so every step sees the same (permuted)
    data; float64, so the two agree to rounding (the mse is summed in another order per permutation)."""
    torch.manual_seed(0)
    x = torch.randn(256, 8, dtype=torch.float64) * torch.linspace(0.5, 3, 8, dtype=torch.float64)
    cfg = cfg_for("topk", d_in=8, d_sae=24, k=3, dtype="float64", input_scale=0.7)
    start = SAE(cfg)
    ref = SAE(cfg)
    ref.load_state_dict(start.state_dict())
    sae, hist = train_sae(cfg, x, sae=start, n_tokens=3 * 256, batch_size=256, lr=1e-2, lr_schedule="constant",
                          grad_clip=clip, dead_tokens=10**6, log_every=1, fast=False, **QUIET)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=6.25e-10)
    norms = []
    for _ in range(3):
        out = ref.forward_train(x, fast=False)
        loss = (out.x_hat - out.x_in).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            unit = ref.W_dec / ref.W_dec.norm(dim=1, keepdim=True)
            ref.W_dec.grad -= (ref.W_dec.grad * unit).sum(1, keepdim=True) * unit
            norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ref.parameters() if p.grad is not None))
            norms.append(norm)
            if clip is not None and norm > clip:
                for p in ref.parameters():
                    if p.grad is not None:
                        p.grad *= clip / (norm + 1e-6)  # torch's clip_grad_norm_ guards the division by 1e-6
        opt.step()
        with torch.no_grad():
            ref.W_dec /= ref.W_dec.norm(dim=1, keepdim=True)
    assert hist["grad_norm"] == pytest.approx(norms, rel=1e-9)
    assert min(norms) > 0.5  # clip = 0.5 scales every one of the three steps
    for name, t in ref.state_dict().items():
        torch.testing.assert_close(sae.state_dict()[name], t, rtol=1e-9, atol=1e-12, msg=name)


def test_clipping_changes_the_run_only_where_the_gradient_is_larger_than_the_clip():
    x, _, _ = toy(512, d=8, P=8, n_active=2, seed=0)
    runs = {}
    for clip in (None, 1e9, 0.5):
        sae, hist = train_sae(cfg_for("topk", d_in=8, d_sae=16, k=2, seed=0), x, n_tokens=10 * 64, batch_size=64,
                              grad_clip=clip, **QUIET)
        runs[clip] = params(sae)
    assert all(torch.equal(runs[None][n], runs[1e9][n]) for n in runs[None])
    assert not all(torch.equal(runs[None][n], runs[0.5][n]) for n in runs[None])


def test_float16_training_with_the_clipped_gradient_lands_where_float32_does():
    """In float16 Adam's default eps (6.25e-10) rounds to 0 and the square of a gradient clipped to norm 1
    underflows, so the step divided by 0 (the loss became inf at step 11). Training raises eps to float16's
    smallest normal number there; measured: FVU 0.5156 (float16) against 0.5158 (float32) on this data."""
    x = torch.randn(2048, 32, generator=torch.Generator().manual_seed(0))
    fvu = {}
    for dtype in ("float16", "float32"):
        cfg = SAEConfig(d_in=32, d_sae=128, activation="abstopk", k=4, dtype=dtype, device="cpu")
        sae, hist = train_sae(cfg, x, n_tokens=8192, batch_size=256, **QUIET)
        assert all(torch.isfinite(p).all() for p in sae.parameters())
        fvu[dtype] = hist["fvu"][-1]
    assert abs(fvu["float16"] - fvu["float32"]) < 0.02, fvu
