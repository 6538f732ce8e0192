r"""Steering: clamp one SAE latent, or add a direction, in the residual stream while the model runs.

Two interventions on the residual stream :math:`x` after block :math:`L`, applied at every edited
position (every real token but BOS, as in :func:`abstopk_mini.lm.splice.splice_residual`; during
generation also every generated token):

* **clamp** latent :math:`i` to :math:`c`: replace the latent's contribution to the
  reconstruction, keep everything else (including the SAE's error term):

  .. math:: x' = x + (c - z_i(x))\, d_i, \qquad d_i = W_{dec}[i] / s

  where :math:`z_i(x)` is the latent's value in ``sae.encode(x)`` (zero when the top-k did not
  pick it) and :math:`d_i` its decoder row in raw activation units (:math:`s` =
  ``cfg.input_scale``). Clamping to the current value changes nothing. With a signed SAE
  (AbsTopK) :math:`c` may be negative, so one latent can push both ways along its axis.

  An SAE that standardises each token (``cfg.input_unit_norm``) decodes to
  :math:`\hat x = \sigma(x)(z W_{dec} + b_{dec})/s + \mu(x)`, so one unit of latent :math:`i`
  moves the raw activation by :math:`d_i(x) = \sigma(x)\, W_{dec}[i]/s`, a length that depends on
  the token (:math:`\sigma(x)` the token's standard deviation over d_in,
  :func:`abstopk_mini.sae.standardize`). The clamp then sets the latent to :math:`c` in the code
  space and moves each token by its own step, :math:`x' = x + (c - z_i(x))\, d_i(x)`.
* **add** a direction :math:`v`: :math:`x' = x + c\, v` (Difference-in-Means steering).

DiM at matched norm: for a comparison at value :math:`c`, the DiM direction is rescaled to the
norm of the latent's decoder row, :math:`v = \|d_i\|\, u/\|u\|` (:func:`match_norm`), so that
adding :math:`c\,v` moves :math:`x` by :math:`|c|\,\|d_i\|` — the length of the move
:math:`c\, d_i` that setting the latent from 0 to :math:`c` makes. For a standardising SAE that
length varies with the token; :func:`match_norm` then uses its mean over given rows x,
:math:`\|\bar d_i\| = \overline{\sigma(x)}\,\|W_{dec}[i]\|/s` (:func:`mean_decoder_direction`).

The effect is measured by the log-odds of female vs male next tokens,
:math:`\log p(\text{she}) - \log p(\text{he})` and so on over :data:`DEFAULT_PAIRS`, averaged
over pairs and the neutral :data:`DEFAULT_PROMPTS` (:func:`logit_diff_curve`; per prompt and
pair: :func:`prompt_log_odds`; controls at matched norm: :mod:`abstopk_mini.lm.steering_controls`).
Each word is one token with a leading space (``" she"``); pairs where either word is not a single
token are skipped and listed in the result.

    curve = am.steering.logit_diff_curve(loaded, lambda c: am.steering.clamp_latent(sae, 123, c),
                                         values=[-20, -10, 0, 10, 20])
    with am.steering.clamp_latent(sae, 123, 10.0).attach(loaded):
        loaded.model(input_ids=ids)
    am.steering.generate_with(loaded, "The doctor said that", am.steering.clamp_latent(sae, 123, 10.0))
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .hooks import encode, layer_of, pad, require_loaded
from .models import LoadedModel
from .splice import splice_residual

__all__ = [
    "DEFAULT_PROMPTS", "DEFAULT_PAIRS", "Intervention", "check_latent", "clamp_latent", "add_direction",
    "decoder_direction", "mean_decoder_direction", "match_norm", "token_pairs", "CurveResult", "prompt_log_odds",
    "logit_diff_curve",
    "generate_with", "check_prompt", "GENERATE_TOKENS",
]

#: tokens :func:`generate_with` adds by default
GENERATE_TOKENS = 20

#: neutral prompts whose next token is often a pronoun or a person noun
DEFAULT_PROMPTS = (
    "The doctor said that",
    "Yesterday, the nurse told me that",
    "The teacher explained that",
    "When the engineer arrived,",
    "My neighbor thinks that",
    "After the meeting, the manager said that",
    "The student asked whether",
    "Our new colleague mentioned that",
    "The pilot announced that",
    "The scientist believes that",
    "At the party, the guest said that",
    "The lawyer argued that",
    "In the morning, the chef",
    "The writer hopes that",
    "The patient told the receptionist that",
    "Before leaving, the driver said that",
    "The child looked at the",
    "I met a person who said that",
    "The author of the book is a",
    "Everyone agreed that the leader",
)
#: (female, male) words; each is looked up as one token with a leading space
DEFAULT_PAIRS = (
    ("she", "he"), ("her", "his"), ("woman", "man"), ("women", "men"), ("girl", "boy"),
    ("mother", "father"), ("daughter", "son"), ("sister", "brother"), ("wife", "husband"),
    ("herself", "himself"), ("queen", "king"), ("lady", "gentleman"), ("female", "male"),
)


# --------------------------------------------------------------------------- interventions
@dataclass(frozen=True)
class Intervention:
    """An edit of the residual stream after block ``layer``: ``fn`` maps rows x [n, d] -> x' [n, d].

    ``intervention.attach(model)`` is a context manager that applies it to every forward of
    ``model`` (at the non-BOS real positions; also BOS when ``skip_bos=False``).
    """

    layer: int
    fn: Callable[[torch.Tensor], torch.Tensor]
    label: str = ""
    skip_bos: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def attach(self, model):
        return splice_residual(model, self.layer, self.fn, skip_bos=self.skip_bos)


def check_latent(sae, latent: int) -> None:
    """Raise unless ``sae`` is an am.SAE and ``latent`` an int index of one of its latents."""
    from ..sae import SAE

    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be an am.SAE; got {type(sae).__name__}")
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < sae.cfg.d_sae:
        raise ValueError(f"latent must be an int in [0, d_sae={sae.cfg.d_sae}); got {latent!r}")


def decoder_direction(sae, latent: int, x: torch.Tensor | None = None) -> torch.Tensor:
    r"""What one unit of latent i adds to the raw activation, :math:`\partial\hat x/\partial z_i`.

    Ordinary SAE: :math:`d_i = W_{dec}[i]/s`, the same at every token; x is optional, and with x the
    result is d_i at each of its rows. SAE with ``cfg.input_unit_norm``: :math:`d_i(x) = \sigma(x)\,
    W_{dec}[i]/s` with :math:`\sigma(x)` the token's std (module docstring), so x is required.

    shape: -> [d_in] without x; x [..., d_in] -> [..., d_in]
    """
    check_latent(sae, latent)
    d_i = sae.W_dec[latent].detach() / sae.cfg.input_scale
    if x is None:
        if sae.cfg.input_unit_norm:
            raise ValueError(
                "x=None, but this SAE standardises each token (cfg.input_unit_norm=True), so what latent "
                f"{latent} adds depends on the token: d_i(x) = sigma(x) W_dec[i] / s. Pass x=the activation rows "
                "[..., d_in] the edit applies to (or use mean_decoder_direction(sae, latent, x) for one vector)"
            )
        return d_i.clone()
    _check_rows(sae, x)
    x = x.to(device=d_i.device)
    if not sae.cfg.input_unit_norm:
        return d_i.expand(*x.shape[:-1], d_i.shape[0]).clone()
    return sae.input_stats(x)[1] * d_i


def mean_decoder_direction(sae, latent: int, x: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\bar d_i`, the mean over the rows of x of :func:`decoder_direction`: d_i itself for an
    ordinary SAE (x not needed), :math:`\overline{\sigma(x)}\,W_{dec}[i]/s` with ``cfg.input_unit_norm``
    (every d_i(x) points the same way; only its length varies).  shape: x [..., d_in] -> [d_in]"""
    if not sae.cfg.input_unit_norm or x is None:
        return decoder_direction(sae, latent)  # with input_unit_norm and no x: the ValueError that names x
    check_latent(sae, latent)
    _check_rows(sae, x)
    sigma = sae.input_stats(x.to(sae.W_dec.device))[1]
    return sae.W_dec[latent].detach() / sae.cfg.input_scale * sigma.double().mean().to(sae.W_dec.dtype)


def _check_rows(sae, x) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] != sae.cfg.d_in or x.numel() == 0:
        raise ValueError(f"x must be a non-empty tensor of activation rows [..., d_in={sae.cfg.d_in}]; got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")


def _finite(value, name: str) -> float:
    """``float(value)``, refusing NaN and ±Inf (they would put NaN into every later residual)."""
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number; got {value!r} — pass values such as -10, 0, 10")
    return out


def clamp_latent(sae, latent: int, value: float, layer: int | None = None) -> Intervention:
    """x' = x + (value − z_i(x)) d_i(x) (module docstring): the latent is set to ``value`` in the code
    space, and the change is mapped to the raw space with each token's σ when the SAE standardises.
    layer defaults to ``sae.cfg.hook_layer``."""
    check_latent(sae, latent)
    layer = layer_of(sae, layer)
    value = _finite(value, "value")
    d_i = None if sae.cfg.input_unit_norm else decoder_direction(sae, latent)  # else: per token, in fn

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x_sae = x.to(sae.W_dec.device)
            z_i = sae.encode(x_sae)[..., latent]
            step = d_i if d_i is not None else decoder_direction(sae, latent, x_sae)
            delta = (value - z_i)[..., None] * step
        return x + delta.to(device=x.device, dtype=x.dtype)

    return Intervention(layer, fn, f"clamp latent {latent} to {value:g}")


def add_direction(direction: torch.Tensor, scale: float, layer: int) -> Intervention:
    """x' = x + scale · direction.  shape: direction [d_model]"""
    if not isinstance(direction, torch.Tensor) or direction.dim() != 1:
        raise ValueError("direction must be a 1-D tensor [d_model]; got "
                         f"{tuple(direction.shape) if isinstance(direction, torch.Tensor) else type(direction).__name__}")
    step = (_finite(scale, "scale") * direction.detach()).clone()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x + step.to(device=x.device, dtype=x.dtype)

    return Intervention(layer, fn, f"add {float(scale):g} x direction")


def match_norm(direction: torch.Tensor, sae, latent: int, x: torch.Tensor | None = None) -> torch.Tensor:
    """``direction`` rescaled to the norm of the latent's decoder row d_i (raw units), so that
    ``add_direction(match_norm(u, sae, i), c)`` moves x by |c|·‖d_i‖. For an SAE with
    ``cfg.input_unit_norm`` the move of one unit varies with the token: pass the rows x the steering
    acts on, and the norm is that of :func:`mean_decoder_direction` (the mean length over x).
    shape: [d] -> [d]"""
    norm = direction.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("direction has zero or non-finite norm; pass a non-zero direction (e.g. a DiM vector)")
    d_i = mean_decoder_direction(sae, latent, x)
    return direction.detach() * (d_i.norm().to(direction) / norm)


# --------------------------------------------------------------------------- measuring
def _with_space(word: str) -> str:
    return word if word[:1].isspace() else " " + word


def token_pairs(tokenizer, pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS):
    """Split ``pairs`` into usable ones and skipped ones.

    Returns ``(used, skipped)``: used = [(female, male, female_id, male_id)], skipped =
    [(female, male, reason)] where a word is not a single token with a leading space.
    """
    used, skipped = [], []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(w, str) and w.strip() for w in pair)):
            raise ValueError(f"pairs must hold (female, male) pairs of non-empty words; got {pair!r}")
        female, male = pair
        texts = [_with_space(w) for w in pair]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        bad = [f"{t!r} -> {len(i)} tokens {i}" for t, i in zip(texts, ids) if len(i) != 1]
        if bad:
            skipped.append((female, male, "not a single token: " + ", ".join(bad)))
        else:
            used.append((female, male, ids[0][0], ids[1][0]))
    return used, skipped


@dataclass
class CurveResult:
    """Log-odds log p(female) − log p(male) of the next token, per steering value.

    shape: values [V]; log_odds [V] (mean over prompts and pairs); per_prompt [V, P] (mean over
    pairs); per_pair [V, K] (mean over prompts); baseline: the mean without any intervention,
    baseline_per_pair [K].
    """

    values: list[float]
    log_odds: torch.Tensor
    per_prompt: torch.Tensor
    per_pair: torch.Tensor
    baseline: float
    baseline_per_pair: torch.Tensor
    pairs: list[tuple[str, str]]
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def nonfinite_values(self) -> list[float]:
        """The steering values whose log-odds are not finite (the edit overflowed the model's floats)."""
        return [c for c, lo in zip(self.values, self.log_odds.tolist()) if not math.isfinite(lo)]

    def to_dict(self) -> dict:
        """A JSON-ready dict; a non-finite number is written as None, and ``notes`` says why."""
        d = dataclasses.asdict(self)
        for key, value in d.items():
            if isinstance(value, torch.Tensor):
                d[key] = _finite_or_none(value.tolist())
        d["baseline"] = _finite_or_none(d["baseline"])
        notes = [f"log-odds at c = {c:g} are null: with the latent clamped there the model's logits are not finite "
                 "(the edit overflows its floating-point range); use values of smaller magnitude"
                 for c in self.nonfinite_values()]
        if d["baseline"] is None:
            notes.append("baseline is null: the model's own logits are not finite on these prompts")
        d["notes"] = notes
        return d


def _finite_or_none(value):
    """``value`` (a float or nested lists of them) with every NaN / ±inf replaced by None."""
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _prompt_log_odds(loaded: LoadedModel, seqs, fem: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
    """log p(f) − log p(m) at the next token after each prompt.  shape: -> [P, K]"""
    lm, info = loaded.model, loaded.info
    device = next(lm.parameters()).device
    ids, mask = pad(seqs, info.pad_token_id if info.pad_token_id is not None else 0)
    last = mask.sum(1) - 1
    keep = torch.unique(last)  # the LM head runs at these positions only
    with torch.inference_mode():
        logits = lm(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False,
                    logits_to_keep=keep.to(device)).logits  # [P, len(keep), vocab]
        logits = logits[torch.arange(len(seqs)), torch.searchsorted(keep, last)].float()  # [P, vocab]
    # log p(f) − log p(m) = logit_f − logit_m: the softmax normaliser cancels
    return (logits[:, fem.to(device)] - logits[:, male.to(device)]).cpu()


def _prepare(loaded: LoadedModel, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]):
    """Token ids of the prompts (BOS first) and of the usable pairs: (seqs, fem [K], male [K], used, skipped)."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a list of strings; got {prompts!r:.80}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty; pass at least one prompt, e.g. steering.DEFAULT_PROMPTS")
    used, skipped = token_pairs(loaded.tokenizer, pairs)
    if not used:
        raise ValueError(f"no pair of {list(pairs)} is made of single tokens ({skipped}); pass pairs of "
                         "words that the tokenizer keeps whole (with a leading space)")
    seqs = encode(loaded.tokenizer, list(prompts), 10**9, prepend_bos=True)
    fem = torch.tensor([u[2] for u in used])
    male = torch.tensor([u[3] for u in used])
    return seqs, fem, male, used, skipped


def _check_intervention(intervention, where: str) -> Intervention:
    if not isinstance(intervention, Intervention):
        raise TypeError(f"{where} returned {type(intervention).__name__}; it must return an Intervention "
                        "(clamp_latent / add_direction)")
    return intervention


def prompt_log_odds(model: LoadedModel, intervention: Intervention | None = None, *,
                    prompts: Sequence[str] = DEFAULT_PROMPTS,
                    pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS) -> torch.Tensor:
    """log p(female_k) − log p(male_k) of the next token after each prompt, with ``intervention``
    attached (None: the plain model); the per-prompt, per-pair numbers :func:`logit_diff_curve` averages.

    One right-padded batch, BOS in front of every prompt. The columns are the pairs
    ``token_pairs(tokenizer, pairs)[0]`` keeps, in order (pairs of words that are not single tokens
    are dropped; if none is left, ValueError).

    shape: -> [P, K] float64 (computed from float32 logits)
    """
    loaded = require_loaded(model)
    if intervention is not None and not isinstance(intervention, Intervention):
        raise TypeError(f"intervention must be an Intervention (clamp_latent / add_direction) or None; "
                        f"got {type(intervention).__name__}")
    seqs, fem, male, _, _ = _prepare(loaded, prompts, pairs)
    context = intervention.attach(loaded) if intervention is not None else contextlib.nullcontext()
    with context:
        return _prompt_log_odds(loaded, seqs, fem, male).double()


def logit_diff_curve(model: LoadedModel, make: Callable[[float], Intervention], values: Sequence[float], *,
                     prompts: Sequence[str] = DEFAULT_PROMPTS,
                     pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS) -> CurveResult:
    """For each c in ``values``, the mean female-vs-male log-odds of the next token after each
    prompt with ``make(c)`` attached (e.g. ``lambda c: clamp_latent(sae, i, c)``).

    Prompts get BOS in front and are run as one right-padded batch per value. Pairs whose words
    are not single tokens are skipped and listed in ``result.skipped``; if none is left, ValueError.
    The per-prompt, per-pair numbers of one intervention: :func:`prompt_log_odds`.
    """
    loaded = require_loaded(model)
    if not callable(make):
        raise TypeError(f"make must be a callable value -> Intervention; got {type(make).__name__}")
    values = [_finite(v, "each of values") for v in values]
    if not values:
        raise ValueError("values is empty; pass the steering values, e.g. [-10, -5, 0, 5, 10]")
    seqs, fem, male, used, skipped = _prepare(loaded, prompts, pairs)
    baseline = _prompt_log_odds(loaded, seqs, fem, male)  # [P, K]
    rows, labels = [], []
    for c in values:
        intervention = _check_intervention(make(c), f"make({c})")
        with intervention.attach(loaded):
            rows.append(_prompt_log_odds(loaded, seqs, fem, male))
        labels.append(intervention.label)
    table = torch.stack(rows).double()  # [V, P, K]
    return CurveResult(values=values, log_odds=table.mean((1, 2)), per_prompt=table.mean(2),
                       per_pair=table.mean(1), baseline=baseline.double().mean().item(),
                       baseline_per_pair=baseline.double().mean(0), pairs=[(u[0], u[1]) for u in used],
                       skipped=skipped, labels=labels)


def _max_positions(lm) -> int | None:
    config = getattr(lm, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt(model: LoadedModel, prompt: str, max_new_tokens: int = GENERATE_TOKENS, *, name: str = "prompt") -> int:
    """Raise unless ``prompt`` (BOS prepended) plus ``max_new_tokens`` fits the model's positions;
    return the prompt's length in tokens. ``name`` is how the prompt is named in the error."""
    loaded = require_loaded(model)
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a str; got {type(prompt).__name__}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int; got {max_new_tokens!r}")
    n = len(encode(loaded.tokenizer, [prompt], 10**9, prepend_bos=True)[0])
    limit = _max_positions(loaded.model)
    if limit is not None and n + max_new_tokens > limit:
        raise ValueError(f"{name} is {n} tokens long (with BOS); with the {max_new_tokens} generated tokens it needs "
                         f"{n + max_new_tokens} positions, but {loaded.info.name!r} reads at most {limit}; pass a prompt "
                         f"of at most {limit - max_new_tokens - 1} tokens")
    return n


def generate_with(model: LoadedModel, prompt: str, intervention: Intervention | None = None,
                  max_new_tokens: int = GENERATE_TOKENS) -> str:
    """Greedy continuation of ``prompt`` (BOS prepended) with ``intervention`` attached (None: the
    plain model). Without a KV cache: every step reruns the whole sequence, so the edit applies to
    the prompt and every generated token alike; meant for a few tokens. Stops at EOS.
    Returns the continuation text only. ValueError when the prompt and ``max_new_tokens`` do not
    fit the model's positions (:func:`check_prompt`).
    """
    loaded = require_loaded(model)
    check_prompt(loaded, prompt, max_new_tokens)
    lm, tokenizer = loaded.model, loaded.tokenizer
    device = next(lm.parameters()).device
    ids = torch.tensor([encode(tokenizer, [prompt], 10**9, prepend_bos=True)[0]], device=device)
    eos = tokenizer.eos_token_id
    new: list[int] = []
    context = intervention.attach(loaded) if intervention is not None else contextlib.nullcontext()
    with context, torch.inference_mode():
        for _ in range(max_new_tokens):
            logits = lm(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1]
            token = int(logits.argmax())
            if token == eos:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
    return tokenizer.decode(new, skip_special_tokens=True)
