r"""The sparse autoencoder: one module, seven activations, SAELens-compatible files.

.. math::
    u = (s\,x - b_{dec})\,W_{enc} + b_{enc},\qquad z = \sigma(u),\qquad
    \hat x = (z\,W_{dec} + b_{dec}) / s

* :math:`x` [B, d_in] are model activations; :math:`s` is an optional scalar input scale
  (``cfg.input_scale``, 1 by default; training can set it so that E‖s x‖² = d_in).
* Subtracting :math:`b_{dec}` before encoding is the "pre-encoder bias": the SAE codes the
  activation relative to a learned centre, the same point the decoder adds back.
* :math:`\sigma` is one of the proximal maps in :mod:`abstopk_mini.nonlinearities`
  (``relu``, ``jumprelu``, ``absjumprelu``, ``topk``, ``abstopk``, ``batchtopk``, ``batchabstopk``).
* The rows of :math:`W_{dec}` [d_sae, d_in] are the dictionary atoms (the columns of
  :math:`D = W_{dec}^\top`); training keeps them at unit norm.
* Options of the paper's recipe (:mod:`abstopk_mini.recipes`), off by default:
  ``use_b_enc=False`` drops the encoder bias (:math:`u = (s\,x - b_{dec}) W_{enc}`) and
  ``input_unit_norm=True`` standardises each token before the scale,
  :math:`x \mapsto s\,(x - \mu(x)) / (\sigma(x) + \varepsilon)`, and undoes it after decoding,
  :math:`\hat x = \sigma(x)\,(z W_{dec} + b_{dec}) / s + \mu(x)` (see :func:`standardize`).

Files: ``save(dir)`` writes ``cfg.json`` and ``sae_weights.safetensors`` with SAELens key names
(``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_in], ``b_enc``, ``b_dec``, ``threshold``) and an
``architecture`` field that uses SAELens names where they exist. ``SAE.load(dir)`` round-trips
bit for bit. For a directory that SAELens itself loads, see :mod:`abstopk_mini.interop`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .decoder_norm import normalize_rows, remove_parallel
from .device import get_device
from .forward import DenseCode, TrainOutput, check_input
from .io import atomic_write
from .limits import check_memory, check_seed
from .nonlinearities import ACTIVATIONS, SPECS, activation_named, check_threshold_settings, make_activation, spec
from .untrusted import (check_floating_finite, check_input_scale, check_shapes, check_size, read_json, saved_shapes,
                        tensor_header)

__all__ = ["SAEConfig", "SAE", "SAEOutput", "ACTIVATIONS", "ARCHITECTURES", "DTYPES", "WEIGHTS_FILE", "CONFIG_FILE", "read_config", "standardize",
           "STANDARDIZE_EPS", "ADDED_FIELDS"]

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
FORMAT = "abstopk_mini/1"

#: our activation name -> the ``architecture`` written to cfg.json (SAELens names where they exist);
#: a view of :data:`abstopk_mini.nonlinearities.SPECS`
ARCHITECTURES = {name: s.architecture for name, s in SPECS.items()}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: ε of the per-token standardisation: the paper's code and SAELens's ``normalize_activations="layer_norm"``
STANDARDIZE_EPS = 1e-5
#: fields added after the first file format -> their default (today's behaviour). ``SAEConfig.to_dict``
#: leaves a field out while it has this value, so content-addressed keys of earlier runs do not change.
#: key_dict's values of the fields an activation never reads: the defaults its stored keys were made with
UNREAD_THRESHOLD_FIELDS = {"threshold_init": 1e-3, "bandwidth": 1e-3}
ADDED_FIELDS = {"use_b_enc": True, "input_unit_norm": False, "enc_init_scale": 1.0, "recipe": None}


def standardize(x: torch.Tensor, eps: float = STANDARDIZE_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-token standardisation: :math:`(x - \mu) / (\sigma + \varepsilon)` over the last dim.

    :math:`\mu` is the mean of the token's d entries and :math:`\sigma` the *unbiased* standard
    deviation (``torch.std``, divisor d − 1) of :math:`x - \mu`; the inverse map is
    :math:`y \mapsto y\,\sigma + \mu` (without ε, so it inverts to within a factor
    :math:`\sigma / (\sigma + \varepsilon)`). This is ``preprocess_input`` / ``postprocess_output``
    of the paper's code (``input_unit_norm``) and SAELens's ``normalize_activations="layer_norm"``,
    operation for operation.

    shape: x [..., d] -> (x_std [..., d], mu [..., 1], sigma [..., 1])
    """
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    sigma = xc.std(dim=-1, keepdim=True)
    return xc / (sigma + eps), mu, sigma


@dataclass
class SAEConfig:
    """Everything needed to rebuild an SAE (written to ``cfg.json``).

    d_in: width of the activations; d_sae: number of latents; activation: one of
    ``ACTIVATIONS``; k: non-zeros per row for the top-k family (``topk``, ``abstopk``,
    ``batchtopk``, ``batchabstopk``; average per row for the batch ones); for ``relu`` and
    the JumpReLUs, k is optional and is the L0 that training steers the penalty towards
    (so every activation can be compared at the same k).
    threshold_init, bandwidth: JumpReLU threshold at init (when training does not start it at the
    target L0, :mod:`abstopk_mini.sparsity`) and STE kernel width ε, in units of the scaled input
    (pre-activations are O(1); 0.2 measured best of 1e-3, 0.05, 0.2: :mod:`abstopk_mini.sparsity`). input_scale: s in x -> s·x (see module docstring). The provenance fields
    (which model, hook and layer the SAE reads) are stored, never interpreted.

    The options of :mod:`abstopk_mini.recipes` (defaults = the behaviour before they existed):

    * ``use_b_enc``: True: u = (s·x − b_dec) W_enc + b_enc, b_enc trained. False: u = (s·x − b_dec) W_enc;
      b_enc is a buffer of zeros (not trained), saved as zeros so SAELens files still load.
    * ``input_unit_norm``: False: x_in = s·x. True: x_in = s·(x − μ)/(σ + ε) per token, μ, σ the mean
      and unbiased std of the token over d_in, ε = ``STANDARDIZE_EPS``; the training loss is measured
      on x_in and the SAE's output returns to the raw space, x̂ = σ·(z W_dec + b_dec)/s + μ.
    * ``enc_init_scale``: c in W_enc = c·W_decᵀ at initialisation (1: W_enc = W_decᵀ, unit columns).
    * ``recipe``: the name of the preset the config was built from (``"ours"``, ``"paper"``), or None;
      a label, not read by the SAE.
    """

    d_in: int
    d_sae: int
    activation: str = "abstopk"
    k: int | None = None
    threshold_init: float = 1e-3
    bandwidth: float = 0.2
    input_scale: float = 1.0
    dtype: str = "float32"
    device: str | None = None
    seed: int = 0
    model_name: str | None = None
    hook_name: str | None = None
    hook_layer: int | None = None
    context_size: int | None = None
    metadata: dict = field(default_factory=dict)
    use_b_enc: bool = True
    input_unit_norm: bool = False
    enc_init_scale: float = 1.0
    recipe: str | None = None

    def __post_init__(self):
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SAEConfig.{name} must be a positive int; got {value!r}")
        if self.activation not in SPECS:
            raise ValueError(
                f"SAEConfig.activation={self.activation!r} is not known; choose one of "
                f"{sorted(SPECS)}"
            )
        if SPECS[self.activation].k_based and self.k is None:
            raise ValueError(f"activation={self.activation!r} needs k (non-zeros per row); got k=None")
        if self.k is not None:
            if isinstance(self.k, bool) or not isinstance(self.k, int):
                raise TypeError(f"SAEConfig.k must be an int; got {type(self.k).__name__} {self.k!r}")
            if not 1 <= self.k <= self.d_sae:
                raise ValueError(f"SAEConfig.k must satisfy 1 <= k <= d_sae={self.d_sae}; got k={self.k}")
        if self.dtype not in DTYPES:
            raise ValueError(f"SAEConfig.dtype={self.dtype!r}; choose one of {sorted(DTYPES)}")
        if not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"SAEConfig.input_scale must be a positive finite number; got {self.input_scale}")
        check_threshold_settings(self.threshold_init, self.bandwidth, where="SAEConfig.")
        check_seed(self.seed, "SAEConfig.seed")
        self._check_recipe_fields()

    def _check_recipe_fields(self) -> None:
        for name in ("use_b_enc", "input_unit_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"SAEConfig.{name} must be True or False; got {getattr(self, name)!r}")
        c = self.enc_init_scale
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and c > 0):
            raise ValueError(f"SAEConfig.enc_init_scale must be a positive finite number (1 = W_enc = W_decᵀ); got {c!r}")
        if self.recipe is not None and not isinstance(self.recipe, str):
            raise TypeError(f"SAEConfig.recipe must be a preset name (str) or None; got {self.recipe!r}")

    @property
    def spec(self):
        """The :class:`~abstopk_mini.nonlinearities.ActivationSpec` of ``activation``."""
        return spec(self.activation)

    @property
    def architecture(self) -> str:
        return self.spec.architecture

    @property
    def signed(self) -> bool:
        """True for the activations that keep negative values (no nonnegativity constraint)."""
        return self.spec.signed

    def to_dict(self) -> dict:
        """The fields as a dict, minus those of ``ADDED_FIELDS`` still at their default (the base of
        :meth:`key_dict`, unchanged for configs that do not use the newer options).
        ``SAE.save`` writes every field (:meth:`to_full_dict`)."""
        d = dataclasses.asdict(self)
        for name, default in ADDED_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    def key_dict(self) -> dict:
        """:meth:`to_dict` with fields it never reads at ``UNREAD_THRESHOLD_FIELDS``: what stored SAEs are keyed and checked by."""
        return self.to_dict() | ({} if self.spec.threshold_based else UNREAD_THRESHOLD_FIELDS)

    def to_full_dict(self) -> dict:
        """Every field (what ``cfg.json`` records)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SAEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in d.items() if key in names})


def read_config(path: Path, what: str) -> object:
    """The parsed ``cfg.json`` of an SAE directory (ours or SAELens's: ``what`` names it in errors),
    after checking that ``path`` is a directory holding both files."""
    if not path.is_dir():
        raise FileNotFoundError(f"path={str(path)!r} is not a directory holding {what} ({CONFIG_FILE} + {WEIGHTS_FILE})")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing; the directory of {what} holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    return read_json(path / CONFIG_FILE, f"re-save {what}")


#: what :meth:`SAE.forward_train` returns, on either path (:class:`~abstopk_mini.forward.TrainOutput`)
SAEOutput = TrainOutput


class SAE(nn.Module):
    """A sparse autoencoder; see the module docstring for the maths.

    Parameters: ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec`` [d_sae, d_in],
    ``b_dec`` [d_in]; the activation module (``self.act``) may hold ``threshold``.
    Initialisation: unit-norm random decoder rows, ``W_enc = W_dec.T``, zero biases.
    """

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        device = torch.device(cfg.device) if cfg.device else get_device()
        dtype = DTYPES[cfg.dtype]
        # before anything is allocated: the float64 draw and the two weight matrices must fit
        check_memory(cfg.d_sae * cfg.d_in * (8 + 2 * torch.finfo(dtype).bits // 8),
                     f"an SAE with d_in={cfg.d_in} and d_sae={cfg.d_sae:,}", "choose a smaller d_sae", device)
        gen = torch.Generator().manual_seed(cfg.seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen, dtype=torch.float64)
        W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(dtype)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone() if cfg.enc_init_scale == 1 else W_dec.T * cfg.enc_init_scale)
        if cfg.use_b_enc:
            self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        else:  # u = (s·x − b_dec) W_enc: b_enc stays zero (a buffer, so no optimiser sees it)
            self.register_buffer("b_enc", torch.zeros(cfg.d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype))
        self.act = make_activation(cfg).to(dtype)
        #: top-k family: ``forward`` and ``forward_train(fast=True)`` take the sparse kernels
        #: (abstopk_mini.kernels.fast); False: always the dense reference (an SAE whose encoder they do not implement)
        self.fast = True
        self.to(device)

    # ------------------------------------------------------------------ the maps
    @property
    def k(self) -> int | None:
        return self.cfg.k

    @property
    def threshold(self) -> torch.Tensor | None:
        """The learned threshold (JumpReLU: [d_sae]; batch top-k: a scalar), or None."""
        return getattr(self.act, "threshold", None)

    def input_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(μ, σ) of each token when ``cfg.input_unit_norm`` (see :func:`standardize`), else None.

        shape: x [..., d_in] -> (mu [..., 1], sigma [..., 1]) or None
        """
        if not self.cfg.input_unit_norm:
            return None
        _, mu, sigma = standardize(x.to(self.W_enc.dtype))
        return mu, sigma

    def to_sae_space(self, x: torch.Tensor) -> torch.Tensor:
        """x_in = s·x, or s·(x − μ)/(σ + ε) with ``cfg.input_unit_norm``: the space the SAE codes,
        reconstructs and is trained in.  shape: x [..., d_in] (raw) -> x_in [..., d_in]"""
        x = x.to(self.W_enc.dtype)
        if self.cfg.input_unit_norm:
            x = standardize(x)[0]
        return x * self.cfg.input_scale

    def from_sae_space(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The inverse of :meth:`to_sae_space`: y / s, then ·σ + μ with ``cfg.input_unit_norm``.

        stats: ``input_stats(x)`` of the raw input (required with ``input_unit_norm``).
        shape: y [..., d_in] -> [..., d_in] (raw space)
        """
        y = y / self.cfg.input_scale
        if stats is not None:
            return y * stats[1] + stats[0]
        if self.cfg.input_unit_norm:
            raise ValueError(
                "stats=None, but this SAE standardises each token (cfg.input_unit_norm=True), so the way back to "
                "the raw space needs that token's mean and std: pass stats=sae.input_stats(x), or use sae(x)"
            )
        return y

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """u = (x_in − b_dec) W_enc + b_enc with x_in = :meth:`to_sae_space` (x) (b_enc ≡ 0 without
        ``cfg.use_b_enc``).  shape: x [..., d_in] (raw) -> u [..., d_sae]"""
        check_input(x, self.cfg)
        x = self.to_sae_space(x)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = σ(u).  shape: x [..., d_in] (raw activations) -> z [..., d_sae]"""
        return self.act(self.pre_acts(x))

    def decode(self, z: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x̂ = (z W_dec + b_dec) / s in the raw space; with ``cfg.input_unit_norm``,
        x̂ = σ·(z W_dec + b_dec)/s + μ, which needs ``stats = sae.input_stats(x)`` of the input
        the code came from (a ValueError says so when it is missing).

        shape: z [..., d_sae] -> x_hat [..., d_in] (raw space)
        """
        return self.from_sae_space(z @ self.W_dec + self.b_dec, stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the raw space.  shape: x [..., d_in] -> x_hat [..., d_in]

        For the top-k family with ``self.fast`` (default) this is :func:`abstopk_mini.kernels.fast.reconstruct`
        (same result, no dense z); ``sae.fast = False`` takes ``decode(encode(x), input_stats(x))``.
        """
        if self.fast and self.cfg.spec.k_based:
            from .kernels.fast import reconstruct

            return reconstruct(self, x)
        return self.decode(self.encode(x), self.input_stats(x))

    def forward_train(self, x: torch.Tensor, sync=None, fast: bool = False) -> TrainOutput:
        """Encode and decode in the SAE's space (:meth:`to_sae_space`), keeping what the losses need;
        x_hat is *not* mapped back to the raw space. One output type whichever kernel runs.

        fast: True takes the sparse kernels (:func:`abstopk_mini.kernels.fast.forward_train`: no
        dense z, same values and gradients) where they serve this SAE, the top-k family with
        ``self.fast``; :func:`~abstopk_mini.train.train_sae` passes ``TrainConfig.fast`` here. The
        default is the dense reference path, the oracle the kernels are tested against. sync: a
        :class:`~abstopk_mini.distributed.Sync` (one rank of a DDP run: the batch variants' budget
        is global on the sparse path).

        shape: x [B, d_in] -> TrainOutput(x_in [B, d_in], u [B, d_sae], code [B, d_sae], x_hat [B, d_in])
        """
        if fast and self.fast and self.cfg.spec.k_based:
            from .kernels.fast import forward_train

            return forward_train(self, x, sync)
        u = self.pre_acts(x)
        z = self.act(u)
        x_in = self.to_sae_space(x)
        return TrainOutput(x_in, u, DenseCode(z), z @ self.W_dec + self.b_dec)

    # ------------------------------------------------------------------ decoder geometry
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale each decoder row (atom) to unit norm (:func:`~abstopk_mini.decoder_norm.normalize_rows`)."""
        normalize_rows(self.W_dec)

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Remove from W_dec.grad the component along each row, which only changes its norm
        (:func:`~abstopk_mini.decoder_norm.remove_parallel`; ``self._scratch`` keeps its work tensor)."""
        if self.W_dec.grad is not None:
            self._scratch = remove_parallel(self.W_dec, self.W_dec.grad, getattr(self, "_scratch", None))

    @torch.no_grad()
    def post_step(self) -> None:
        """Constraints applied after each optimiser step (unit atoms, thresholds >= 0)."""
        self.normalize_decoder()
        if hasattr(self.act, "post_step"):
            self.act.post_step()

    # ------------------------------------------------------------------ files
    def state_for_saving(self) -> dict[str, torch.Tensor]:
        """The tensors written to ``sae_weights.safetensors`` (SAELens key names)."""
        state = {
            "W_enc": self.W_enc.detach(),
            "W_dec": self.W_dec.detach(),
            "b_enc": self.b_enc.detach(),
            "b_dec": self.b_dec.detach(),
        }
        if self.threshold is not None:
            state["threshold"] = self.threshold.detach()
        return {key: value.contiguous().cpu() for key, value in state.items()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` into directory ``path`` (created).

        Each file is written to a temporary name and renamed, so an interrupted save never
        leaves a half-written file behind.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"path={str(path)!r} is a file; SAE.save needs a directory path")
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg.to_full_dict() | {"device": None, "architecture": self.cfg.architecture, "format": FORMAT}
        atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(self.state_for_saving(), tmp))
        atomic_write(path / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2)))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> "SAE":
        """Load an SAE written by :meth:`save`, in ``eval()`` mode (batch variants then use the
        stored threshold row by row). Checks, before anything is allocated: cfg.json is a JSON object
        whose ``activation`` and ``architecture`` agree (a missing activation is read from the
        architecture, never defaulted), its input scale is usable (:func:`check_input_scale`), the
        tensors' shapes in the file's header are those cfg.json needs and fit in memory; then every
        tensor must be floating-point and finite."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        raw = read_config(path, "an SAE")
        if not isinstance(raw, dict):
            raise ValueError(f"{path / CONFIG_FILE} holds a JSON {type(raw).__name__}, not an object of SAE "
                             "settings; the file is not an SAE config — re-save or re-train the SAE")
        if raw.get("format") != FORMAT:
            raise ValueError(
                f"{path / CONFIG_FILE} has format={raw.get('format')!r}, not {FORMAT!r}; for a SAELens "
                "directory use abstopk_mini.interop.from_saelens(path)"
            )
        raw = dict(raw, activation=activation_named(raw.get("activation"), raw.get("architecture"), path / CONFIG_FILE))
        check_input_scale(raw.get("input_scale", 1.0), raw.get("dtype"), path / CONFIG_FILE)
        try:
            cfg = SAEConfig.from_dict(raw)
        except (TypeError, ValueError) as err:  # a required field (d_in, d_sae) is missing, or a value is invalid
            raise ValueError(f"{path / CONFIG_FILE} does not describe an SAE ({err}); re-save or re-train the SAE") from err
        if device is not None:
            cfg.device = str(device)
        fix, weights = "re-save or re-train the SAE", path / WEIGHTS_FILE
        header = tensor_header(weights, fix)
        check_shapes(weights, header, saved_shapes(cfg), fix=fix, what=f"its cfg.json (d_in={cfg.d_in}, "
                     f"d_sae={cfg.d_sae}, activation={cfg.activation!r})")
        check_size(weights, header, fix=fix)
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{weights} could not be read ({err}); the file is truncated or corrupt — {fix}") from err
        check_floating_finite(weights, state, fix="re-train it")
        sae = cls(cfg)
        with torch.no_grad():
            for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
                getattr(sae, key).copy_(state[key])
            if "threshold" in state:
                sae.threshold.copy_(state["threshold"])
        return sae.eval()

    def extra_repr(self) -> str:
        k = f", k={self.cfg.k}" if self.cfg.k is not None else ""
        return f"d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}, activation={self.cfg.activation!r}{k}"
