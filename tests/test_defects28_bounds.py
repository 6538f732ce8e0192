"""Regression tests for issue 28, "bounds before work, and errors classified honestly":
defects 4, 8, 9, 10 (disk full, ABSTOPK_DEVICE, sweep --threads, train --d-sae), 12, and the
--seed / tiny-scale / zero-variance parts of 13 and the --max-runs / ABSTOPK_RUNS parts of 14.

Each test is named after the defect it pins down and fails on the code before the fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.cli import main as cli_main
from abstopk_mini.runs.store import HarvestSpec, harvest_spec, runs_dir, train_on_harvest

from conftest import TINY_SENTENCES, tiny_harvest_spec

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"  # safetensors 0.8, on a full tmpfs
ENOSPC_TORCH_SAVE = "[enforce fail at inline_container.cc:672] . unexpected pos 70592 vs 70484"  # torch.save, same disk


@pytest.fixture
def spec(tiny_gpt2_dir):
    return tiny_harvest_spec(tiny_gpt2_dir, n_tokens=1500)


@pytest.fixture
def acts(spec, tiny_gpt2, tmp_path):
    return harvest_spec(spec, tmp_path / "runs", loaded=tiny_gpt2, progress=False)


def _report(capsys) -> tuple[str, dict]:
    """The ``error:`` line and the JSON object of a failed ``--json`` command."""
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out.err
    return lines[0], json.loads(out.out)


def _harvest_args(tiny_gpt2_dir, root, *extra) -> list[str]:
    return ["harvest", "--model", str(tiny_gpt2_dir), "--layer", "1", "--tokens", "800", "--context", "32",
            "--sources", "lee", "--offsets", "0", "--runs-dir", str(root), "--json", *extra]


def _sweep_config(tmp_path, tiny_gpt2_dir) -> Path:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({
        "name": "tiny", "results": str(tmp_path / "r.jsonl"), "model": str(tiny_gpt2_dir),
        "harvest": {"n_tokens": 3000, "context_length": 32, "chunk_offsets": [0], "sources": ["lee"]},
        "eval": {"heldout_tokens": 600, "splice_tokens": 48, "concepts": ["family"]}, "batch_size": 256,
        "stages": [{"name": "g", "layers": [1], "widths": [64], "ks": [4], "activations": ["abstopk"],
                    "train_tokens": [1024]}]}))
    return path


@contextlib.contextmanager
def _deadline(seconds: float):
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- 10. errors classified
def test_defect28_10_disk_full_during_harvest_is_a_user_error(tiny_gpt2_dir, tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk as its own SafetensorError; it is the disk, not a bug."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(tensors, path, *a, **k):
        Path(path).write_bytes(b"\0" * 8)  # the part written before the disk filled up
        raise SafetensorError(ENOSPC_SAFETENSORS)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert cli_main(_harvest_args(tiny_gpt2_dir, tmp_path / "runs")) == 2
    line, obj = _report(capsys)
    assert obj["bug"] is False and "bug in abstopk_mini" not in line
    assert "disk is full" in line and "--runs-dir" in line
    harvest = next((tmp_path / "runs" / "acts").iterdir())
    assert not list(harvest.glob("*.tmp")) and not list(harvest.glob("shard_*"))  # no partial shard left


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), "safetensors"])
def test_defect28_10_disk_full_during_train_is_a_user_error(acts, tmp_path, capsys, monkeypatch, error):
    """The SAE's weights cannot be written at the end of training: a user error with the fix."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(tensors, path, *a, **k):
        raise SafetensorError(ENOSPC_SAFETENSORS) if error == "safetensors" else error

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code = cli_main(["train", "--acts", str(acts), "--d-sae", "32", "--k", "4", "--batch-size", "256",
                     "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert code == 2
    line, obj = _report(capsys)
    assert obj["bug"] is False and "bug in abstopk_mini" not in line
    assert "disk is full" in line


def test_defect28_10_environment_errors_are_recognised_bugs_are_not():
    from safetensors import SafetensorError

    from abstopk_mini.cli.report import environment_problem, is_bug

    assert "disk is full" in environment_problem(OSError(errno.ENOSPC, "No space left on device"))
    assert "read-only" in environment_problem(OSError(errno.EROFS, "Read-only file system"))
    assert "disk is full" in environment_problem(SafetensorError(ENOSPC_SAFETENSORS))
    assert "writing a file failed" in environment_problem(RuntimeError(ENOSPC_TORCH_SAVE))
    try:  # wrapped: the cause decides
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("could not save") from inner
    except RuntimeError as outer:
        assert environment_problem(outer) is not None and not is_bug(outer)
    assert not is_bug(RuntimeError(ENOSPC_TORCH_SAVE)) and not is_bug(ValueError("bad"))
    assert environment_problem(FileNotFoundError(errno.ENOENT, "missing")) is None
    assert is_bug(RuntimeError("shape mismatch")) and is_bug(KeyError("x")) and is_bug(ZeroDivisionError())


@pytest.mark.parametrize("value", ["cuda", "banana", "meta", "cuda:7"])
def test_defect28_10_abstopk_device_is_checked(value, monkeypatch, tmp_path, capsys):
    if value.startswith("cuda") and torch.cuda.is_available() and (value == "cuda" or torch.cuda.device_count() > 7):
        pytest.skip("this machine has that CUDA device")
    monkeypatch.setenv("ABSTOPK_DEVICE", value)
    with pytest.raises(ValueError, match="ABSTOPK_DEVICE") as info:
        am.device.get_device()
    assert "cpu" in str(info.value)  # the allowed values / the fix
    # the CLI checks it before any work, as a user error
    assert cli_main(["train", "--acts", str(tmp_path / "no_harvest"), "--json"]) == 2
    line, obj = _report(capsys)
    assert obj["bug"] is False and "ABSTOPK_DEVICE" in line and repr(value) in line


def test_defect28_10_abstopk_device_cpu_and_unset_still_work(monkeypatch):
    monkeypatch.setenv("ABSTOPK_DEVICE", "cpu")
    assert am.device.get_device() == torch.device("cpu")
    monkeypatch.setenv("ABSTOPK_DEVICE", "")
    assert am.device.get_device().type in ("cpu", "cuda")


@pytest.mark.parametrize("threads", ["0", "-2"])
def test_defect28_10_sweep_threads_must_be_positive(threads, tmp_path, tiny_gpt2_dir, capsys):
    config = _sweep_config(tmp_path, tiny_gpt2_dir)
    assert cli_main(["sweep", "--config", str(config), "--threads", threads, "--dry-run", "--json"]) == 2
    line, obj = _report(capsys)
    assert obj["bug"] is False and "--threads" in line and threads in line


def test_defect28_10_train_d_sae_too_large_is_refused_before_allocating(acts, tmp_path, capsys, monkeypatch):
    """--d-sae 1e9 on d_in 32 is 66e9 parameters (264 GB in float32, before Adam): refused at once."""
    def no_sae(self, *a, **k):
        raise AssertionError("an SAE was allocated")

    monkeypatch.setattr(am.SAE, "__init__", no_sae)
    code = cli_main(["train", "--acts", str(acts), "--d-sae", "1000000000", "--k", "4",
                     "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert code == 2
    line, obj = _report(capsys)
    assert obj["bug"] is False and "--d-sae" in line and "memory" in line
    assert not (tmp_path / "runs" / "saes").exists()


def test_defect28_10_memory_and_disk_bounds(monkeypatch, tmp_path):
    from abstopk_mini import limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 10**6)
    with pytest.raises(ValueError, match="needs about 4.0 MB of memory.*1.0 MB available; shrink it"):
        limits.check_memory(4 * 10**6, "a thing", "shrink it")
    limits.check_memory(10**5, "a thing", "shrink it")
    free = limits.free_disk(tmp_path / "not" / "yet")  # a folder not created yet: its file system's
    assert free is not None and free > 0
    with pytest.raises(ValueError, match="of disk"):
        limits.check_disk(free * 10 + 10**12, tmp_path / "x", "a harvest", "pass fewer tokens")


# ----------------------------------------------------------------------------- 4. sweep --background
def test_defect28_04_background_sweep_passes_dry_run_on(tmp_path, tiny_gpt2_dir, capsys, monkeypatch):
    from abstopk_mini.runs import sweep

    launched = []

    class FakePopen:
        def __init__(self, argv, **kw):
            launched.append(argv)
            self.pid = 12345

    monkeypatch.setattr(sweep.subprocess, "Popen", FakePopen)
    config = _sweep_config(tmp_path, tiny_gpt2_dir)
    log = tmp_path / "sweep.log"
    assert cli_main(["sweep", "--config", str(config), "--dry-run", "--background", str(log), "--threads", "1",
                     "--max-runs", "2", "--json"]) == 0
    (argv,) = launched
    assert argv[1:3] == ["-m", "abstopk_mini"] and argv[3] == "sweep"
    assert "--dry-run" in argv and "--background" not in argv
    assert argv[argv.index("--threads") + 1] == "1" and argv[argv.index("--max-runs") + 1] == "2"
    assert json.loads(capsys.readouterr().out)["dry_run"] is True


# ----------------------------------------------------------------------------- 8. empty harvest
def test_defect28_08_harvest_with_no_tokens_is_refused_before_writing(tiny_gpt2_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    args = _harvest_args(tiny_gpt2_dir, root)
    args[args.index("--offsets") + 1] = "100000000"
    assert cli_main(args) == 2
    line, obj = _report(capsys)
    assert obj["bug"] is False and "--offsets" in line
    assert not (root / "acts").exists() or not any((root / "acts").iterdir())  # no harvest dir, no lock


def test_defect28_08_harvest_that_yields_nothing_is_not_kept(tiny_gpt2, tmp_path):
    """Texts the size bound lets through but that give no chunk past the offset: refused after the
    pass, nothing marked complete, the new directory removed."""
    docs = ["A man and a woman read books in the library."]
    out = tmp_path / "h"
    with pytest.raises(ValueError, match="no tokens.*--offsets"):
        am.lm.activations.harvest(tiny_gpt2, docs, 1, 50, out, context_length=32, chunk_offsets=(100,),
                                  progress=False)
    assert not out.exists()


def test_defect28_08_training_on_an_empty_harvest_names_it(acts, tmp_path, capsys):
    """A harvest cached empty by an older version: train names the directory and the fix."""
    manifest = json.loads((acts / "manifest.json").read_text())
    for rec in manifest["shards"]:
        (acts / rec["file"]).unlink()
    # what `harvest --offsets 100000000` wrote before the fix: complete, no shards, the hash of no hashes
    manifest.update(shards=[], n_shards=0, tokens_written=0, chunk_offsets=[100000000],
                    content_sha256=hashlib.sha256(b"").hexdigest())
    (acts / "manifest.json").write_text(json.dumps(manifest))
    (acts / ".verified.json").unlink(missing_ok=True)
    code = cli_main(["train", "--acts", str(acts), "--d-sae", "32", "--k", "4", "--runs-dir", str(tmp_path / "runs"),
                     "--json"])
    assert code == 2
    line, obj = _report(capsys)
    assert str(acts) in line and "no tokens" in line and "--overwrite" in line and "--offsets" in line


# ----------------------------------------------------------------------------- 9. huge token counts
def test_defect28_09_shard_sizes_are_not_a_giant_list():
    from abstopk_mini.lm.activations import _shard_sizes

    with _deadline(5):
        sizes = _shard_sizes(10**15, 65536)
        assert len(sizes) == -(-10**15 // 65536)
        assert sizes[0] == 65536 and sizes[len(sizes) - 1] == 10**15 - (len(sizes) - 1) * 65536
    assert list(_shard_sizes(5, 2)) == [2, 2, 1]


def test_defect28_09_harvest_tokens_1e15_is_refused_at_once(tiny_gpt2_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    args = _harvest_args(tiny_gpt2_dir, root)
    args[args.index("--tokens") + 1] = str(10**15)
    with _deadline(60):
        assert cli_main(args) == 2
    line, obj = _report(capsys)
    assert obj["bug"] is False and "--tokens" in line
    assert not (root / "acts").exists() or not any((root / "acts").iterdir())  # no empty run dir, no lock


def test_defect28_09_eval_size_harvest_is_refused_without_leaving_files(tiny_gpt2, tiny_gpt2_dir, tmp_path):
    """``eval --acts-tokens 1e15`` goes through harvest_spec on the held-out split: refused, no dir, no lock."""
    spec = HarvestSpec(model=str(tiny_gpt2_dir), layer=1, n_tokens=10**15, context_length=32, sources=("lee",),
                       split="heldout", chunk_offsets=(0,))
    with _deadline(60), pytest.raises(ValueError, match="--acts-tokens"):
        harvest_spec(spec, tmp_path / "runs", loaded=tiny_gpt2, progress=False)
    assert not any((tmp_path / "runs" / "acts").iterdir())


def test_defect28_09_harvest_larger_than_the_disk_is_refused(tiny_gpt2, tmp_path, monkeypatch):
    from abstopk_mini import limits

    monkeypatch.setattr(limits, "free_disk", lambda path: 10_000)
    with pytest.raises(ValueError, match="of disk"):
        am.lm.activations.harvest(tiny_gpt2, TINY_SENTENCES, 1, 200, tmp_path / "h", context_length=32, progress=False)
    assert not (tmp_path / "h").exists()


def test_defect28_09_loading_more_activations_than_memory_is_refused(acts, monkeypatch):
    from abstopk_mini import limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 1000)
    with pytest.raises(ValueError, match="--acts-tokens.*"):
        am.lm.shards.load_activations(acts)
    monkeypatch.undo()
    assert len(am.lm.shards.load_activations(acts, 10)) == 10


# ----------------------------------------------------------------------------- 12. read-only harvest
def test_defect28_12_read_only_harvest_can_be_trained_on(acts, tmp_path, monkeypatch):
    """The harvest and its parent are read-only: the lock file next to it cannot be created.

    chmod does not stop root (the tests may run as root), so creating files there is refused the
    way a read-only mount refuses it (EROFS) as well; the chmod makes it real for other users."""
    from abstopk_mini import io

    parent = acts.parent
    real_open = os.open

    def ro_open(path, flags, *a, **k):
        if Path(path).parent == parent and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(io.os, "open", ro_open)
    modes = {p: p.stat().st_mode for p in (acts, parent)}
    for p in modes:
        p.chmod(0o555)
    try:
        cfg = am.SAEConfig(d_in=32, d_sae=32, activation="topk", k=4)
        sae, _, run = train_on_harvest(acts, cfg, tmp_path / "elsewhere", progress=False, batch_size=256)
        assert (run / "history.json").is_file() and not (parent / (acts.name + ".lock")).exists()
        with pytest.raises(OSError, match="Read-only"):  # a writer still needs the lock file
            with io.flock(parent / (acts.name + ".lock"), exclusive=True):
                pass
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def test_defect28_12_existing_lock_file_is_shared_read_only(tmp_path, monkeypatch):
    from abstopk_mini import io

    lock = tmp_path / "h.lock"
    lock.write_text("")
    real_open = os.open

    def no_create(path, flags, *a, **k):
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(io.os, "open", no_create)
    with io.flock(lock, exclusive=False):
        import fcntl

        probe = real_open(lock, os.O_RDONLY)
        try:  # the reader holds a real shared lock: an exclusive one cannot be taken meanwhile
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)


# ----------------------------------------------------------------------------- 13. unclear messages
def test_defect28_13_seed_out_of_range_names_the_flag(tmp_path, capsys):
    for seed in (str(2**70), "-1"):
        assert cli_main(["train", "--acts", str(tmp_path / "none"), "--seed", seed, "--json"]) == 2
        line, obj = _report(capsys)
        assert obj["bug"] is False and "--seed" in line and "4294967295" in line


def test_defect28_13_sweep_config_seed_out_of_range(tmp_path, tiny_gpt2_dir):
    from abstopk_mini.runs.sweep import load_config

    raw = json.loads(_sweep_config(tmp_path, tiny_gpt2_dir).read_text())
    raw["stages"][0]["seeds"] = [2**70]
    with pytest.raises(ValueError, match=r"seeds.*\[0, 4294967295\]"):
        load_config(raw)


def test_defect28_13_near_zero_data_is_not_blamed_on_the_lr():
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0)) * 1e-20
    cfg = am.SAEConfig(d_in=16, d_sae=32, activation="abstopk", k=4)
    with pytest.raises(FloatingPointError) as info:
        am.train_sae(cfg, x, batch_size=256, n_tokens=4000, progress=False)
    assert "near) zero" in str(info.value) and "lower lr will not help" in str(info.value)
    assert "Try a lower lr" not in str(info.value)


def test_defect28_13_fvu_of_data_without_variance_is_an_error():
    from abstopk_mini.evaluate import evaluate_sae

    sae = am.SAE(am.SAEConfig(d_in=8, d_sae=16, activation="topk", k=2, device="cpu"))
    for x in (torch.ones(10, 8), torch.randn(1, 8)):
        with pytest.raises(ValueError, match="no variance"):
            evaluate_sae(sae, x)
        with pytest.raises(ValueError, match="no variance"):
            am.metrics.fvu(x, torch.zeros_like(x))
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x_hat = sae(x)
    assert abs(evaluate_sae(sae, x)["fvu"] - am.metrics.fvu(x, x_hat)) < 1e-5


# ----------------------------------------------------------------------------- 14. cosmetic
def test_defect28_14_max_runs_must_be_positive(tmp_path, tiny_gpt2_dir, capsys):
    from abstopk_mini.runs.sweep import run_sweep

    config = _sweep_config(tmp_path, tiny_gpt2_dir)
    for value in ("-1", "0"):
        assert cli_main(["sweep", "--config", str(config), "--max-runs", value, "--dry-run", "--json"]) == 2
        line, obj = _report(capsys)
        assert obj["bug"] is False and "--max-runs" in line
    with pytest.raises(ValueError, match="max_runs"):
        run_sweep(str(config), max_runs=-1, dry_run=True)


@pytest.mark.parametrize("value", ["", "  "])
def test_defect28_14_empty_abstopk_runs_is_unset(value, monkeypatch):
    monkeypatch.setenv("ABSTOPK_RUNS", value)
    assert runs_dir() == Path("runs")
    assert runs_dir("x") == Path("x")


def test_defect28_13_error_line_is_not_glued_to_a_progress_bar(capsys):
    """A command that fails with its progress bar open: the ``error:`` line starts a line of its own."""
    import sys

    from tqdm import tqdm

    from abstopk_mini.cli.report import report_error

    bar = tqdm(total=10, file=sys.stderr, desc="train")
    bar.update(3)
    assert report_error(["train"], None, OSError(errno.ENOSPC, "No space left on device"), bug=False) == 2
    err = capsys.readouterr().err
    assert any(line.startswith("error: ") for line in err.splitlines()), err


def test_defect28_13_string_seed_through_the_api_names_the_field():
    """A seed of the wrong type through the API (not only --seed) is one clear error, not torch's."""
    for bad in ("1", -1, 2**40, True):
        with pytest.raises(ValueError, match=r"SAEConfig\.seed must be an int"):
            am.SAEConfig(d_in=4, d_sae=8, activation="topk", k=2, seed=bad)
    with pytest.raises(ValueError, match=r"TrainConfig\.seed must be an int"):
        am.train_sae(am.SAEConfig(d_in=4, d_sae=8, activation="topk", k=2), torch.randn(64, 4), seed="1", progress=False)


def test_defect28_10_sae_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    """Every way to build an SAE (API, sweep, recipes), not only the CLI's train: SAE(cfg) checks its
    weights against the memory available before it draws them."""
    from abstopk_mini import limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 10**6)
    with pytest.raises(ValueError, match="d_sae=100,000 needs about .* of memory.*smaller d_sae"):
        am.SAE(am.SAEConfig(d_in=64, d_sae=100_000, activation="topk", k=4, device="cpu"))
    am.SAE(am.SAEConfig(d_in=8, d_sae=16, activation="topk", k=4, device="cpu"))  # 1.5 kB fits


def test_defect28_14_empty_abstopk_runs_is_labelled_as_unset(monkeypatch):
    from abstopk_mini.runs.store import runs_label

    monkeypatch.setenv("ABSTOPK_RUNS", "")
    assert runs_label() == "./runs"
    monkeypatch.setenv("ABSTOPK_RUNS", "/data/runs")
    assert runs_label() == "$ABSTOPK_RUNS"
