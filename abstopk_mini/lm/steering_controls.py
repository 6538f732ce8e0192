r"""Steering controls: is "one AbsTopK latent steers both ways" specific to AbsTopK?

Clamping a latent that is almost always zero to :math:`c` adds :math:`c\, d_i` to the residual
stream (:mod:`abstopk_mini.lm.steering`), and adding :math:`\pm c\, v` moves the female-vs-male
log-odds both ways for almost any direction :math:`v` (to first order the shift is linear in
:math:`c`). So the clamp is compared with other directions added at the same layer, the same
values and the same length of move (:func:`standard_controls`):

* ``abstopk_clamp``: :math:`x + (o c - z_i(x))\, d_i`, the AbsTopK latent :math:`i` clamped to
  :math:`o c`; where the latent is zero (almost everywhere) this is :math:`x + o c\, d_i`.
* ``topk_add``: :math:`x + c\, \rho\, \hat d_j`, TopK's female latent :math:`j` *added* (a
  nonnegative latent cannot be clamped below 0; :math:`c < 0` adds the male side by negation).
* ``dim``: :math:`x + c\, \rho\, \hat u`, Difference-in-Means, :math:`u` = mean(female) − mean(male).
* ``random_s{s}``: :math:`x + c\, \rho\, \hat r`, :math:`\hat r` uniform on the sphere (seed s).
* ``random_cos_s{s}``: :math:`x + c\, \rho\, (\cos\theta\, \hat u + \sin\theta\, \hat w)`,
  :math:`\hat w \perp \hat u` uniform (seed s), :math:`\cos\theta = \cos(o\, d_i, u)`: a random
  direction exactly as aligned with DiM as the latent is.

**Matched norm.** :math:`\rho = \|d_i\|`, where :math:`d_i = W_{dec}[i]/s` is the AbsTopK latent's
decoder direction in the model's raw space (:func:`~abstopk_mini.lm.steering.decoder_direction`;
:math:`s` = ``cfg.input_scale``), and :math:`\hat v = v/\|v\|`. At value :math:`c` every added
direction moves :math:`x` by :math:`|c|\, \rho = \|c\, d_i\|`, the length of the move of clamping the
latent from 0 to :math:`c`. (TopK's own row :math:`c\, d_j` would move :math:`x` by
:math:`|c|\,\|d_j\|`, another length; here it is rescaled.) **Orientation** :math:`o = \pm 1`
makes :math:`c > 0` mean "towards female" for the clamp too: by default
:math:`o = \operatorname{sign}\langle d_i, u\rangle`.

**Measure** (:func:`steering_controls`). With :math:`\ell_{pk}` the log-odds
:math:`\log p(f_k) - \log p(m_k)` of the next token after prompt :math:`p` for pair :math:`k`
(:func:`~abstopk_mini.lm.steering.prompt_log_odds`), the shift of prompt :math:`p` is
:math:`s_p(c) = \frac1K \sum_k [\ell_{pk}(c) - \ell_{pk}(\text{none})]`. Reported per method and
value: the mean over prompts :math:`\bar s` and a 95 % interval over prompts — the prompts are
the units; the pairs share a prompt's forward pass, so they are averaged inside it. The interval
is Student's t by default, :math:`\bar s \pm t_{0.975,\,P-1}\, \mathrm{sd}(s)/\sqrt P`
(deterministic; needs :math:`P \ge 2`, else NaN), or a percentile bootstrap over prompts
(``interval="bootstrap"``: ``n_boot`` resamples from a generator seeded with ``seed``; the same
resamples for every cell). The same numbers for the headline pair (she/he) alone are
``headline_*``.

Cost: one forward pass of the whole prompt batch per (method, value), plus one without any edit.

    methods = standard_controls(sae_abs, i, sae_topk, j, dim, layer=6, n_random=3, seed=0)
    result = steering_controls(loaded, layer=6, methods=methods, values=[-20, -10, 10, 20])
    print(result.table())
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from ..tables import format_table
from .hooks import layer_of, require_loaded
from .steering import (DEFAULT_PAIRS, DEFAULT_PROMPTS, Intervention, add_direction, check_latent, clamp_latent,
                       decoder_direction, prompt_log_odds, token_pairs)

__all__ = [
    "random_direction", "random_direction_with_cosine", "ControlMethod", "standard_controls",
    "mean_interval", "ControlsResult", "steering_controls", "format_controls",
]


# --------------------------------------------------------------------------- directions
def _seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int; got {seed!r}")
    return seed


def _positive(value, name: str) -> float:
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return out


def _vector(v, name: str) -> torch.Tensor:
    """``v`` as a float64 1-D tensor of finite, not all zero entries."""
    if not isinstance(v, torch.Tensor) or v.dim() != 1:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"{name} must be a 1-D tensor [d]; got {got}")
    v = v.detach().to("cpu", torch.float64)
    if not torch.isfinite(v).all() or not v.any():
        raise ValueError(f"{name} must be finite and non-zero; pass a direction such as a DiM vector")
    return v


def random_direction(d: int, norm: float, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A direction uniform on the sphere of radius ``norm`` in R^d: norm · r/‖r‖, r ~ N(0, I_d)
    drawn from a CPU generator seeded with ``seed`` (the same seed, the same direction).

    shape: -> [d]
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be a positive int (the model's d_model); got {d!r}")
    norm, seed = _positive(norm, "norm"), _seed(seed)
    r = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (r * (norm / r.norm())).to(dtype)


def random_direction_with_cosine(reference: torch.Tensor, norm: float, cosine: float, seed: int,
                                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""A random direction of length ``norm`` at cosine ``cosine`` to ``reference``:

    .. math:: v = \text{norm}\,(\cos\theta\, \hat u + \sin\theta\, \hat w), \qquad
              \hat u = u/\|u\|,\ \hat w \perp \hat u,\ \sin\theta = \sqrt{1 - \cos^2\theta}

    where :math:`\hat w` is uniform on the unit sphere of the complement of :math:`u` (a seeded
    Gaussian draw, projected off :math:`\hat u` twice — one Gram–Schmidt pass leaves an
    :math:`O(\varepsilon)` component — and normalised). In float64, ``‖v‖`` and ``cos(v, u)``
    match to about 1e-15.

    shape: reference [d] -> [d]
    """
    u = _vector(reference, "reference")
    cosine = float(cosine)
    if not math.isfinite(cosine) or abs(cosine) > 1:
        raise ValueError(f"cosine must be a number in [-1, 1]; got {cosine!r}")
    if len(u) < 2:
        raise ValueError(f"reference must have at least 2 entries (a direction orthogonal to it is needed); "
                         f"got {len(u)}")
    norm, seed = _positive(norm, "norm"), _seed(seed)
    u = u / u.norm()
    w = torch.randn(len(u), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for _ in range(2):
        w = w - (w @ u) * u
    w = w / w.norm()
    return (norm * (cosine * u + math.sqrt(max(0.0, 1.0 - cosine * cosine)) * w)).to(dtype)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


# --------------------------------------------------------------------------- methods
@dataclass(frozen=True, eq=False)
class ControlMethod:
    """A steering method: ``method(c)`` is the Intervention at value c.

    ``direction`` [d_model]: the move per unit of c (for a clamp, where the latent is zero: o·d_i);
    ``info``: a JSON-able description (kind, norm of the move per unit c, cosine to DiM, seed).
    """

    make: Callable[[float], Intervention]
    direction: torch.Tensor
    info: dict = field(default_factory=dict)

    def __call__(self, value: float) -> Intervention:
        return self.make(value)


def _add_method(v: torch.Tensor, layer: int, dim_u: torch.Tensor, **info) -> ControlMethod:
    info = {"kind": "add", "norm": float(v.norm()), "cos_dim": _cos(v, dim_u)} | info
    return ControlMethod(lambda c: add_direction(v, c, layer), v, info)


def standard_controls(sae_abs, latent_abs: int, sae_topk, latent_topk_female: int, dim: torch.Tensor,
                      layer: int | None = None, *, n_random: int = 3, seed: int = 0,
                      orientation: int | None = None) -> dict[str, ControlMethod]:
    """The controls of the module docstring, all at matched norm ρ = ‖d_i‖ (d_i =
    ``decoder_direction(sae_abs, latent_abs)``): name -> :class:`ControlMethod`, in the order
    ``abstopk_clamp``, ``topk_add``, ``dim``, ``random_s{seed + k}`` and ``random_cos_s{seed +
    n_random + k}`` for k < ``n_random`` (the two kinds of random direction use different seeds,
    so they are independent draws).

    dim [d_model]: DiM, mean(female) − mean(male) in the model's raw space. layer: the block both
    SAEs read (default: their ``cfg.hook_layer``). orientation: ±1, the sign o with which the
    AbsTopK latent's value is clamped (o = +1: its positive side is female); None infers
    o = sign⟨d_i, dim⟩ (+1 at 0).
    """
    check_latent(sae_abs, latent_abs)
    check_latent(sae_topk, latent_topk_female)
    try:
        layer = layer_of(sae_abs, layer)
    except ValueError as err:
        raise ValueError(f"sae_abs: {err}") from None
    try:
        layer_of(sae_topk, layer)
    except ValueError as err:
        raise ValueError(f"sae_topk: {err}; both SAEs must read the same layer") from None
    u = _vector(dim, "dim")
    d_abs, d_top = sae_abs.cfg.d_in, sae_topk.cfg.d_in
    if not d_abs == d_top == len(u):
        raise ValueError(f"dims differ: sae_abs.cfg.d_in={d_abs}, sae_topk.cfg.d_in={d_top}, len(dim)={len(u)}; "
                         "pass SAEs and a DiM vector of the same model and layer")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be an int >= 0; got {n_random!r}")
    seed = _seed(seed)
    d_i = decoder_direction(sae_abs, latent_abs).double()
    rho = float(d_i.norm())
    if orientation is None:
        orientation = 1 if float(d_i @ u) >= 0 else -1
    elif orientation not in (1, -1):
        raise ValueError(f"orientation must be +1, -1 or None (infer from DiM); got {orientation!r}")
    o = orientation
    clamp = ControlMethod(lambda c: clamp_latent(sae_abs, latent_abs, o * c, layer), o * d_i,
                          {"kind": "clamp", "norm": rho, "cos_dim": _cos(o * d_i, u), "latent": latent_abs,
                           "orientation": o})
    d_j = decoder_direction(sae_topk, latent_topk_female).double()
    methods = {"abstopk_clamp": clamp,
               "topk_add": _add_method(rho * d_j / d_j.norm(), layer, u, latent=latent_topk_female,
                                       raw_norm=float(d_j.norm())),
               "dim": _add_method(rho * u / u.norm(), layer, u)}
    for k in range(n_random):
        s = seed + k
        methods[f"random_s{s}"] = _add_method(random_direction(len(u), rho, s), layer, u, seed=s)
    cos_target = clamp.info["cos_dim"]
    for k in range(n_random):
        s = seed + n_random + k
        methods[f"random_cos_s{s}"] = _add_method(random_direction_with_cosine(u, rho, cos_target, s), layer, u, seed=s)
    return methods


# --------------------------------------------------------------------------- statistics
def mean_interval(x: torch.Tensor, level: float = 0.95, method: str = "t", n_boot: int = 10_000,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over the last dim and a ``level`` interval for it: ``(mean, low, high)``.

    method ``"t"``: mean ± t_{(1+level)/2, P−1} · sd/√P (sd with P − 1; NaN when P = 1).
    ``"bootstrap"``: the (1 − level)/2 and (1 + level)/2 quantiles of the means of ``n_boot``
    resamples with replacement of the P entries (a CPU generator seeded with ``seed``; the same
    resamples for every leading index).

    shape: x [..., P] -> three [...] float64
    """
    if not 0 < float(level) < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    x = x.double()
    P = x.shape[-1]
    if P == 0:
        raise ValueError("x has no entries along its last dim; pass at least one prompt")
    mean = x.mean(-1)
    if method == "t":
        if P == 1:
            nan = torch.full_like(mean, float("nan"))
            return mean, nan, nan.clone()
        from scipy.stats import t as student_t

        half = float(student_t.ppf((1 + level) / 2, P - 1)) * x.std(-1, correction=1) / math.sqrt(P)
        return mean, mean - half, mean + half
    if method == "bootstrap":
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
            raise ValueError(f"n_boot must be a positive int; got {n_boot!r}")
        idx = torch.randint(P, (n_boot, P), generator=torch.Generator().manual_seed(_seed(seed)))
        weights = torch.zeros(n_boot, P, dtype=torch.float64).scatter_add_(1, idx, torch.ones(n_boot, P,
                                                                                   dtype=torch.float64)) / P
        means = x @ weights.T  # [..., n_boot]: resample b's mean = Σ_p (count_bp / P) x_p
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
        low, high = torch.quantile(means, q, dim=-1)
        return mean, low, high
    raise ValueError(f"method (interval) must be 't' or 'bootstrap'; got {method!r}")


# --------------------------------------------------------------------------- the experiment
@dataclass
class ControlsResult:
    """Female-vs-male log-odds shifts per method and value (module docstring).

    shape: shift, low, high [M, V] (mean over prompts of the per-prompt shift, and its interval);
    per_prompt [M, V, P]; headline_shift, headline_low, headline_high [M, V] and
    headline_per_prompt [M, V, P]: the headline pair alone (None when it is not a single-token
    pair of this tokenizer). baseline: mean log-odds without an edit over prompts and pairs;
    baseline_headline: the headline pair's.
    """

    methods: list[str]
    values: list[float]
    layer: int
    prompts: list[str]
    pairs: list[tuple[str, str]]
    shift: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    per_prompt: torch.Tensor
    baseline: float
    headline: tuple[str, str] | None
    headline_shift: torch.Tensor | None
    headline_low: torch.Tensor | None
    headline_high: torch.Tensor | None
    headline_per_prompt: torch.Tensor | None
    baseline_headline: float | None
    interval: str
    level: float
    n_boot: int | None
    seed: int | None
    info: dict = field(default_factory=dict)
    labels: list[list[str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        """JSON-able: tensors as nested lists, NaN (a t interval from one prompt) as None."""
        return _jsonable(dataclasses.asdict(self))

    def rows(self) -> list[dict]:
        """One dict per (method, value): method, value, shift, low, high (+ headline_* if any)."""
        out = []
        for a, name in enumerate(self.methods):
            for b, c in enumerate(self.values):
                row = {"method": name, "value": c, "shift": self.shift[a, b].item(),
                       "low": self.low[a, b].item(), "high": self.high[a, b].item()}
                if self.headline_shift is not None:
                    row |= {"headline_shift": self.headline_shift[a, b].item(),
                            "headline_low": self.headline_low[a, b].item(),
                            "headline_high": self.headline_high[a, b].item()}
                out.append(row)
        return out

    def table(self, style: str = "text", digits: int = 3) -> str:
        return format_controls(self, style=style, digits=digits)


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def steering_controls(model, *, layer: int, methods: Mapping[str, Callable[[float], Intervention]],
                      values: Sequence[float], prompts: Sequence[str] = DEFAULT_PROMPTS,
                      pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
                      headline: tuple[str, str] | None = ("she", "he"), interval: str = "t",
                      level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> ControlsResult:
    """For each method and value c, the female-vs-male log-odds shift over ``prompts`` (module docstring).

    methods: name -> (c -> Intervention), e.g. :func:`standard_controls`; every intervention must
    act at ``layer``. headline: a (female, male) pair of ``pairs`` reported alone as well (None:
    none); when the tokenizer splits one of its words the headline fields are None. interval:
    ``"t"`` or ``"bootstrap"`` (:func:`mean_interval`; ``n_boot`` and ``seed`` are for the
    bootstrap). Runs 1 + len(methods)·len(values) forward passes of the prompt batch.
    """
    loaded = require_loaded(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < loaded.info.n_layers:
        raise ValueError(f"layer must be an int in [0, n_layers={loaded.info.n_layers}); got {layer!r}")
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(f"methods must be a non-empty dict name -> (value -> Intervention); got {methods!r:.80}")
    for name, make in methods.items():
        if not callable(make):
            raise TypeError(f"methods[{name!r}] must be a callable value -> Intervention; got {type(make).__name__}")
        direction = getattr(make, "direction", None)
        if isinstance(direction, torch.Tensor) and direction.shape != (loaded.info.d_model,):
            raise ValueError(f"methods[{name!r}] moves along a direction of shape {tuple(direction.shape)} but the "
                             f"model's d_model is {loaded.info.d_model}; build the controls from this model's SAEs")
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        values = None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"values must be a non-empty list of finite numbers, e.g. [-10, -5, 5, 10]; got {values!r}")
    if interval not in ("t", "bootstrap"):
        raise ValueError(f"interval must be 't' or 'bootstrap'; got {interval!r}")
    used, skipped = token_pairs(loaded.tokenizer, pairs)
    names = [(u[0], u[1]) for u in used]
    k_head = None
    if headline is not None:
        headline = tuple(headline)
        if headline not in [tuple(p) for p in pairs]:
            raise ValueError(f"headline must be one of pairs or None; got {headline!r}, pairs {list(pairs)}")
        k_head = names.index(headline) if headline in names else None

    t0 = time.perf_counter()
    base = prompt_log_odds(loaded, prompts=prompts, pairs=pairs)  # [P, K]; checks prompts and pairs
    table, labels = [], []
    for name, make in methods.items():
        rows, row_labels = [], []
        for c in values:
            intervention = make(c)
            if not isinstance(intervention, Intervention):
                raise TypeError(f"methods[{name!r}]({c}) returned {type(intervention).__name__}; it must return "
                                "an Intervention (clamp_latent / add_direction)")
            if intervention.layer != layer:
                raise ValueError(f"methods[{name!r}] acts at layer {intervention.layer} but layer={layer}; "
                                 "all controls must edit the same layer")
            rows.append(prompt_log_odds(loaded, intervention, prompts=prompts, pairs=pairs))
            row_labels.append(intervention.label)
        table.append(torch.stack(rows))
        labels.append(row_labels)
    diff = torch.stack(table) - base  # [M, V, P, K]
    wall = time.perf_counter() - t0

    stats = dict(level=level, method=interval, n_boot=n_boot, seed=seed)
    per_prompt = diff.mean(-1)
    shift, low, high = mean_interval(per_prompt, **stats)
    head = (None,) * 5
    if k_head is not None:
        head_pp = diff[..., k_head]
        head = (*mean_interval(head_pp, **stats), head_pp, base[:, k_head].mean().item())
    info = {name: dict(getattr(make, "info", {})) for name, make in methods.items()}
    boot = interval == "bootstrap"
    return ControlsResult(methods=list(methods), values=values, layer=layer, prompts=list(prompts), pairs=names,
                          shift=shift, low=low, high=high, per_prompt=per_prompt, baseline=base.mean().item(),
                          headline=headline if k_head is not None else None, headline_shift=head[0],
                          headline_low=head[1], headline_high=head[2], headline_per_prompt=head[3],
                          baseline_headline=head[4], interval=interval, level=float(level),
                          n_boot=n_boot if boot else None, seed=seed if boot else None, info=info,
                          labels=labels, skipped=skipped, wall_s=wall)


def format_controls(result: ControlsResult, style: str = "text", digits: int = 3) -> str:
    """The result as a table (:func:`abstopk_mini.tables.format_table`): one row per (method, value)
    with the mean shift, its interval and, if any, the headline pair's shift and interval."""
    pct = f"{100 * result.level:g} %"
    columns = [("method", "method"), ("value", "c"), ("shift", "shift"), ("ci", f"{pct} ({result.interval})")]
    rows = []
    for row in result.rows():
        row["ci"] = _ci(row["low"], row["high"], digits)
        if result.headline is not None:
            row["head_ci"] = _ci(row["headline_low"], row["headline_high"], digits)
        rows.append(row)
    if result.headline is not None:
        f, m = result.headline
        columns += [("headline_shift", f"{f}-{m} shift"), ("head_ci", f"{f}-{m} {pct}")]
    return format_table(rows, columns, style=style, digits=digits, formats={"value": "g"}, align={"method": "<"})


def _ci(low: float, high: float, digits: int) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"
