r"""Synthetic data with signed ground-truth features, and the toy benchmark.

**Signed axes.** P unit-norm directions :math:`d_1..d_P \in \mathbb R^d` (the columns of
``D_true``). Each sample switches on exactly ``n_active`` of them, each with a random sign and a
positive amplitude:

.. math::  x = b + \sum_{i \in S} s_i\, a_i\, d_i, \qquad s_i \in \{-1, +1\},\ a_i \sim U[a_{lo}, a_{hi}].

An AbsTopK SAE can represent axis i with one latent (z_i = s_i a_i); a nonnegative SAE needs
one latent for +d_i and another for −d_i, an antipodal pair.

**Gender toy** ("man = male + person, woman = female + person"). Nonnegative base concepts
(person, royalty, child, ...) plus one signed gender axis g: a "man" is person + g, a "woman"
person − g, a "king" person + royalty + g, and so on; neutral words have no g component.
"""

from __future__ import annotations


import torch

from .. import metrics
from ..sae import SAEConfig

__all__ = ["bidirectional_data", "gender_data", "GENDER_CONCEPTS", "toy_benchmark", "DEFAULT_BENCH"]


def _unit_columns(d: int, P: int, gen: torch.Generator) -> torch.Tensor:
    D = torch.randn(d, P, generator=gen, dtype=torch.float64)
    return (D / D.norm(dim=0, keepdim=True)).float()


def bidirectional_data(
    n_samples: int = 50_000,
    d: int = 64,
    P: int = 32,
    n_active: int = 3,
    amplitude: tuple[float, float] = (0.5, 1.5),
    p_negative: float = 0.5,
    bias_norm: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
):
    """Samples of P signed ground-truth axes in d dimensions.

    p_negative: probability that an active feature has sign −1. bias_norm: norm of a constant
    offset b added to every sample (a model's mean activation). noise: std of isotropic
    Gaussian noise.

    shape: -> x [n_samples, d], z_true [n_samples, P] (signed amplitudes), D_true [d, P]
    """
    if not 1 <= n_active <= P:
        raise ValueError(f"n_active must satisfy 1 <= n_active <= P={P}; got {n_active}")
    if n_samples < 1 or d < 1:
        raise ValueError(f"n_samples and d must be >= 1; got {n_samples}, {d}")
    gen = torch.Generator().manual_seed(seed)
    D = _unit_columns(d, P, gen)
    support = torch.rand(n_samples, P, generator=gen).argsort(dim=1)[:, :n_active]
    lo, hi = amplitude
    amp = lo + (hi - lo) * torch.rand(n_samples, n_active, generator=gen)
    sign = torch.where(torch.rand(n_samples, n_active, generator=gen) < p_negative, -1.0, 1.0)
    z = torch.zeros(n_samples, P).scatter(1, support, sign * amp)
    b = torch.randn(d, generator=gen)
    b = b / b.norm() * bias_norm
    x = z @ D.T + b + noise * torch.randn(n_samples, d, generator=gen)
    return x, z, D


GENDER_CONCEPTS = {
    # word: (base concepts, gender sign: +1 male, -1 female, 0 neutral)
    "man": (("person",), 1), "woman": (("person",), -1), "person": (("person",), 0),
    "king": (("person", "royalty"), 1), "queen": (("person", "royalty"), -1), "monarch": (("person", "royalty"), 0),
    "boy": (("person", "child"), 1), "girl": (("person", "child"), -1), "child": (("person", "child"), 0),
    "father": (("person", "parent"), 1), "mother": (("person", "parent"), -1), "parent": (("person", "parent"), 0),
    "brother": (("person", "sibling"), 1), "sister": (("person", "sibling"), -1), "sibling": (("person", "sibling"), 0),
}


def gender_data(n_samples: int = 20_000, d: int = 32, gender_strength: float = 1.0, noise: float = 0.05, seed: int = 0):
    """The "man = male + person, woman = female + person" toy.

    Each sample is one word of :data:`GENDER_CONCEPTS` (drawn uniformly), built as the sum of its
    base concept atoms times a random amplitude in [0.8, 1.2], plus ``sign·gender_strength·g``.

    Returns x [n, d], words (list of n str), gender [n] (+1, −1, 0), D_true [d, C+1] whose last
    column is the gender axis g and whose first C columns are the base concepts (in order
    ``concepts``), and ``concepts`` (list of names, "gender" last).
    """
    gen = torch.Generator().manual_seed(seed)
    concepts = sorted({c for base, _ in GENDER_CONCEPTS.values() for c in base}) + ["gender"]
    D = _unit_columns(d, len(concepts), gen)
    words = list(GENDER_CONCEPTS)
    pick = torch.randint(len(words), (n_samples,), generator=gen)
    codes = torch.zeros(n_samples, len(concepts))
    gender = torch.zeros(n_samples)
    for w_i, word in enumerate(words):
        rows = pick == w_i
        base, sign = GENDER_CONCEPTS[word]
        for c in base:
            codes[rows, concepts.index(c)] = 0.8 + 0.4 * torch.rand(int(rows.sum()), generator=gen)
        codes[rows, -1] = sign * gender_strength
        gender[rows] = sign
    x = codes @ D.T + noise * torch.randn(n_samples, d, generator=gen)
    return x, [words[i] for i in pick.tolist()], gender, D, concepts


#: the default toy benchmark: P = 32 signed axes in d = 64 dims, 3 active per sample
DEFAULT_BENCH = dict(d=64, P=32, n_active=3, n_samples=60_000, n_tokens=4_000_000, batch_size=256)


def toy_benchmark(
    runs=(
        ("abstopk", 1), ("topk", 1), ("topk", 2), ("batchabstopk", 1), ("batchtopk", 2),
        ("absjumprelu", 1), ("jumprelu", 2), ("relu", 2),
    ),
    d: int = 64,
    P: int = 32,
    n_active: int = 3,
    n_samples: int = 60_000,
    n_tokens: int = 4_000_000,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    **train_overrides,
) -> list[dict]:
    """Train each (activation, width multiple) on the same signed-axes data and measure it.

    Every run uses k = ``n_active`` (the top-k family) and d_sae = multiple·P. Returns one dict
    per run: activation, d_sae, k, mcc (|cos| matching of the P axes), signed_recovery (the 2P
    directions ±d_i, see :func:`~abstopk_mini.metrics.signed_axis_recovery`), split_axes (axes
    coded by a ± pair of latents), fvu and l0 on held-out samples, dead_frac, seconds.
    """
    import time

    from ..train import train_sae

    x, _, D = bidirectional_data(n_samples + 10_000, d, P, n_active, seed=seed)
    x_train, x_test = x[:n_samples], x[n_samples:]
    rows = []
    for activation, mult in runs:
        # k = n_active for every activation: the top-k family keeps k per row, the others steer their L0 to k
        cfg = SAEConfig(d_in=d, d_sae=mult * P, activation=activation, k=n_active, seed=seed, device="cpu")
        t0 = time.perf_counter()
        sae, hist = train_sae(cfg, x_train, n_tokens=n_tokens, batch_size=batch_size, seed=seed, progress=progress, **train_overrides)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            z = sae.encode(x_test)
            x_hat = sae.decode(z)
        counts = metrics.firing_counts(z)
        D_learned = sae.W_dec.detach().T
        alive = counts > 0
        rows.append(
            dict(
                activation=activation, d_sae=cfg.d_sae, k=n_active,
                mcc=metrics.mcc(D, D_learned[:, alive]) if alive.any() else 0.0,
                signed_recovery=metrics.signed_axis_recovery(D, D_learned[:, alive], cfg.signed) if alive.any() else 0.0,
                split_axes=metrics.split_axes(D, D_learned[:, alive]),
                fvu=metrics.fvu(x_test, x_hat), l0=metrics.l0(z), dead_frac=metrics.dead_fraction(counts),
                seconds=round(seconds, 1),
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of :func:`toy_benchmark` rows (:func:`abstopk_mini.tables.format_table`)."""
    from ..tables import format_table as table

    return table(rows, ["activation", "d_sae", "k", "mcc", "signed_recovery", "split_axes", "fvu", "l0", "dead_frac", "seconds"])
