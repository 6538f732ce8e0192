"""Regression tests for issue 28, "trust nothing read from disk": defects 1, 2, 5, 7 and the parts of
10, 13 and 14 about files (checkpoints, the SAE cache, SAE / SAELens / pretrained files, temp files
and lock files). Offline, on tiny tensors and the tiny random GPT-2 of conftest.py."""

import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import abstopk_mini as am
from abstopk_mini import interop, pretrained
from abstopk_mini.checkpoint import CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE
from abstopk_mini.io import flock
from abstopk_mini.cli import main as cli_main
from abstopk_mini.runs.store import train_on_harvest
from abstopk_mini.sae import CONFIG_FILE, SAE, WEIGHTS_FILE, SAEConfig

TRAIN = {"n_tokens": 1024, "batch_size": 256}
QUIET = {"progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    return SAEConfig(**({"d_in": 8, "d_sae": 16, "activation": "abstopk", "k": 2, "device": "cpu"} | kw))


def _x(n=400, d=8, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _cli_train(acts_dir, runs, *extra, activation="topk", d_sae=48, k=3):
    return cli_main(["train", "--acts", str(acts_dir), "--activation", activation, "--d-sae", str(d_sae), "--k", str(k),
                     "--tokens", "1024", "--batch-size", "256", "--runs-dir", str(runs), "--json", *extra])


# ----------------------------------------------------------------------------- 1. checkpoints are unpickled
class _Evil:
    """Unpickling this runs ``os.mkdir(marker)``: what a planted checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("name", [LEGACY_CHECKPOINT_FILE, CHECKPOINT_FILE])
def test_defect28_01_checkpoint_is_not_unpickled(tmp_path, name):
    """A planted checkpoint whose unpickling runs code (as torch.load(weights_only=False) did)."""
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    torch.save({"cfg": _Evil(marker), "step": 0}, ckpt / name)  # the format of the old checkpoint.pt
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"cfg": _Evil(marker)}, f)
    for resume in (ckpt, ckpt / name, tmp_path / "plain.pkl"):
        with pytest.raises(ValueError) as err:
            am.train_sae(_cfg(), _x(), n_tokens=256, batch_size=32, resume=resume, **QUIET)
        assert not marker.exists(), "the checkpoint's code ran"
        msg = str(err.value)
        assert "never unpickled" in msg and "retrain=True" in msg and "--retrain" in msg, msg


def test_defect28_01_no_weights_only_false_in_the_package():
    root = Path(am.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == []


def test_defect28_01_checkpoint_of_another_config_is_refused(tmp_path):
    ckpt = tmp_path / "relu16"
    am.train_sae(_cfg(activation="relu", k=None), _x(), n_tokens=256, batch_size=32, checkpoint_dir=str(ckpt), **QUIET)
    with pytest.raises(ValueError) as err:
        am.train_sae(_cfg(activation="topk", d_sae=48, k=3), _x(), n_tokens=256, batch_size=32, resume=ckpt, **QUIET)
    msg = str(err.value)
    for field in ("activation: 'relu' in the checkpoint, 'topk' asked", "d_sae: 16 in the checkpoint, 48 asked",
                  "k: None in the checkpoint, 3 asked", "retrain=True", "--retrain"):
        assert field in msg, (field, msg)


def test_defect28_01_checkpoint_planted_in_a_run_dir_is_refused_by_train(acts, tmp_path, capsys):
    """The issue's repro: a valid relu / d_sae 16 checkpoint planted into a topk/48/k3 run directory."""
    assert _cli_train(acts, tmp_path) == 0
    run = Path(json.loads(capsys.readouterr().out)["dir"])
    (run / "history.json").unlink()  # the run is incomplete again: the next train resumes from its checkpoint
    d_in = json.loads((run / CONFIG_FILE).read_text())["d_in"]
    am.train_sae(_cfg(d_in=d_in, activation="relu", k=None), _x(d=d_in), n_tokens=512, batch_size=256,
                 checkpoint_dir=str(run / "checkpoint"), **QUIET)
    assert _cli_train(acts, tmp_path) == 2
    err = capsys.readouterr().err
    assert "activation: 'relu' in the checkpoint, 'topk' asked" in err and "--retrain" in err
    assert _cli_train(acts, tmp_path, "--retrain") == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["activation"], out["d_sae"]) == ("topk", 48)
    assert SAE.load(run).cfg.activation == "topk" and SAE.load(run).cfg.d_sae == 48


def _rewrite_checkpoint(path, edit_meta=None, edit_tensors=None):
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    state = json.loads(meta["abstopk_mini_checkpoint"])
    if edit_meta:
        edit_meta(state)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(path), metadata={"abstopk_mini_checkpoint": json.dumps(state)})


@pytest.mark.parametrize("edit_meta,edit_tensors,expected", [
    (lambda m: m.update(step=99), None, "step=99 of n_steps=8"),
    (lambda m: m.update(tokens=10**6), None, "more than the batches hold"),
    (lambda m: m.update(coef=float("inf")), None, "coef=inf"),
    (lambda m: m["cfg"].update(d_sae=32), None, "d_sae: 32 in the checkpoint, 16 asked"),
    (lambda m: m["history"].update(loss="x"), None, "history does not hold the lists"),
    (lambda m: m["history"]["step"].append(10**6), None, "history does not hold the lists"),
    (lambda m: m["param_groups"][0].update(betas=[0.5, 0.5]), None, "the optimiser's betas"),
    (lambda m: m.update(opt_scalars={"x": 1}), None, "opt_scalars is not"),
    (None, lambda t: t["sae/W_enc"].__setitem__((0, 0), float("nan")), "non-finite"),
    (None, lambda t: t.update({"sae/W_dec": torch.zeros(16, 9)}), "W_dec has shape (16, 9)"),
    (None, lambda t: t.update({"opt/0/exp_avg": torch.zeros(3)}), "opt/0/exp_avg has shape (3,)"),
    (None, lambda t: t.update({"since_fired": torch.zeros(16)}), "since_fired has dtype F32"),
])
def test_defect28_01_every_checkpoint_field_is_checked(tmp_path, edit_meta, edit_tensors, expected):
    ckpt = tmp_path / "ck"
    am.train_sae(_cfg(), _x(), n_tokens=256, batch_size=32, checkpoint_dir=str(ckpt), **QUIET)
    _rewrite_checkpoint(ckpt / CHECKPOINT_FILE, edit_meta, edit_tensors)
    with pytest.raises(ValueError) as err:
        am.train_sae(_cfg(), _x(), n_tokens=256, batch_size=32, resume=ckpt, **QUIET)
    assert expected in str(err.value) and "--retrain" in str(err.value), str(err.value)


def test_defect28_01_resume_with_other_training_settings_is_refused(tmp_path):
    ckpt = tmp_path / "ck"
    am.train_sae(_cfg(), _x(), n_tokens=512, batch_size=32, checkpoint_dir=str(ckpt), checkpoint_every=4, **QUIET)
    for changed, expected in (({"batch_size": 64, "n_tokens": 512}, "batch_size: 32 in the checkpoint, 64 asked"),
                              ({"batch_size": 32, "n_tokens": 1024}, "n_tokens: 512 in the checkpoint, 1024 asked"),
                              ({"batch_size": 32, "n_tokens": 512, "lr": 1e-2}, "lr: None in the checkpoint, 0.01 asked")):
        with pytest.raises(ValueError, match="another run") as err:
            am.train_sae(_cfg(), _x(), resume=ckpt, **changed, **QUIET)
        assert expected in str(err.value), str(err.value)


def test_defect28_13_corrupt_checkpoint_names_api_argument_and_cli_flag(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(ValueError) as err:
        am.train_sae(_cfg(), _x(), n_tokens=256, batch_size=32, resume=tmp_path, **QUIET)
    msg = str(err.value)
    assert "resume=" in msg and "retrain=True" in msg and "--retrain" in msg, msg


# ----------------------------------------------------------------------------- 2. edited input_scale served
def test_defect28_02_cache_refuses_an_edited_input_scale(acts, tmp_path):
    cfg = _cfg(d_in=32, d_sae=64, k=4)
    _, _, run = train_on_harvest(acts, cfg, tmp_path, progress=False, **TRAIN)
    raw = json.loads((run / CONFIG_FILE).read_text())
    (run / CONFIG_FILE).write_text(json.dumps(raw | {"input_scale": 0.01}, indent=2))
    with pytest.raises(ValueError) as err:
        train_on_harvest(acts, cfg, tmp_path, progress=False, **TRAIN)
    msg = str(err.value)
    assert "cfg.json has sha256" in msg and "retrain=True" in msg and "--retrain" in msg, msg
    sae, _, _ = train_on_harvest(acts, cfg, tmp_path, progress=False, retrain=True, **TRAIN)
    assert sae.cfg.input_scale == raw["input_scale"]  # retrained: the scale training sets again


def test_defect28_02_run_saved_before_cfg_hash_is_checked_by_its_history(acts, tmp_path):
    cfg = _cfg(d_in=32, d_sae=64, k=4)
    _, _, run = train_on_harvest(acts, cfg, tmp_path, progress=False, **TRAIN)
    record = json.loads((run / "train.json").read_text())
    del record["cfg_sha256"]  # as written before cfg.json was hashed
    (run / "train.json").write_text(json.dumps(record))
    raw = json.loads((run / CONFIG_FILE).read_text())
    (run / CONFIG_FILE).write_text(json.dumps(raw | {"input_scale": 0.01}, indent=2))
    with pytest.raises(ValueError, match=r"input_scale: 0\.01 in cfg\.json, training set"):
        train_on_harvest(acts, cfg, tmp_path, progress=False, **TRAIN)
    (run / CONFIG_FILE).write_text(json.dumps(raw, indent=2))  # the untouched file is served, its hash recorded
    sae, _, _ = train_on_harvest(acts, cfg, tmp_path, progress=False, **TRAIN)
    assert sae.cfg.input_scale == raw["input_scale"]
    assert "cfg_sha256" in json.loads((run / "train.json").read_text())


@pytest.mark.parametrize("scale", [1e300, 0, -1.0, float("nan"), float("inf"), 1e-300, "2.0", True])
def test_defect28_02_sae_load_refuses_an_absurd_input_scale(tmp_path, scale):
    path = SAE(_cfg()).save(tmp_path / "sae")
    raw = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps(raw | {"input_scale": scale}))
    with pytest.raises(ValueError, match="input_scale"):
        SAE.load(path)


def test_defect28_02_sae_load_keeps_a_usable_input_scale(tmp_path):
    sae = SAE(_cfg(input_scale=3.5e6))
    assert SAE.load(sae.save(tmp_path / "sae")).cfg.input_scale == 3.5e6


# ----------------------------------------------------------------------------- 5. final_fvu of a partial batch
def test_defect28_05_final_fvu_is_not_one_partial_batch():
    """batch 2,999 on 3,000 rows: the last batch holds one row (no variance: FVU ~1e13 before)."""
    x = _x(3000, d=8, seed=1)
    sae, hist = am.train_sae(_cfg(), x, n_tokens=3000, batch_size=2999, init_sample=4000, **QUIET)
    assert hist["final_sample"] == 3000
    with torch.no_grad():
        expected = am.metrics.fvu(x, sae(x))  # the same rows, another order: a float64 sum either way
    assert math.isclose(hist["final_fvu"], expected, rel_tol=1e-6), (hist["final_fvu"], expected)
    assert hist["final_fvu"] < 2 and hist["fvu"][-1] > 1e6  # the last batch's is still logged, as that


def test_defect28_05_cli_train_reports_the_final_fvu_of_the_history(acts, tmp_path, capsys):
    assert cli_main(["train", "--acts", str(acts), "--activation", "abstopk", "--d-sae", "64", "--k", "4",
                     "--tokens", "3000", "--batch-size", "2999", "--runs-dir", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    hist = am.runs.store.load_history(out["dir"])
    assert out["final_fvu"] == hist["final_fvu"] and out["final_fvu"] < 2, out
    assert out["final_l0"] == hist["final_l0"] <= 4


# ----------------------------------------------------------------------------- 7. from_saelens trusts its tensors
@pytest.fixture
def saelens_dir(tmp_path):
    return interop.to_saelens(SAE(_cfg(activation="topk")), tmp_path / "saelens")


@pytest.mark.parametrize("damage,expected", [
    (lambda t: t["W_enc"].__setitem__((0, 0), float("nan")), "non-finite"),
    (lambda t: t["b_dec"].__setitem__(0, float("inf")), "non-finite"),
    (lambda t: t.update(W_dec=t["W_dec"].to(torch.int32)), "not a floating dtype"),
])
def test_defect28_07_from_saelens_refuses_nonfinite_and_integer_weights(saelens_dir, damage, expected):
    tensors = load_file(str(saelens_dir / WEIGHTS_FILE))
    damage(tensors)
    save_file(tensors, str(saelens_dir / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=expected):
        interop.from_saelens(saelens_dir)


def _edit_cfg(path, edit):
    cfg = json.loads((path / CONFIG_FILE).read_text())
    edit(cfg)
    (path / CONFIG_FILE).write_text(json.dumps(cfg))


@pytest.mark.parametrize("breakage,error", [
    (lambda p: _edit_cfg(p, lambda c: c.pop("d_in")), ValueError),
    (lambda p: _edit_cfg(p, lambda c: c.update(d_sae="16")), ValueError),
    (lambda p: _edit_cfg(p, lambda c: c.update(k=[2])), ValueError),
    (lambda p: _edit_cfg(p, lambda c: c.update(k=99)), ValueError),
    (lambda p: _edit_cfg(p, lambda c: c.update(metadata="oops")), ValueError),
    (lambda p: _edit_cfg(p, lambda c: c.update(architecture=["topk"])), ValueError),
    (lambda p: _edit_cfg(p, lambda c: c.update(dtype=["float32"])), ValueError),
    (lambda p: (p / CONFIG_FILE).write_text("[1, 2]"), ValueError),
    (lambda p: (p / CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000), ValueError),
    (lambda p: save_file({k: v.T.contiguous() if k == "W_dec" else v for k, v in load_file(str(p / WEIGHTS_FILE)).items()},
                         str(p / WEIGHTS_FILE)), ValueError),
    (lambda p: save_file({k: v for k, v in load_file(str(p / WEIGHTS_FILE)).items() if k != "W_enc"},
                         str(p / WEIGHTS_FILE)), ValueError),
    (lambda p: (p / WEIGHTS_FILE).write_bytes(b"\x00" * 7), ValueError),
    (lambda p: (p / WEIGHTS_FILE).unlink(), FileNotFoundError),
    (lambda p: (p / CONFIG_FILE).unlink(), FileNotFoundError),
])
def test_defect28_07_from_saelens_malformed_dirs_give_clear_errors(saelens_dir, breakage, error):
    breakage(saelens_dir)
    with pytest.raises(error) as err:
        interop.from_saelens(saelens_dir)
    assert str(saelens_dir) in str(err.value), str(err.value)


def test_defect28_07_from_saelens_refuses_a_bad_scaler_file(tmp_path):
    sae = SAE(_cfg(activation="topk"))
    path = interop.to_saelens(sae, tmp_path / "s")
    _edit_cfg(path, lambda c: c.update(normalize_activations="expected_average_only_in"))
    for text in ("{not json", "[1]", json.dumps({"scaling_factor": 1e300}), json.dumps({"scaling_factor": "2"})):
        (path / interop.SCALER_FILE).write_text(text)
        with pytest.raises(ValueError):
            interop.from_saelens(path)


# ----------------------------------------------------------------------------- 10 / 13. SAE.load of hostile files
def test_defect28_10_sae_load_checks_shapes_before_allocating(tmp_path, monkeypatch):
    path = SAE(_cfg()).save(tmp_path / "sae")
    _edit_cfg(path, lambda c: c.update(d_sae=200_000_000))

    def no_allocation(self, cfg):
        raise AssertionError(f"SAE({cfg.d_sae} latents) was built before the shapes were checked")

    monkeypatch.setattr(SAE, "__init__", no_allocation)
    with pytest.raises(ValueError) as err:
        SAE.load(path)
    assert "d_sae=200000000" in str(err.value) and "(8, 16)" in str(err.value), str(err.value)


def test_defect28_10_sae_load_refuses_tensors_larger_than_memory(tmp_path, monkeypatch):
    import abstopk_mini.untrusted as untrusted

    path = SAE(_cfg()).save(tmp_path / "sae")
    monkeypatch.setattr(untrusted, "physical_memory_bytes", lambda: 1000)  # a machine with 1 kB of memory
    with pytest.raises(ValueError, match="more than this machine's"):
        SAE.load(path)


def test_defect28_13_deeply_nested_cfg_json_is_refused(tmp_path):
    path = SAE(_cfg()).save(tmp_path / "sae")
    (path / CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="too deeply"):
        SAE.load(path)


# ----------------------------------------------------------------------------- 13. pretrained manifest errors
def _shipped(tmp_path):
    root = tmp_path / "pre"
    pretrained.ship(SAE(_cfg(activation="topk")), "tiny", root, {"note": "test"})
    return root


@pytest.mark.parametrize("edit,expected", [
    (lambda m: "{not json", "is not valid JSON"),
    (lambda m: json.dumps([m]), "not a manifest object"),
    (lambda m: json.dumps(m | {"saes": {"tiny": {k: v for k, v in m["saes"]["tiny"].items() if k != "sha256"}}}),
     "has no 'sha256'"),
    (lambda m: json.dumps(m | {"saes": {"tiny": m["saes"]["tiny"] | {"dir": "../../elsewhere"}}}), "not a plain folder"),
    (lambda m: json.dumps(m | {"saes": ["tiny"]}), "no 'saes' object"),
])
def test_defect28_13_pretrained_manifest_errors_name_the_file(tmp_path, edit, expected):
    root = _shipped(tmp_path)
    manifest = root / pretrained.MANIFEST
    manifest.write_text(edit(json.loads(manifest.read_text())))
    with pytest.raises(ValueError) as err:
        pretrained.load("tiny", root=root)
    assert str(manifest) in str(err.value) and expected in str(err.value), str(err.value)


def test_defect28_13_shipped_saes_still_load(tmp_path):
    root = _shipped(tmp_path)
    sae = pretrained.load("tiny", root=root)
    assert sae.cfg.d_sae == 16 and not sae.training


# ----------------------------------------------------------------------------- 14. temp files and lock links
def test_defect28_14_temp_files_of_a_killed_save_are_removed_by_the_rerun(acts, tmp_path):
    cfg = _cfg(d_in=32, d_sae=64, k=4)
    _, _, run = train_on_harvest(acts, cfg, tmp_path, progress=False, **TRAIN)
    (run / "history.json").unlink()  # killed during the save: no history.json, temp files left
    orphans = [run / f".{name}.dead{i}.tmp" for i, name in enumerate((WEIGHTS_FILE, CONFIG_FILE, "train.json", "history.json"))]
    for p in orphans:
        p.write_bytes(b"half written")
    train_on_harvest(acts, cfg, tmp_path, progress=False, **TRAIN)
    assert [p.name for p in orphans if p.exists()] == []
    assert not list(run.glob(".*.tmp"))


def test_defect28_14_temp_files_of_a_killed_snapshot_are_removed(tmp_path):
    snap = am.train.snapshot_path(tmp_path / "snaps", 4)
    snap.mkdir(parents=True)
    orphan = snap / f".{WEIGHTS_FILE}.dead.tmp"
    orphan.write_bytes(b"half written")
    am.train_sae(_cfg(), _x(), n_tokens=256, batch_size=32, snapshot_steps=(4,), snapshot_dir=str(tmp_path / "snaps"), **QUIET)
    assert not orphan.exists() and SAE.load(snap).cfg.d_sae == 16


def test_defect28_14_symlinked_lock_is_refused_and_its_target_not_created(acts, tmp_path, capsys):
    victim = tmp_path / "victim"
    lock = acts.resolve().with_name(acts.resolve().name + ".lock")
    lock.symlink_to(victim)  # dangling
    with pytest.raises(ValueError, match="symbolic link"):
        with flock(lock, exclusive=False):
            pass
    assert not victim.exists()
    assert _cli_train(acts, tmp_path) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert not victim.exists() and lock.is_symlink()


def test_defect28_05_sweep_records_name_the_last_batch_as_such():
    """A sweep record's final_fvu is the SAE on a fixed sample; the last batch's is named last_batch_*,
    and a table of records from before (final_fvu was the last batch's) still shows the last batch."""
    from abstopk_mini.chapters.plots_verdict import _last_batch_fvu

    old = {"train": {"final_fvu": 0.31}}  # as committed records hold it: the last batch
    new = {"train": {"final_fvu": 0.12, "final_sample": 4096, "last_batch_fvu": 0.29}}
    assert _last_batch_fvu(old) == 0.31 and _last_batch_fvu(new) == 0.29
    assert math.isnan(_last_batch_fvu({"train": {"final_fvu": 0.1, "final_sample": 10}}))  # no last batch logged
