r"""Interactive widgets for the chapters, and the small experiments they rerun.

``ipywidgets`` is imported only when a widget is built, so ``import abstopk_mini.chapters.widgets`` works
without it. Each widget redraws with a function of :mod:`abstopk_mini.chapters.plots`; a chapter calls
the same function once directly for the static figure of the widget's default state (the built
book shows saved widget state only, and its JavaScript comes from a CDN).

Sections, one per chapter:

* **Chapter 04, toy model of bidirectional features**: the experiments —
  :func:`gender_fit` (SAEs on the gender toy) with :func:`axis_summary`, :func:`toy_fit`
  (SAEs on the signed-axes data, kept with their metrics), :func:`toy_pair` (TopK vs AbsTopK
  at one width) — and the widget :func:`toy_widget` (sliders for k, width and the number of
  axes P). The toy SAEs are tiny, so they train on the CPU whatever :func:`~abstopk_mini.device.get_device` says
  (as :func:`abstopk_mini.coding.toy.toy_benchmark` does).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import torch

from .. import metrics
from ..sae import SAEConfig

__all__ = ["single_thread", "gender_fit", "axis_summary", "toy_fit", "toy_pair", "toy_pair_figure", "toy_widget", "WIDTH_CHOICES"]


# =============================================================================== shared
@contextlib.contextmanager
def single_thread():
    """Run torch on one CPU thread inside the block (restored afterwards).

    Toy SAEs multiply matrices of a few dozen columns: a second thread buys nothing, and when the
    cores are shared it can make training several times slower (threads waiting on each other).
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# =============================================================================== chapter 04
def axis_summary(sae, x: torch.Tensor, label: torch.Tensor, axis: torch.Tensor, align: float = 0.9) -> dict:
    """How an SAE codes one signed concept axis, given each sample's side of it.

    label: +1 / −1 / 0 per sample (e.g. male / female / neutral). Returns
    ``n_latents`` (latents whose atom has |cos| ≥ ``align`` with the axis), ``latents``
    (:func:`abstopk_mini.chapters.plots.axis_latents`: the signed latent, or the + and − latents),
    ``pair_cos`` (cosine between the atoms of the + and − latents; None for one latent), and the
    mean activation on the +1 / 0 / −1 samples (``pos``, ``zero``, ``neg``) of the first latent,
    oriented so that its atom points along +axis.

    shape: x [n, d], label [n], axis [d]
    """
    from .plots import axis_latents

    D = sae.W_dec.detach().float().cpu().T
    cos_all = metrics.cosine_matrix(axis.reshape(-1, 1).float(), D)[0]
    latents = axis_latents(sae, axis)
    with torch.no_grad():
        z = sae.encode(x.to(sae.W_enc.device)).float().cpu()
    i, cos = latents[0]
    zi = z[:, i] * (1.0 if cos >= 0 else -1.0)
    pair_cos = None
    if len(latents) == 2:
        pair_cos = float(metrics.cosine_matrix(D[:, [latents[0][0]]], D[:, [latents[1][0]]])[0, 0])
    return dict(
        n_latents=int((cos_all.abs() >= align).sum()), latents=latents, pair_cos=pair_cos,
        pos=float(zi[label > 0].mean()), zero=float(zi[label == 0].mean()), neg=float(zi[label < 0].mean()),
    )


def gender_fit(activations: Sequence[str] = ("abstopk", "topk"), d_sae: int = 8, k: int = 3, n_samples: int = 20_000,
               n_tokens: int = 1_000_000, batch_size: int = 256, seed: int = 0) -> dict:
    """Train one SAE per activation, all of width ``d_sae`` and sparsity k, on the gender toy
    (:func:`abstopk_mini.coding.toy.gender_data`, d = 32, seed ``seed``).

    Returns the data (``x``, ``words``, ``gender``, ``D_true``, ``concepts``), ``saes``
    ({activation: SAE}) and ``summary`` ({activation: :func:`axis_summary` of the gender axis}).
    """
    from ..coding.toy import gender_data
    from ..train import train_sae

    x, words, gender, D, concepts = gender_data(n_samples, seed=seed)
    saes, summary = {}, {}
    for activation in activations:
        cfg = SAEConfig(d_in=x.shape[1], d_sae=d_sae, activation=activation, k=k, seed=seed, device="cpu")
        with single_thread():
            saes[activation], _ = train_sae(cfg, x, n_tokens=n_tokens, batch_size=batch_size, seed=seed, progress=False)
        summary[activation] = axis_summary(saes[activation], x, gender, D[:, -1])
    return dict(x=x, words=words, gender=gender, D_true=D, concepts=concepts, saes=saes, summary=summary)


def toy_fit(
    runs: Sequence[tuple[str, float]],
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    D_true: torch.Tensor,
    k: int,
    n_tokens: int,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    **train_overrides,
) -> list[dict]:
    """Train one SAE per (activation, width multiple) on the same data and measure it.

    The same recipe and metrics as :func:`abstopk_mini.coding.toy.toy_benchmark` (d_sae =
    round(multiple·P), k for every activation, metrics on ``x_test``), but the trained SAE is
    kept in each row (key ``"sae"``) so that its dictionary can be drawn. With the data of
    ``toy_benchmark`` and an integer multiple, a row equals the benchmark's row. Trains on one
    thread (:func:`single_thread`).

    shape: x_train [N, d], x_test [M, d], D_true [d, P] -> list of dicts
    """
    from ..train import train_sae

    P = D_true.shape[1]
    out = []
    for activation, mult in runs:
        d_sae = int(round(mult * P))
        if d_sae < k:
            raise ValueError(f"width multiple {mult} gives d_sae={d_sae} < k={k} for P={P}; use a wider SAE or a smaller k")
        cfg = SAEConfig(d_in=x_train.shape[1], d_sae=d_sae, activation=activation, k=k, seed=seed, device="cpu")
        t0 = time.perf_counter()
        with single_thread():
            sae, _ = train_sae(cfg, x_train, n_tokens=n_tokens, batch_size=batch_size, seed=seed, progress=progress,
                               **train_overrides)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            z = sae.encode(x_test)
            x_hat = sae.decode(z)
        counts = metrics.firing_counts(z)
        alive = counts > 0
        D_learned = sae.W_dec.detach().T
        out.append(dict(
            activation=activation, d_sae=d_sae, k=k,
            mcc=metrics.mcc(D_true, D_learned[:, alive]) if alive.any() else 0.0,
            signed_recovery=metrics.signed_axis_recovery(D_true, D_learned[:, alive], cfg.signed) if alive.any() else 0.0,
            split_axes=metrics.split_axes(D_true, D_learned[:, alive]),
            fvu=metrics.fvu(x_test, x_hat), l0=metrics.l0(z), dead_frac=metrics.dead_fraction(counts),
            seconds=round(seconds, 1), sae=sae,
        ))
    return out


def toy_pair(P: int = 8, width_mult: float = 1.0, k: int = 3, n_active: int = 3, d: int | None = None,
             n_samples: int = 20_000, n_tokens: int = 400_000, seed: int = 0) -> dict:
    """AbsTopK and TopK of the same width and k on P signed axes in d = 2P dimensions (default).

    Returns ``{"D_true": [d, P], "rows": [abstopk row, topk row]}`` (rows of :func:`toy_fit`,
    held-out set of 5 000 samples).
    """
    from ..coding.toy import bidirectional_data

    if P < 2:
        raise ValueError(f"P (number of axes) must be >= 2; got {P}")
    d = d or 2 * P
    n_active = min(n_active, P)
    x, _, D = bidirectional_data(n_samples + 5_000, d=d, P=P, n_active=n_active, seed=seed)
    rows = toy_fit((("abstopk", width_mult), ("topk", width_mult)), x[:n_samples], x[n_samples:], D, k=k,
                   n_tokens=n_tokens, seed=seed)
    return {"D_true": D, "rows": rows}


def toy_pair_figure(result: dict):
    """The cosine heat maps of a :func:`toy_pair` result, with the metrics in the titles."""
    from .plots import cosine_heatmaps

    rows = result["rows"]
    titles = [f"{r['activation']} (d_sae={r['d_sae']}, k={r['k']})" for r in rows]
    return cosine_heatmaps(result["D_true"], dict(zip(titles, (r["sae"] for r in rows))), dict(zip(titles, rows)))


#: width multiples (d_sae / P) offered by the toy widget
WIDTH_CHOICES = (0.5, 1.0, 1.5, 2.0, 3.0)


def toy_widget(P: int = 8, width_mult: float = 1.0, k: int = 3, n_active: int = 3, n_tokens: int = 400_000,
               seed: int = 0, P_max: int = 32):
    """Sliders for k, the width multiple and P; the button retrains an AbsTopK / TopK pair
    (:func:`toy_pair`, a few seconds) and redraws :func:`toy_pair_figure` below.

    The data always switch on ``n_active`` axes per sample (at most P) in d = 2P dimensions.
    Returns an ``ipywidgets.VBox``; ``box.children[-2]`` is the button (``.click()`` retrains).
    """
    import ipywidgets as W
    from IPython.display import Image, display

    if width_mult not in WIDTH_CHOICES:
        raise ValueError(f"width_mult={width_mult}; choose one of {WIDTH_CHOICES}")
    style = {"description_width": "160px"}
    layout = W.Layout(width="420px")
    k_slider = W.IntSlider(value=k, min=1, max=8, description="k (non-zeros per row)", style=style, layout=layout)
    w_slider = W.SelectionSlider(options=list(WIDTH_CHOICES), value=width_mult, description="width d_sae / P",
                                 style=style, layout=layout)
    p_slider = W.IntSlider(value=P, min=4, max=P_max, step=4, description="P (true axes)", style=style, layout=layout)
    button = W.Button(description="train AbsTopK and TopK", button_style="primary", layout=W.Layout(width="240px"))
    status = W.HTML(f"data: d = 2P dimensions, {n_active} axes active per sample, {n_tokens:,} training samples seen")
    out = W.Output()

    def run(_=None):
        button.disabled = True
        t0 = time.perf_counter()
        try:
            Pv = p_slider.value
            kv = min(k_slider.value, max(1, int(round(w_slider.value * Pv))))
            result = toy_pair(P=Pv, width_mult=w_slider.value, k=kv, n_active=n_active, n_tokens=n_tokens, seed=seed)
            fig = toy_pair_figure(result)
            with out:
                out.clear_output(wait=True)
                display(Image(fig._repr_png_()))
            status.value = f"P={Pv}, d_sae={result['rows'][0]['d_sae']}, k={kv}: trained in {time.perf_counter() - t0:.1f} s"
        finally:
            button.disabled = False
        return result

    button.on_click(run)
    return W.VBox([k_slider, w_slider, p_slider, status, button, out])
