"""Reading files that may be damaged or hostile: JSON and safetensors, checked before they are used.

Nothing here unpickles. Each reader turns what can go wrong with a file (missing, not text,
not JSON, nested past Python's recursion limit, a tensor header that does not parse, shapes or
sizes that do not fit, non-floating or non-finite values) into one ``ValueError`` /
``FileNotFoundError`` that names the file and ends with ``fix`` (what the caller's user should do).

* :func:`read_json` — a JSON file (any value), or a clear error.
* :func:`tensor_header` — ``{key: (dtype, shape)}`` of a safetensors file, read from its header
  without loading a tensor (so shapes are checked before anything is allocated).
* :func:`check_shapes` — a header against the shapes a config needs.
* :func:`check_size` — refuse a tensor set too large for this machine's memory.
* :func:`check_floating_finite` — every tensor floating-point and finite.
* :func:`saved_shapes`, :func:`check_input_scale` — what an SAE's files must hold.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

__all__ = ["read_json", "tensor_header", "check_shapes", "check_size", "check_floating_finite", "physical_memory_bytes",
           "saved_shapes", "check_input_scale"]

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def read_json(path: str | os.PathLike, fix: str) -> object:
    """The parsed JSON value of ``path``; FileNotFoundError / ValueError naming the file and ``fix``."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; {fix}") from None
    except (UnicodeDecodeError, IsADirectoryError) as err:
        raise ValueError(f"{path} is not a JSON text file ({err}); {fix}") from err
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{path} nests JSON arrays/objects too deeply to be a config; {fix}") from None
    except ValueError as err:  # JSONDecodeError
        raise ValueError(f"{path} is not valid JSON ({err}); {fix}") from err


def tensor_header(path: str | os.PathLike, fix: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{key: (safetensors dtype such as "F32", shape)}`` of a safetensors file, from its header only."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {}
            for key in f.keys():
                sl = f.get_slice(key)
                out[key] = (sl.get_dtype(), tuple(int(n) for n in sl.get_shape()))
            return out
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} could not be read as a safetensors file ({err}); the file is truncated or "
                         f"corrupt — {fix}") from err


def check_shapes(path, header: dict, required: dict, optional: dict | None = None, *, fix: str, what: str = "") -> None:
    """Refuse a header whose tensors are not exactly ``required`` (key -> shape), plus any of ``optional``."""
    optional = optional or {}
    missing = sorted(set(required) - set(header))
    extra = sorted(set(header) - set(required) - set(optional))
    wrong = {key: header[key][1] for key in header
             if key in required | optional and header[key][1] != tuple((required | optional)[key])}
    if missing or extra or wrong:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else []) + \
                [f"{key} has shape {tuple(shape)}, {what or 'the config'} needs {tuple((required | optional)[key])}"
                 for key, shape in wrong.items()]
        raise ValueError(f"{path}: the tensors do not fit {what or 'the config'}: {'; '.join(parts)}. "
                         f"The files do not belong together — {fix}")


def physical_memory_bytes() -> int | None:
    """This machine's RAM in bytes, or None where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def check_size(path, header: dict, *, fix: str, factor: float = 3.0) -> None:
    """Refuse tensors whose loading (about ``factor`` x their bytes: file, float64 copies, the SAE)
    would not fit this machine's memory."""
    n_bytes = sum(math.prod(shape) * _ITEMSIZE.get(dtype, 8) for dtype, shape in header.values())
    ram = physical_memory_bytes()
    if ram is not None and n_bytes * factor > ram:
        raise ValueError(f"{path} holds {n_bytes / 2**30:.3g} GiB of tensors; loading them needs about "
                         f"{factor:g}x that, more than this machine's {ram / 2**30:.3g} GiB of memory — {fix}")


def check_floating_finite(path, state: dict[str, torch.Tensor], *, fix: str) -> None:
    """Refuse a tensor that is not floating-point or holds NaN / inf."""
    for key, value in state.items():
        if not value.is_floating_point():
            raise ValueError(f"{path}: tensor {key!r} has dtype {value.dtype}, not a floating dtype; the file is not "
                             f"an SAE's weights — {fix}")
        if not torch.isfinite(value).all():
            n_bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{path}: tensor {key!r} holds {n_bad} non-finite values (NaN/inf) of {value.numel()}; "
                             f"the SAE is broken — {fix}")


def saved_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The shapes of the tensors :meth:`abstopk_mini.sae.SAE.save` writes for an SAEConfig ``cfg``
    (computed: nothing is allocated, so it can be checked before a huge config is built)."""
    shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in), "b_enc": (cfg.d_sae,), "b_dec": (cfg.d_in,)}
    if cfg.spec.threshold_based or cfg.spec.per_batch:  # JumpReLUs: θ per latent; batch top-k: one θ
        shapes["threshold"] = () if cfg.spec.per_batch else (cfg.d_sae,)
    return shapes


def check_input_scale(scale, dtype: str, where) -> None:
    """Refuse an input scale s that is not a number in the range where s² neither overflows nor
    underflows (float32's range for the 16- and 32-bit dtypes, float64's for float64): outside
    it the SAE's outputs are not finite, so the value was not set by training."""
    dtype = dtype if dtype in ("float64", "float16", "bfloat16") else "float32"
    finfo = torch.finfo(torch.float64 if dtype == "float64" else torch.float32)
    low, high = math.sqrt(finfo.tiny), math.sqrt(finfo.max)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not low <= scale <= high:
        raise ValueError(f"{where}: input_scale={scale!r} is not a usable scale for a {dtype} SAE (a finite number in "
                         f"[{low:.3g}, {high:.3g}]); the file was edited or damaged — re-save or re-train the SAE")
