"""DDP training (abstopk_mini.distributed) on CPU: torchrun, 2 processes, gloo.

The result of two ranks, each on its half of every global batch, must equal one process on the
same global batches. The SAEs are float64 so that Adam's amplification of fp32 rounding noise
(a near-zero gradient divided by its own RMS) cannot hide a real difference.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import abstopk_mini as am

ROOT = Path(__file__).resolve().parents[1]
D_IN, D_SAE, B_GLOBAL, N_STEPS = 16, 96, 64, 6

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")


def _torchrun(args, tmp_path):
    env = os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "abstopk_mini.distributed", *args, "--json"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shards(tmp_path, seed=0):
    x, _, _ = am.toy.bidirectional_data(n_samples=2 * N_STEPS * B_GLOBAL // 2, d=D_IN, P=24, n_active=3, seed=seed)
    halves = x.reshape(2, -1, D_IN)
    files = []
    for r in range(2):
        files.append(str(tmp_path / f"shard{r}.pt"))
        torch.save(halves[r].clone(), files[-1])
    b = B_GLOBAL // 2
    global_batches = [torch.cat([halves[0, i : i + b], halves[1, i : i + b]]) for i in range(0, halves.shape[1], b)]
    return files, global_batches


@pytest.mark.parametrize("activation", ["abstopk", "batchabstopk"])
def test_ddp_equals_single_process_on_the_global_batch(tmp_path, activation):
    files, batches = _shards(tmp_path)
    cfg = am.SAEConfig(d_in=D_IN, d_sae=D_SAE, activation=activation, k=2, device="cpu", dtype="float64", seed=3)
    init = am.SAE(cfg)
    with torch.no_grad():
        init.b_dec.copy_(torch.cat(batches).mean(0))
    init.save(tmp_path / "init")
    summary = _torchrun(["--shards", *files, "--out", str(tmp_path / "ddp"), "--d-sae", str(D_SAE),
                         "--batch-size", str(B_GLOBAL), "--init", str(tmp_path / "init"), "--no-shuffle",
                         "--dead-tokens", "64", "--checkpoint-dir", str(tmp_path / "ckpt")], tmp_path)
    assert summary["world_size"] == 2 and summary["n_steps"] == N_STEPS and summary["n_tokens"] == N_STEPS * B_GLOBAL

    single, hist = am.train_sae(cfg, batches, sae=am.SAE.load(tmp_path / "init"), batch_size=B_GLOBAL,
                                n_tokens=N_STEPS * B_GLOBAL, dead_tokens=64, progress=False)
    assert max(hist["aux"]) > 0  # dead latents and AuxK took part
    ddp = am.SAE.load(tmp_path / "ddp")
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(ddp, name), getattr(single, name), rtol=1e-9, atol=1e-10, msg=name)
    torch.testing.assert_close(ddp.W_dec.norm(dim=1), torch.ones(D_SAE, dtype=torch.float64))
    if activation == "batchabstopk":  # the global k·B cut and the running threshold
        torch.testing.assert_close(ddp.threshold, single.threshold, rtol=1e-9, atol=1e-12)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint.safetensors"]  # one checkpoint, rank 0


def test_ddp_fresh_init_and_l0_controller(tmp_path):
    """No --init: the input scale and b_dec come from a sample gathered from both ranks; relu's
    L0 controller averages the batch L0 over ranks (train_sae_ddp raises if the replicas differ)."""
    files, _ = _shards(tmp_path, seed=1)
    summary = _torchrun(["--shards", *files, "--out", str(tmp_path / "ddp"), "--d-sae", "32", "--k", "3",
                         "--activation", "relu", "--batch-size", str(B_GLOBAL), "--n-tokens", str(4 * B_GLOBAL)], tmp_path)
    assert summary["n_steps"] == 4
    sae = am.SAE.load(tmp_path / "ddp")
    x = torch.cat([torch.load(f) for f in files]).double()
    expected_scale = (D_IN / x[: x.shape[0] // 2].pow(2).sum(-1).mean()).sqrt().item()
    assert sae.cfg.input_scale == pytest.approx(expected_scale, rel=0.2)


def test_bad_input(tmp_path):
    from abstopk_mini import distributed

    with pytest.raises(ValueError, match="not initialised"):
        distributed.Sync()
    files, _ = _shards(tmp_path)
    env = os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key in ("RANK", "WORLD_SIZE"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "abstopk_mini.distributed", "--shards", *files, "--out", "o", "--d-sae", "8"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "torchrun" in done.stderr

    class TwoRanks:  # checks that fail before any collective call
        world_size, rank, is_main = 2, 0, True

    cfg = am.SAEConfig(d_in=D_IN, d_sae=8, k=2, device="cpu")
    with pytest.raises(ValueError, match="batch_size=63.*divisible by the 2 ranks"):
        distributed.train_sae_ddp(cfg, torch.zeros(8, D_IN), sync=TwoRanks(), batch_size=63)
    batch_cfg = am.SAEConfig(d_in=D_IN, d_sae=8, activation="batchtopk", k=2, device="cpu")
    with pytest.raises(ValueError, match="needs the fast path"):
        distributed.train_sae_ddp(batch_cfg, torch.zeros(8, D_IN), sync=TwoRanks(), batch_size=64, fast=False)
    with pytest.raises(ValueError, match="n_tokens is required"):
        distributed.train_sae_ddp(cfg, [torch.zeros(8, D_IN)], sync=TwoRanks(), batch_size=64)


def test_the_launcher_flags_are_generated_from_its_job_and_every_train_config_field():
    """``python -m abstopk_mini.distributed``'s flags come from DistributedJob and TrainConfig
    (abstopk_mini.config_flags): every TrainConfig field is reachable, defaults agree, values parse."""
    import argparse
    import dataclasses

    from abstopk_mini.config_flags import add_config, build_config, options
    from abstopk_mini.distributed import DistributedJob

    reach = {o.dest for o in options(DistributedJob)}
    assert {"train." + f.name for f in dataclasses.fields(am.TrainConfig)} <= reach
    ap = argparse.ArgumentParser()
    add_config(ap, DistributedJob)
    job = build_config(DistributedJob, ap.parse_args(["--shards", "a.pt", "b.pt", "--out", "o", "--d-sae", "64"]))
    assert job.shards == ["a.pt", "b.pt"] and job.train == am.TrainConfig() and job.shuffle and not job.json
    job = build_config(DistributedJob, ap.parse_args(["--shards", "a.pt", "--out", "o", "--d-sae", "64", "--grad-clip", "0.5",
                                                      "--no-fast", "--no-shuffle", "--batch-size", "256", "--seed", "3"]))
    assert (job.train.grad_clip, job.train.fast, job.shuffle, job.train.batch_size, job.train.seed) == (0.5, False, False, 256, 3)
    with pytest.raises(ValueError, match="grad_clip.*--grad-clip"):
        build_config(DistributedJob, ap.parse_args(["--shards", "a.pt", "--out", "o", "--d-sae", "64", "--grad-clip", "-1"]))
