r"""SAELens interop: ``to_saelens(sae, dir)`` and ``from_saelens(dir) -> SAE``.

A SAELens directory holds ``cfg.json`` and ``sae_weights.safetensors`` with the same tensor names
as ours (``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in], ``b_enc``, ``b_dec``, ``threshold``).
What differs is the meaning, and this module converts it exactly:

**Input scale.** Our SAE applies ``cfg.input_scale`` s itself:
:math:`u = (s x - b_{dec}) W_{enc} + b_{enc}`, :math:`\hat x = (z W_{dec} + b_{dec}) / s`.
Written out for SAELens (no normalisation) that is

.. math::  W_{enc}' = s\,W_{enc},\quad b_{dec}' = b_{dec}/s,\quad W_{dec}' = W_{dec}/s,\quad
           b_{enc}' = b_{enc},\quad \theta' = \theta,

the same u and z (thresholds live in u units, unchanged). SAELens's
``normalize_activations="expected_average_only_in"`` is the same s, kept outside the SAE by its
trainer (``activation_scaler.json`` next to a checkpoint; the release's ``norm_scaling_factor``
for hub SAEs); :func:`from_saelens` reads it into ``cfg.input_scale`` (or takes
``scaling_factor=``).

**Other SAELens settings.** ``rescale_acts_by_decoder_norm`` (top-k ranks
:math:`u_j \|W_{dec}[j]\|` and decodes :math:`z_j / \|W_{dec}[j]\|`) is folded into the weights
(:math:`W_{enc}[:, j] \cdot n_j`, :math:`b_{enc}[j] \cdot n_j`, :math:`W_{dec}[j] / n_j`);
``apply_b_dec_to_input=False`` is folded into the bias (:math:`b_{enc} + b_{dec} W_{enc}`).

**Recipe options** (:mod:`abstopk_mini.recipes`). ``input_unit_norm`` (per-token
standardisation) is SAELens's ``normalize_activations="layer_norm"``, the same maths and ε
(:func:`~abstopk_mini.sae.standardize`), exported and imported as such (with s folded in as
above). ``use_b_enc=False`` exports ``b_enc`` = 0; ``enc_init_scale`` only shapes the
initial weights. A SAELens *training* TopK/AbsTopK SAE refuses ``layer_norm`` in its AuxK loss;
the inference SAE that :func:`to_saelens` writes runs it.

**Architectures.** ours -> SAELens: relu -> ``standard``, jumprelu -> ``jumprelu``, topk ->
``topk``, abstopk -> ``abstopk``, batchtopk -> ``jumprelu`` with one threshold for all latents
(how SAELens itself ships BatchTopK SAEs). The signed thresholds (``absjumprelu``,
``batchabstopk``) have no SAELens class; ``split_signed=True`` writes an equivalent JumpReLU SAE
with 2·d_sae latents (latent j becomes j for u > 0 and d_sae + j for u < 0, with negated
encoder column and decoder row). SAELens -> ours: ``standard``, ``jumprelu``, ``topk``,
``abstopk``, ``batchtopk`` (a training checkpoint with ``topk_threshold``).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import torch

from .io import atomic_write
from .nonlinearities import SPECS, ActivationSpec
from .sae import CONFIG_FILE, DTYPES, SAE, WEIGHTS_FILE, SAEConfig, read_config
from .untrusted import check_floating_finite, check_input_scale, check_shapes, check_size, read_json, tensor_header

__all__ = ["to_saelens", "from_saelens", "SUPPORTED_FROM_SAELENS", "SAELENS_ARCHITECTURE"]

#: the architectures SAELens itself has classes for (``batchtopk``: its training checkpoints)
SAELENS_ARCHITECTURES = ("standard", "jumprelu", "topk", "abstopk", "batchtopk")


def saelens_architecture(s: ActivationSpec) -> str:
    """The SAELens architecture :func:`to_saelens` writes for an activation: its own
    ``architecture`` when it is elementwise without a learned threshold (``standard``) or a per-row
    top-k; otherwise ``jumprelu``: a threshold on u, learned per latent or the batch variants'
    global one (signed activations only with ``split_signed=True``)."""
    return s.architecture if s.selection == "row" or s.param is None else "jumprelu"


#: SAELens architectures that :func:`from_saelens` reads -> our activation
SUPPORTED_FROM_SAELENS = {s.architecture: name for name, s in SPECS.items() if s.architecture in SAELENS_ARCHITECTURES}
#: our activation -> the SAELens architecture :func:`to_saelens` writes
SAELENS_ARCHITECTURE = {name: saelens_architecture(s) for name, s in SPECS.items()}
SCALER_FILE = "activation_scaler.json"  # written by SAELens's trainer next to a checkpoint
_SAELENS_FORMAT_VERSION = "6.0.0"


# ----------------------------------------------------------------------------- export
@torch.no_grad()
def to_saelens(sae: SAE, path: str | os.PathLike, *, split_signed: bool = False, dtype: str = "float32") -> Path:
    """Write ``sae`` as a SAELens directory that ``sae_lens.SAE.load_from_disk(path)`` loads.

    The SAELens SAE computes the same z and x̂ from raw activations (input scale folded in; see
    the module docstring). dtype: how the tensors are stored, ``"float32"`` (exact) or ``"float16"``
    / ``"bfloat16"`` (half the size; each weight rounded once, after folding in float64). The
    config's ``dtype`` stays ``"float32"``: the SAE is loaded and run in float32 either way.
    Returns the directory.
    """
    store = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in store:
        raise ValueError(f"dtype must be one of {sorted(store)}; got {dtype!r}")
    from safetensors.torch import save_file

    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be an abstopk_mini SAE; got {type(sae).__name__}")
    cfg = sae.cfg
    act, spec = cfg.activation, cfg.spec
    s = float(cfg.input_scale)
    # folded in float64 and rounded once, to the stored dtype, when written
    W_enc = sae.W_enc.detach().double().cpu() * s
    W_dec = sae.W_dec.detach().double().cpu() / s
    b_enc = sae.b_enc.detach().double().cpu().clone()
    b_dec = sae.b_dec.detach().double().cpu() / s
    extra: dict = {}
    tensors = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    arch = saelens_architecture(spec)
    if arch not in SAELENS_ARCHITECTURES:
        raise ValueError(f"activation={act!r} has no SAELens architecture (SAELens has {list(SAELENS_ARCHITECTURES)}); "
                         "save it with sae.save(path) and load it with abstopk_mini.SAE.load(path)")
    if arch != "jumprelu":  # relu, per-row top-k: the same architecture in SAELens
        if spec.k_based:
            extra = {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
    elif not spec.signed and not spec.per_batch:  # jumprelu: θ per latent
        tensors["threshold"] = sae.threshold.detach().float().cpu().clamp_min(0).clone()
    elif not spec.signed:  # batchtopk: one global θ
        theta = float(sae.threshold)
        if theta < 0:  # never trained: eval mode is a per-row top-k
            arch, extra = "topk", {"k": cfg.k, "rescale_acts_by_decoder_norm": False}
        else:
            tensors["threshold"] = torch.full((cfg.d_sae,), theta)
    else:  # absjumprelu, batchabstopk: |u| > θ with the sign kept
        if not split_signed:
            raise ValueError(
                f"activation={act!r} keeps |u| > θ with its sign and SAELens has no such architecture "
                f"(it reads {sorted(set(SAELENS_ARCHITECTURE.values()))}); pass split_signed=True to write an "
                "equivalent JumpReLU SAE with 2·d_sae latents (j: u > θ, d_sae + j: u < −θ)"
            )
        if spec.per_batch and float(sae.threshold) < 0:
            raise ValueError(f"this {act} SAE was never trained (threshold < 0); train it before exporting")
        theta = sae.threshold.detach().float().cpu().clamp_min(0).expand(cfg.d_sae)
        tensors = {
            "W_enc": torch.cat([W_enc, -W_enc], 1),
            "W_dec": torch.cat([W_dec, -W_dec], 0),
            "b_enc": torch.cat([b_enc, -b_enc]),
            "b_dec": b_dec,
            "threshold": torch.cat([theta, theta]),
        }
    d_sae_out = tensors["W_enc"].shape[1]
    meta = {
        "sae_lens_version": _SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "hook_head_index": None,
        "context_size": cfg.context_size,
        "abstopk_mini_activation": act,
        "abstopk_mini_input_scale_folded": s,
        "abstopk_mini_recipe": cfg.recipe,
        "abstopk_mini_stored_dtype": dtype,
    }
    config = {
        "d_in": cfg.d_in,
        "d_sae": d_sae_out,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "layer_norm" if cfg.input_unit_norm else "none",
        "reshape_activations": "none",
        "metadata": meta,
        "architecture": arch,
        **extra,
    }
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"path={str(path)!r} is a file; to_saelens needs a directory path")
    path.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.to(store[dtype]).contiguous() for key, value in tensors.items()}
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write(path / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2)))
    return path


# ----------------------------------------------------------------------------- import
_FIX = "the directory is not a SAELens SAE or was damaged; re-export it (to_saelens) or download it again"


def _read_config(path: Path) -> dict:
    raw = read_config(path, "a SAELens SAE")
    if not isinstance(raw, dict):
        raise ValueError(f"{path / CONFIG_FILE} holds a JSON {type(raw).__name__}, not an object of settings; {_FIX}")
    for key, kind in (("metadata", dict), ("activation_fn_kwargs", dict), ("format", str), ("dtype", str)):
        if raw.get(key) is not None and not isinstance(raw[key], kind):
            raise ValueError(f"{path / CONFIG_FILE}: {key}={raw[key]!r} is not a JSON {kind.__name__ if kind is str else 'object'}; {_FIX}")
    if (raw.get("format") or "").startswith("abstopk_mini/"):
        raise ValueError(f"{path} was written by SAE.save (abstopk_mini format); load it with abstopk_mini.SAE.load(path)")
    return _modernise(raw)


def _modernise(cfg: dict) -> dict:
    """Rename the pre-6.0 SAELens keys we read (hook_point, activation_fn_str, boolean normalisation)."""
    cfg = dict(cfg)
    meta = dict(cfg.get("metadata") or {})
    for old, new in (("hook_point", "hook_name"), ("hook_point_head_index", "hook_head_index"), ("activation_fn_str", "activation_fn")):
        if old in cfg and new not in cfg:
            cfg[new] = cfg.pop(old)
    for key in ("model_name", "hook_name", "hook_head_index", "context_size", "hook_layer"):
        if key in cfg and key not in meta:
            meta[key] = cfg[key]
    cfg["metadata"] = meta
    if "architecture" not in cfg:
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if cfg.get("activation_fn") == "topk" and kwargs.get("k") is not None:
            cfg["architecture"], cfg["k"] = "topk", kwargs["k"]
        else:
            cfg["architecture"] = "standard"
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool) or norm is None:
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    return cfg


def _int_k(k, arch: str, path: Path) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k != int(k) or k < 1:
        raise ValueError(f"{path / CONFIG_FILE}: architecture {arch!r} needs a positive integer k; got k={k!r}")
    return int(k)


@torch.no_grad()
def from_saelens(
    path: str | os.PathLike,
    *,
    scaling_factor: float | None = None,
    d_in: int | None = None,
    hook_name: str | None = None,
    device: str | torch.device | None = None,
) -> SAE:
    """Read a SAELens SAE directory into an :class:`~abstopk_mini.sae.SAE` that computes the same.

    scaling_factor: the input scale of an SAE trained with
    ``normalize_activations="expected_average_only_in"`` (default: ``activation_scaler.json`` in
    the directory; without either, a warning and s = 1, which is what ``SAE.load_from_disk`` does).
    d_in, hook_name: when given, the directory must match them (a ValueError names the mismatch).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg = _read_config(path)
    arch = cfg["architecture"]
    if not isinstance(arch, str) or arch not in SUPPORTED_FROM_SAELENS:
        raise ValueError(
            f"{path / CONFIG_FILE} has architecture={arch!r}, which abstopk_mini does not support; "
            f"it reads {sorted(SUPPORTED_FROM_SAELENS)}"
        )
    meta = cfg["metadata"]
    if d_in is not None and cfg.get("d_in") != d_in:
        raise ValueError(f"{path} is an SAE for d_in={cfg.get('d_in')} but d_in={d_in} was asked for; pick the SAE for your hook")
    if hook_name is not None and meta.get("hook_name") != hook_name:
        raise ValueError(
            f"{path} was trained on hook {meta.get('hook_name')!r}, not hook_name={hook_name!r}; load the SAE for that hook"
        )
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in", "layer_norm"):
        raise ValueError(
            f"{path / CONFIG_FILE} has normalize_activations={norm!r}: a per-input normalisation our SAE cannot "
            "express (we support 'none', 'expected_average_only_in' and 'layer_norm' = input_unit_norm)"
        )
    if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise ValueError(f"{path / CONFIG_FILE}: reshape_activations={cfg['reshape_activations']!r} is not supported")
    _check_weights_header(path, cfg)
    try:
        raw_state = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path / WEIGHTS_FILE} could not be read ({err}); the file is truncated or corrupt") from err
    check_floating_finite(path / WEIGHTS_FILE, raw_state, fix="re-export it or download it again")  # as SAE.load does
    state = {key: value.double() for key, value in raw_state.items()}
    W_enc, W_dec, b_dec = state["W_enc"], state["W_dec"], state["b_dec"]
    n_in, n_sae = W_enc.shape
    b_enc = state.get("b_enc", torch.zeros(n_sae, dtype=torch.float64))
    if "scaling_factor" in state and not torch.allclose(state["scaling_factor"], torch.ones(())):
        raise ValueError(f"{path}: a finetuning scaling_factor is not supported")

    activation, k, threshold = SUPPORTED_FROM_SAELENS[arch], None, None
    spec = SPECS[activation]
    if arch == "standard" and cfg.get("activation_fn", "relu") not in ("relu", None):
        raise ValueError(f"{path / CONFIG_FILE}: a standard SAE with activation_fn={cfg['activation_fn']!r} is not supported (only relu)")
    if spec.k_based:
        k = _int_k(cfg.get("k"), arch, path)
        if cfg.get("rescale_acts_by_decoder_norm", False):
            n = W_dec.norm(dim=1).clamp_min(1e-8)
            W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    if spec.threshold_based:
        if "threshold" in state:
            threshold = state["threshold"]
        elif "log_threshold" in state:
            threshold = state["log_threshold"].exp()
        else:
            raise ValueError(f"{path / WEIGHTS_FILE}: a jumprelu SAE needs 'threshold'; keys are {sorted(state)}")
        threshold = threshold.clamp_min(0)  # SAELens applies ReLU first: a negative θ acts as 0
    if spec.per_batch:
        if "topk_threshold" not in state:
            raise ValueError(f"{path / WEIGHTS_FILE}: a batchtopk checkpoint needs 'topk_threshold'; keys are {sorted(state)}")
        threshold = state["topk_threshold"].reshape(())
    if not cfg.get("apply_b_dec_to_input", True):  # u = x W_enc + b_enc = (x − b_dec) W_enc + (b_enc + b_dec W_enc)
        b_enc = b_enc + b_dec @ W_enc

    scale = 1.0
    if norm == "expected_average_only_in":
        if scaling_factor is None and (path / SCALER_FILE).is_file():
            scaler = read_json(path / SCALER_FILE, _FIX)
            if not isinstance(scaler, dict):
                raise ValueError(f"{path / SCALER_FILE} holds a JSON {type(scaler).__name__}, not an object; {_FIX}")
            scaling_factor = scaler.get("scaling_factor")
        if scaling_factor is None:
            warnings.warn(
                f"{path} was trained with normalize_activations='expected_average_only_in' but its scaling factor "
                f"is unknown (no {SCALER_FILE}); using 1 like sae_lens.SAE.load_from_disk. Pass scaling_factor=... "
                "(the release's norm_scaling_factor) for the scale it was trained at",
                stacklevel=2,
            )
        else:
            if isinstance(scaling_factor, bool) or not isinstance(scaling_factor, (int, float)):
                raise ValueError(f"scaling_factor must be a positive finite number; got {scaling_factor!r}")
            scale = float(scaling_factor)
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"scaling_factor must be a positive finite number; got {scaling_factor!r}")
            check_input_scale(scale, "float32", f"{path} (scaling_factor)")

    dtype = cfg.get("dtype", "float32")
    hook = meta.get("hook_name")
    layer = meta.get("hook_layer")
    if layer is None and isinstance(hook, str) and (m := re.search(r"(?:blocks|layers)\.(\d+)\.", hook)):
        layer = int(m.group(1))
    try:
        ours = _config(n_in, n_sae, activation, k, scale, dtype, device, meta, hook, layer, norm, arch, path)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path / CONFIG_FILE} does not describe an SAE we can build ({err}); {_FIX}") from err
    sae = SAE(ours)
    for name, value in (("W_enc", W_enc), ("W_dec", W_dec), ("b_enc", b_enc), ("b_dec", b_dec)):
        getattr(sae, name).copy_(value)
    if threshold is not None:
        sae.threshold.copy_(threshold)
    sae.eval()
    return sae


def _config(n_in, n_sae, activation, k, scale, dtype, device, meta, hook, layer, norm, arch, path) -> SAEConfig:
    return SAEConfig(
        d_in=n_in,
        d_sae=n_sae,
        activation=activation,
        k=k,
        input_scale=scale,
        dtype=dtype if dtype in DTYPES else "float32",
        device=str(device) if device is not None else None,
        model_name=meta.get("model_name"),
        hook_name=hook,
        hook_layer=layer,
        context_size=meta.get("context_size"),
        input_unit_norm=norm == "layer_norm",
        metadata={"source": "saelens", "saelens_architecture": arch, "path": str(path)},
    )


def _check_weights_header(path: Path, cfg: dict) -> None:
    """Before a tensor is loaded: cfg.json's d_in and d_sae are positive ints, and the file holds
    W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_dec [d_in] (b_enc [d_sae] and the thresholds, if
    there, shaped to fit) and fits in memory."""
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    for name, value in (("d_in", d_in), ("d_sae", d_sae)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path / CONFIG_FILE}: {name}={value!r} is not a positive int; {_FIX}")
    header = tensor_header(path / WEIGHTS_FILE, _FIX)
    required = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    optional = {"b_enc": (d_sae,), "threshold": (d_sae,), "log_threshold": (d_sae,)}
    for key in ("topk_threshold", "scaling_factor"):  # one number, as () or [1]
        if key in header and math.prod(header[key][1]) == 1:
            optional[key] = header[key][1]
    known = {key: header[key] for key in header if key in required or key in optional}
    check_shapes(path / WEIGHTS_FILE, known, required, optional, fix=_FIX,
                 what=f"cfg.json (d_in={d_in}, d_sae={d_sae})")
    check_size(path / WEIGHTS_FILE, header, fix=_FIX)
