"""Regression tests for the cache/file defects of issue 12 (1, 2, 5, 6, 8, 10, 12), one or more per defect,
named after it. Offline, on the tiny random GPT-2 of conftest.py."""

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import abstopk_mini as am
from abstopk_mini.cli import main as cli_main
from abstopk_mini.runs.store import HarvestSpec, harvest_spec, train_on_harvest

TRAIN = {"n_tokens": 1024, "batch_size": 256}


def _cfg(**kw):
    return am.SAEConfig(**({"d_in": 32, "d_sae": 64, "activation": "abstopk", "k": 4, "device": "cpu"} | kw))


def _cli_train(acts_dir, runs, *extra, activation="abstopk", d_sae=64, k=4):
    return cli_main(["train", "--acts", str(acts_dir), "--activation", activation, "--d-sae", str(d_sae), "--k", str(k),
                     "--tokens", "1024", "--batch-size", "256", "--runs-dir", str(runs), "--json", *extra])


def _state(sae):
    return {key: value.clone() for key, value in sae.state_dict().items()}


# ----------------------------------------------------------------------------- 1. cache overwritten, served as a hit
def test_defect01_cache_rejects_overwritten_run_dir(acts, tmp_path, capsys):
    """The issue's repro: train into run dir S, `train --out S` with another SAE, rerun the first."""
    assert _cli_train(acts, tmp_path) == 0
    first = json.loads(capsys.readouterr().out)
    run = Path(first["dir"])
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    # another SAE may not be written over the run directory ...
    assert _cli_train(acts, tmp_path, "--out", str(run), activation="topk", d_sae=32, k=2) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(run) in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # ... and with --overwrite the store no longer serves it as the first SAE: it trains that one again
    assert _cli_train(acts, tmp_path, "--out", str(run), "--overwrite", activation="topk", d_sae=32, k=2) == 0
    capsys.readouterr()
    assert json.loads((run / "cfg.json").read_text())["activation"] == "topk"
    assert _cli_train(acts, tmp_path) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["dir"] == first["dir"]
    saved = json.loads((run / "cfg.json").read_text())
    assert (saved["activation"], saved["d_sae"], saved["k"]) == ("abstopk", 64, 4)
    assert am.SAE.load(run).cfg.activation == "abstopk"


def test_defect01_cache_rejects_edited_cfg_json(acts, tmp_path):
    sae, _, run = train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    raw = json.loads((run / "cfg.json").read_text())
    (run / "cfg.json").write_text(json.dumps(raw | {"k": 8}))  # a hand-edited k (the weights fit any k)
    with pytest.raises(ValueError) as err:
        train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    msg = str(err.value)
    assert "k: 8 in cfg.json, 4 asked" in msg and "retrain=True" in msg and "--retrain" in msg
    again, _, _ = train_on_harvest(acts, _cfg(), tmp_path, progress=False, retrain=True, **TRAIN)
    assert again.cfg.k == 4
    # same settings, same code path, same process: the retrained weights are the first ones
    assert all(torch.equal(a, b) for a, b in zip(_state(sae).values(), _state(again).values()))


def test_defect01_cache_rejects_replaced_weights(acts, tmp_path):
    import hashlib

    _, _, run = train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    weights = run / "sae_weights.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    state = load_file(str(weights))
    state["W_dec"][0, 0] += 1.0  # same shapes, same cfg.json: only the hash can tell
    save_file(state, str(weights))
    with pytest.raises(ValueError, match="sae_weights.safetensors has sha256 .* recorded"):
        train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    assert json.loads((run / "train.json").read_text())["weights_sha256"] == digest


def test_defect01_train_out_refuses_another_sae(acts, tmp_path, capsys):
    other = tmp_path / "mine"
    am.SAE(_cfg(d_sae=48, k=3)).save(other)
    weights = (other / "sae_weights.safetensors").read_bytes()
    assert _cli_train(acts, tmp_path, "--out", str(other)) == 2
    assert "another SAE" in capsys.readouterr().err
    assert (other / "sae_weights.safetensors").read_bytes() == weights
    assert _cli_train(acts, tmp_path, "--out", str(other), "--overwrite") == 0
    assert am.SAE.load(other).cfg.d_sae == 64


def test_defect01_sweep_frozen_reuse_is_verified(acts, tiny_gpt2_dir, tmp_path):
    from abstopk_mini.runs import sweep

    cfg = sweep.load_config({
        "name": "tiny", "results": str(tmp_path / "r.jsonl"), "model": str(tiny_gpt2_dir),
        "harvest": {"n_tokens": 3000, "context_length": 32, "chunk_offsets": [0], "sources": ["lee"]},
        "eval": {"heldout_tokens": 600, "splice_tokens": 48, "concepts": ["family"]}, "batch_size": 256,
        "stages": [{"name": "g", "layers": [1], "widths": [64], "ks": [4], "activations": ["abstopk"],
                    "train_tokens": [1024], "variants": ["bdec_mean_frozen"]}]})
    point = cfg.points()[0][1]
    ctx = sweep.LayerContext(1, acts, None, None, {}, None)
    _, _, run = sweep.train_point(cfg, point, ctx, 32, tmp_path, progress=False)
    raw = json.loads((run / "cfg.json").read_text())
    (run / "cfg.json").write_text(json.dumps(raw | {"k": 2}))
    with pytest.raises(ValueError, match="k: 2 in cfg.json, 4 asked"):
        sweep.train_point(cfg, point, ctx, 32, tmp_path, progress=False)


# ----------------------------------------------------------------------------- 2. empty source list
@pytest.mark.parametrize("sources", ["", ","])
def test_defect02_empty_sources_rejected_before_writing(tiny_gpt2_dir, tmp_path, capsys, sources):
    code = cli_main(["harvest", "--model", str(tiny_gpt2_dir), "--layer", "1", "--tokens", "500", "--context", "32",
                     f"--sources={sources}", "--offsets", "0", "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert code == 2
    assert "sources" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ValueError, match="sources"):
        HarvestSpec(sources=())


# ----------------------------------------------------------------------------- 5. corrupt cache cannot be repaired
def test_defect05_retrain_repairs_corrupt_cache(acts, tmp_path, capsys):
    assert _cli_train(acts, tmp_path) == 0
    run = Path(json.loads(capsys.readouterr().out)["dir"])
    good = _state(am.SAE.load(run))
    history = run / "history.json"
    history.write_text(history.read_text()[:40])  # truncated
    assert _cli_train(acts, tmp_path) == 2
    err = capsys.readouterr().err
    assert str(history) in err and "--retrain" in err
    assert _cli_train(acts, tmp_path, "--retrain") == 0
    capsys.readouterr()
    assert json.loads(history.read_text())["n_tokens"] == 1024
    assert all(torch.equal(a, b) for a, b in zip(good.values(), _state(am.SAE.load(run)).values()))
    assert _cli_train(acts, tmp_path) == 0  # served from the cache again


@pytest.mark.parametrize("name, damage", [("history.json", b""), ("train.json", b'{"acts_dir": '),
                                          ("cfg.json", b"[1, 2]"), ("history.json", b"[]")])
def test_defect05_damaged_json_names_the_file_and_the_fix(acts, tmp_path, name, damage):
    _, _, run = train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    (run / name).write_bytes(damage)
    with pytest.raises(ValueError) as err:
        train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    assert str(run / name) in str(err.value) and "retrain=True" in str(err.value)


# ----------------------------------------------------------------------------- 6. overwrite does not wait for readers
def test_defect06_harvest_overwrite_waits_for_training(spec, acts, tiny_gpt2, tmp_path, monkeypatch):
    from abstopk_mini.lm.shards import ShardDataset

    reading, release = threading.Event(), threading.Event()
    real_read = ShardDataset.read_shard

    def paused_read(self, i, key="activations"):  # training stops at its first read, inside train_on_harvest
        reading.set()
        release.wait(60)
        return real_read(self, i, key)

    monkeypatch.setattr(ShardDataset, "read_shard", paused_read)
    results = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except BaseException as err:  # reported by the main thread
            results[name] = err
        results[name + "_t"] = time.monotonic()

    trainer = threading.Thread(target=run, args=("train", lambda: train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)))
    trainer.start()
    assert reading.wait(60)
    overwriter = threading.Thread(target=run, args=("harvest", lambda: harvest_spec(spec, tmp_path, loaded=tiny_gpt2,
                                                                                       progress=False, overwrite=True)))
    overwriter.start()
    overwriter.join(3.0)  # the tiny harvest itself takes well under a second
    waited = overwriter.is_alive()
    released_at = time.monotonic()
    release.set()
    trainer.join(60)
    overwriter.join(60)
    assert waited, "harvest --overwrite ran while a train was reading the harvest"
    assert not isinstance(results["train"], BaseException), results["train"]
    assert not isinstance(results["harvest"], BaseException), results["harvest"]
    assert results["harvest_t"] > released_at and results["harvest_t"] >= results["train_t"]
    assert am.lm.shards.read_manifest(acts)["complete"]


# ----------------------------------------------------------------------------- 8. SAE.load and shards trusted too much
def _saved(tmp_path, activation="topk", **kw):
    path = tmp_path / "sae"
    am.SAE(_cfg(activation=activation, **kw)).save(path)
    return path


def _edit_cfg(path, **changes):
    raw = json.loads((path / "cfg.json").read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    (path / "cfg.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("activation", ["topk", "relu", "abstopk", "jumprelu"])
def test_defect08_load_infers_activation_from_architecture(tmp_path, activation):
    path = _saved(tmp_path, activation)
    _edit_cfg(path, activation=None)
    assert am.SAE.load(path).cfg.activation == activation
    _edit_cfg(path, architecture=None)  # nothing left to tell: no default
    with pytest.raises(ValueError, match="names neither an activation nor an architecture"):
        am.SAE.load(path)


def test_defect08_load_rejects_contradicting_activation(tmp_path):
    path = _saved(tmp_path, "topk")
    _edit_cfg(path, activation="abstopk")  # architecture still says topk
    with pytest.raises(ValueError, match="activation='abstopk' but architecture='topk'"):
        am.SAE.load(path)


@pytest.mark.parametrize("damage", ["nan", "inf", "int32"])
def test_defect08_load_rejects_nonfinite_and_integer_weights(tmp_path, damage):
    path = _saved(tmp_path)
    state = load_file(str(path / "sae_weights.safetensors"))
    if damage == "int32":
        state["b_enc"] = state["b_enc"].to(torch.int32)
    else:
        state["b_enc"][3] = float(damage)
    save_file(state, str(path / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="'b_enc'"):
        am.SAE.load(path)


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"abstopk"', "3"])
def test_defect08_load_rejects_cfg_json_that_is_not_an_object(tmp_path, content):
    path = _saved(tmp_path)
    (path / "cfg.json").write_text(content)
    with pytest.raises(ValueError, match="cfg.json holds a JSON"):
        am.SAE.load(path)


def test_defect08_swapped_shard_is_caught_before_training(acts, tmp_path):
    shard = acts / "shard_00000.safetensors"
    tensors = load_file(str(shard))
    tensors["activations"] = tensors["activations"].flip(0).contiguous()  # same shape and tokens, other rows
    save_file(tensors, str(shard))
    with pytest.raises(ValueError, match="shard_00000.safetensors: sha256 differs"):
        train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)


def test_defect08_edited_shard_n_tokens_is_caught(acts, tmp_path):
    manifest = json.loads((acts / "manifest.json").read_text())
    manifest["shards"][0]["n_tokens"] -= 500
    manifest["tokens_written"] -= 500  # a careful edit: the totals agree, the shard does not
    (acts / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="shard_00000.safetensors holds activations \\(3000, 32\\)"):
        train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)


def test_defect08_shard_check_is_remembered(acts, tmp_path):
    from abstopk_mini.lm.shards import verify_harvest

    assert verify_harvest(acts) is True  # hashed now
    assert verify_harvest(acts) is False  # remembered
    train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)  # trains on the remembered check
    shard = acts / "shard_00000.safetensors"
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: checked again
    assert verify_harvest(acts) is True and verify_harvest(acts) is False


# ----------------------------------------------------------------------------- 10. leftovers
@pytest.mark.parametrize("flag", [["--context", "1"], ["--offsets=-5"], ["--offsets="]])
def test_defect10_bad_context_and_offsets_rejected_before_any_directory(tiny_gpt2_dir, tmp_path, capsys, flag):
    args = ["harvest", "--model", str(tiny_gpt2_dir), "--layer", "1", "--tokens", "500", "--context", "32",
            "--sources", "lee", "--offsets", "0", "--runs-dir", str(tmp_path / "runs"), "--json"]
    assert cli_main(args + flag) == 2
    assert ("context" if "--context" in flag else "offsets") in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kw", [{"context_length": 1}, {"chunk_offsets": (-5,)}, {"chunk_offsets": ()}])
def test_defect10_harvest_api_rejects_bad_settings_before_writing(tiny_gpt2, tmp_path, kw):
    from conftest import TINY_SENTENCES

    with pytest.raises(ValueError):
        am.lm.activations.harvest(tiny_gpt2, TINY_SENTENCES, 1, 100, tmp_path / "h", **kw)
    assert not (tmp_path / "h").exists()


def test_defect10_failed_attempts_leave_no_lock_files(spec, acts, tmp_path):
    bad = HarvestSpec(**{**spec.__dict__, "model": str(tmp_path / "no_model_here")})
    with pytest.raises(FileNotFoundError, match="no_model_here"):  # fails inside the harvest's lock
        harvest_spec(bad, tmp_path, progress=False)
    with pytest.raises(ValueError, match="d_in"):
        train_on_harvest(acts, _cfg(d_in=640), tmp_path, progress=False, **TRAIN)
    train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    assert sorted(p.name for p in tmp_path.rglob("*.lock")) == []


def test_defect10_lock_file_removal_keeps_mutual_exclusion(tmp_path):
    from abstopk_mini.io import flock

    lock = tmp_path / "x.lock"
    inside, overlaps, entries = [0], [], []

    def worker(exclusive_every):
        for i in range(30):
            exclusive = i % exclusive_every == 0
            with flock(lock, exclusive=exclusive):
                if exclusive:
                    inside[0] += 1
                    if inside[0] != 1:
                        overlaps.append(inside[0])
                    time.sleep(0.001)
                    inside[0] -= 1
                else:
                    if inside[0] != 0:
                        overlaps.append(inside[0])
                entries.append(exclusive)

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(entries) == 120 and overlaps == []
    assert not lock.exists()  # the last holder removed it


def test_defect10_stale_checkpoint_tmp_removed_on_resume(tmp_path):
    """A SIGKILL in the middle of a checkpoint write leaves `.checkpoint.safetensors.*.tmp`; the next run removes it."""
    ckpt = tmp_path / "ckpt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        import safetensors.torch
        import abstopk_mini as am
        real_save, calls = safetensors.torch.save_file, []
        def dying_save(obj, path, *a, **k):
            calls.append(path)
            if len(calls) == 2:  # the second checkpoint: half written, then killed
                with open(path, "wb") as f:
                    f.write(b"x" * 1000)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, path, *a, **k)
        safetensors.torch.save_file = dying_save
        x = torch.randn(512, 16, generator=torch.Generator().manual_seed(0))
        cfg = am.SAEConfig(d_in=16, d_sae=32, activation="topk", k=4, device="cpu")
        am.train_sae(cfg, x, n_tokens=2048, batch_size=64, checkpoint_dir={str(ckpt)!r}, checkpoint_every=4,
                     progress=False)
    """)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    orphans = list(ckpt.glob(".checkpoint.safetensors.*.tmp"))
    assert len(orphans) == 1 and (ckpt / "checkpoint.safetensors").is_file()
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(0))
    cfg = am.SAEConfig(d_in=16, d_sae=32, activation="topk", k=4, device="cpu")
    _, history = am.train_sae(cfg, x, n_tokens=2048, batch_size=64, checkpoint_dir=str(ckpt), checkpoint_every=4,
                              resume=ckpt, progress=False)
    assert history["n_steps"] == 32
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint.safetensors"]


# ----------------------------------------------------------------------------- 12. files written 0600
@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_defect12_written_files_get_umask_permissions(spec, tiny_gpt2, tmp_path, umask_027):
    expected = umask_027
    sae_path = am.SAE(_cfg()).save(tmp_path / "sae")
    acts = harvest_spec(spec, tmp_path, loaded=tiny_gpt2, progress=False)
    _, _, run = train_on_harvest(acts, _cfg(), tmp_path, progress=False, **TRAIN)
    x = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    am.train_sae(_cfg(), x, n_tokens=512, batch_size=64, checkpoint_dir=str(tmp_path / "ckpt"), progress=False)
    files = [sae_path / "cfg.json", sae_path / "sae_weights.safetensors", acts / "manifest.json",
             acts / "shard_00000.safetensors", run / "sae_weights.safetensors", run / "train.json",
             run / "history.json", tmp_path / "ckpt" / "checkpoint.safetensors"]
    assert {str(f.relative_to(tmp_path)): oct(_mode(f)) for f in files} == \
        {str(f.relative_to(tmp_path)): oct(expected) for f in files}


def test_defect12_model_cache_files_get_umask_permissions(tmp_path, umask_027):
    def build(tmp):
        save_file({"w": torch.ones(4, 3)}, str(tmp / "model.safetensors"))  # safetensors itself writes 0600
        (tmp / "config.json").write_text("{}")

    target = am.lm.cache.ensure_cache(tmp_path / "toy", build, source="toy:1")
    assert {p.name: oct(_mode(p)) for p in target.iterdir()} == \
        {p.name: oct(umask_027) for p in target.iterdir()}
    assert am.lm.cache.verify_cache(target, "toy:1") is None
