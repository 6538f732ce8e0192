"""One training path: the seven activations train to the same weights and histories as recorded.

``tests/data/one_training_path.safetensors`` holds, for every activation, both paths
(``fast=True``: the sparse kernels where the activation has them; ``fast=False``: the dense
reference) and two dtypes, the final ``state_dict`` and the numbers of the history of a short
seeded run (20 steps, AuxK active for the top-k family, the L0 controller active for the
penalised ones). It was recorded by the training code before the loop stopped knowing which
kernel runs (``python tests/test_one_training_path.py --record``), so this test says that
refactoring the loop changed no number. The penalty families' entries were re-recorded when their
sparsity recipe changed on purpose (:mod:`abstopk_mini.sparsity`: θ and ReLU's b_enc start at the
target L0, the controller moves log λ by the log L0 ratio, ε = 0.2); every tensor of the top-k
family's entries was bit-identical in the re-recording, which added only the history's three new
numbers (``target_l0``, ``l0_off_target``, ``coef_saturated_steps``). The JumpReLUs' entries were
re-recorded once more for their two-sided L0 term (:func:`abstopk_mini.losses.two_sided_l0`); every
other entry, ReLU's included, was bit-identical. Adding the history's ``l0_aim`` (the integral term,
off by default) changed no recorded tensor. Every entry was re-recorded when the gradient became
clipped by default (``TrainConfig.grad_clip = 1``), after checking that with ``grad_clip=None`` every
recorded tensor was bit-identical (the history's new ``grad_norm`` aside). Every entry was re-recorded when
``SAE.remove_parallel_grad`` became an in-place update with a kept work tensor
(:func:`abstopk_mini.decoder_norm.remove_parallel`, 2.5x faster at 16,384 × 640), after checking that the
old recording differed by rounding only: at most 2.8e-16 (float64) and 1.4e-7 (float32), relative to
1 + |value|.

Exact where it can be: on the machine and kernel set that recorded the file (same torch, same
CPU capability, same MKL code path; the file's metadata) every tensor and every history number
must be bit-identical. Elsewhere (another CPU; CI's second run uses ``ATEN_CPU_CAPABILITY=default``
and ``MKL_CBWR=COMPATIBLE``, which change float results bit-wise) the float64 runs are compared to
1e-7 (relative, plus absolute) and the float32 runs are skipped. Measured under CI's settings on
the recording machine, from the same input bits (:func:`toy_data`): float64 runs differ by at most
4e-10 (batchtopk; ~3e-16 for the others), float32 runs by up to 2.5e-2 (batchtopk again: one
entry selected differently moves the run, and Adam moves a weight whose gradient is fp32 rounding
noise by up to ~lr = 1e-2 either way; see ``tests/test_fast.py``), too much for a useful bound.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import abstopk_mini as am

GOLDEN = Path(__file__).parent / "data" / "one_training_path.safetensors"
ACTIVATIONS = ("relu", "jumprelu", "absjumprelu", "topk", "batchtopk", "abstopk", "batchabstopk")
PATHS = ("fast", "dense")
DTYPES = ("float64", "float32")
CASES = [(a, p, d) for a in ACTIVATIONS for p in PATHS for d in DTYPES]
STEPS, BATCH = 20, 64
#: history entries compared (wall_time_s is a clock reading)
SKIP = {"wall_time_s"}
TOL = 1e-7  # float64, off the recording machine only (module docstring)

pytestmark = pytest.mark.usefixtures("one_thread")


def fingerprint() -> str:
    """What decides the bits of a float result here: torch, its CPU kernels, MKL's code path, the CPU."""
    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    except OSError:
        pass
    return "|".join([torch.__version__, torch.backends.cpu.get_cpu_capability(), os.environ.get("MKL_CBWR", ""),
                     os.environ.get("ATEN_CPU_CAPABILITY", ""), platform.machine(), cpu])


def toy_data() -> torch.Tensor:
    """640 rows, each a signed sum of 3 of 16 random directions in 12 dimensions, in float64. Made with
    numpy's seeded generator and single elementwise operations in a fixed order (no matmul, no
    reduction), so the bits do not depend on the CPU's kernels.  shape: [640, 12]"""
    rng = np.random.default_rng(0)
    D = rng.standard_normal((16, 12))
    idx = np.argsort(rng.random((640, 16)), axis=1)[:, :3]
    amp = rng.uniform(0.5, 1.5, (640, 3)) * rng.choice([-1.0, 1.0], (640, 3))
    terms = amp[:, :, None] * D[idx]  # [640, 3, 12]
    return torch.from_numpy(terms[:, 0] + terms[:, 1] + terms[:, 2])


def train_case(activation: str, path: str, dtype: str) -> dict[str, torch.Tensor]:
    """One seeded run: the final state_dict and the history's numbers, as tensors named ``param/…`` and ``history/…``."""
    torch.set_num_threads(1)
    x = toy_data()
    # k=3 is also the penalised activations' target L0; threshold_init=1 lets the JumpReLUs' latents die;
    # with 96 latents, dead_tokens=64 and aux_k=2, AuxK runs both its dense-block and its sparse branch
    cfg = am.SAEConfig(d_in=12, d_sae=96, activation=activation, k=3, device="cpu", dtype=dtype, seed=1,
                       threshold_init=1.0)
    sae, hist = am.train_sae(cfg, x.to(getattr(torch, dtype)), n_tokens=STEPS * BATCH, batch_size=BATCH,
                             dead_tokens=BATCH, aux_k=2, log_every=1, progress=False, seed=0, lr=1e-2,
                             target_rate=0.3, fast=path == "fast")
    out = {f"param/{name}": t.detach().clone().contiguous() for name, t in sae.state_dict().items()}
    for key, value in hist.items():
        if key in SKIP:
            continue
        values = value if isinstance(value, list) else [value]
        out[f"history/{key}"] = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
    return out


def record() -> None:
    from safetensors.torch import save_file

    tensors = {}
    for case in CASES:
        for name, t in train_case(*case).items():
            tensors["/".join(case) + "/" + name] = t
    GOLDEN.parent.mkdir(exist_ok=True)
    save_file(tensors, str(GOLDEN), metadata={"fingerprint": fingerprint()})
    print(f"wrote {GOLDEN} ({len(tensors)} tensors) on {fingerprint()}")


@pytest.fixture(scope="module")
def golden():
    from safetensors import safe_open

    with safe_open(str(GOLDEN), "pt") as f:
        return f.metadata()["fingerprint"], {key: f.get_tensor(key) for key in f.keys()}


@pytest.mark.parametrize("activation,path,dtype", CASES)
def test_training_matches_the_recorded_run(golden, activation, path, dtype):
    recorded_on, tensors = golden
    prefix = f"{activation}/{path}/{dtype}/"
    want = {key[len(prefix):]: t for key, t in tensors.items() if key.startswith(prefix)}
    got = train_case(activation, path, dtype)
    assert got.keys() == want.keys()
    exact = recorded_on == fingerprint()
    if not exact and dtype != "float64":
        pytest.skip(f"float32 runs are compared bit for bit on the recording machine only ({recorded_on})")
    for name in want:
        if exact:
            same = torch.equal(got[name].nan_to_num(nan=-7.0), want[name].nan_to_num(nan=-7.0))  # None is recorded as NaN
            assert same and torch.equal(got[name].isnan(), want[name].isnan()), f"{prefix}{name} is not bit-identical to the recorded run"
        else:
            torch.testing.assert_close(got[name], want[name], rtol=TOL, atol=TOL, equal_nan=True,
                                       msg=lambda m: f"{prefix}{name}: {m}")


def test_the_recorded_runs_exercise_auxk_and_the_controller(golden):
    """The cases are worth comparing: AuxK fired for the top-k family, the controller moved ReLU's
    coefficient (the JumpReLUs' two-sided term holds theirs fixed), and latents died (of all but ReLU)."""
    _, tensors = golden
    for activation, path, dtype in CASES:
        hist = lambda key: tensors[f"{activation}/{path}/{dtype}/history/{key}"]  # noqa: E731
        if am.nonlinearities.spec(activation).aux:
            assert hist("aux").max() > 0 and hist("sparsity").abs().max() == 0
        else:
            steered = not am.nonlinearities.spec(activation).module.steers_itself
            assert hist("sparsity").max() > 0 and (len(set(hist("coef").tolist())) > 1) == steered
        if am.nonlinearities.spec(activation).param is not None:  # ReLU's latents all stay alive here
            assert hist("dead_frac").max() > 0


# --------------------------------------------------------------------------- the one output type
def _sae(activation, **kw):
    return am.SAE(am.SAEConfig(d_in=12, d_sae=48, activation=activation, k=3, device="cpu", dtype="float64", **kw))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_train_gives_one_type_on_both_paths(activation):
    """Dense and sparse outputs answer alike: z, fired latents, mean L0, the penalty, AuxK."""
    from abstopk_mini.forward import TrainOutput

    sae, x = _sae(activation), toy_data()[:32]
    dense, sparse = sae.forward_train(x), sae.forward_train(x, fast=True)
    assert type(dense) is type(sparse) is TrainOutput
    assert type(sparse.code).__name__ == ("SparseCode" if am.nonlinearities.spec(activation).k_based else "DenseCode")
    torch.testing.assert_close(sparse.z, dense.z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse.x_hat, dense.x_hat, rtol=1e-12, atol=1e-12)
    assert torch.equal(sparse.fired(), dense.fired()) and sparse.mean_l0() == dense.mean_l0()
    term = sae.act.penalty_term(dense)
    assert (term is None) == am.nonlinearities.spec(activation).aux  # the activation owns its penalty
    if term is not None:
        assert term.ndim == 0 and term.requires_grad
    dead = torch.arange(48) % 3 == 0
    torch.testing.assert_close(sparse.auxk_loss(sae, dead, 2), dense.auxk_loss(sae, dead, 2), rtol=1e-12, atol=1e-12)


def test_train_config_fast_picks_the_kernel_inside_the_sae(monkeypatch):
    """TrainConfig.fast reaches SAE.forward_train: the sparse kernels run for the top-k family when it
    is true, never when it is false, and never for an SAE that opts out (sae.fast = False)."""
    from abstopk_mini.kernels import fast as fast_mod

    calls = []
    real = fast_mod.forward_train
    monkeypatch.setattr(fast_mod, "forward_train", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    kw = dict(n_tokens=3 * BATCH, batch_size=BATCH, log_every=1, progress=False)
    cfg = am.SAEConfig(d_in=12, d_sae=48, activation="abstopk", k=3, device="cpu", dtype="float64")
    am.train_sae(cfg, toy_data(), fast=False, **kw)
    assert calls == []
    am.train_sae(cfg, toy_data(), fast=True, **kw)
    assert len(calls) == 3
    opted_out = _sae("abstopk")
    opted_out.fast = False
    am.train_sae(cfg, toy_data(), sae=opted_out, fast=True, **kw)
    assert len(calls) == 3


def test_old_output_names_still_build_the_one_type():
    from abstopk_mini.forward import DenseCode, TrainOutput
    from abstopk_mini.kernels.fast import FastOutput
    from abstopk_mini.sae import SAEOutput

    assert SAEOutput is FastOutput is TrainOutput
    z = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    out = SAEOutput(torch.zeros(2, 3), z, z, torch.zeros(2, 3))  # the old (x_in, u, z, x_hat) call
    assert isinstance(out.code, DenseCode) and out.z is z and out.mean_l0() == 1.0
    assert out.fired().tolist() == [True, True]


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_one_training_path.py --record  (rewrites the golden file)")
    record()
