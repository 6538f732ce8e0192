r"""Kernel-free twins of the chapters' widgets: every option computed in the notebook, switched in the page.

A live ``ipywidgets`` widget recomputes when a control moves, so it needs a running kernel: in the
built book (and in a notebook opened without running it) it is a dead panel. A *twin* computes,
while the notebook runs, what the widget would show for each of a fixed set of options (a short
list of latents, every word pair, a grid of toy settings), renders each as HTML (figure as an inline
PNG, the status line, token highlights), and puts them all in one self-contained page with a
``<select>`` per control. The page is shown in an ``<iframe srcdoc>`` (:class:`abstopk_mini.dashboard.Page`),
so its script runs in Jupyter, Colab and the static book alike, and nothing is fetched.

* :func:`switcher_html` / :func:`switcher` — the generic page: panels keyed by one value per control;
* :func:`figure_html` — a figure as an ``<img>`` with an inline, palette-compressed PNG;
* :func:`latent_twin` — twin of :func:`abstopk_mini.chapters.widgets_lm.latent_widget`;
* :func:`pair_twin` — twin of :func:`abstopk_mini.chapters.widgets_lm.pair_widget`;
* :func:`toy_twin` — twin of :func:`abstopk_mini.chapters.widgets.toy_widget` on a grid of (width, k).

Each twin uses the same data and figure functions as its widget, and the widget's status line
(:func:`latent_status`, :func:`pair_status`), so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import html as _html
import io
import json
import re
from collections.abc import Mapping, Sequence

from ..dashboard.frame import FRAME_JS
from . import plots_concepts as pc
from .checks import check_latent, check_pairs

__all__ = ["figure_html", "switcher_html", "switcher", "latent_status", "pair_status",
           "latent_twin", "pair_twin", "toy_twin"]

#: dots per inch of a twin's figures: a 6-inch figure is 690 px, the text column, so fonts keep their size
TWIN_DPI = 115


def figure_html(fig, dpi: int = TWIN_DPI, colors: int = 128) -> str:
    """``fig`` (a matplotlib figure) as ``<img src="data:image/png;base64,...">``, closed afterwards.

    The PNG is quantised to at most ``colors`` colours (figures are flat colours and anti-aliased
    edges; this makes them ~3x smaller with no visible change). The alt text is the figure's
    suptitle, else its first axes' title."""
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colors=colors, dither=Image.Dither.NONE)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else (fig.axes[0].get_title() if fig.axes else "")
    return (f'<img alt="{_html.escape(title or "figure", quote=True)}" style="max-width:100%;height:auto" '
            f'src="data:image/png;base64,{base64.b64encode(out.getvalue()).decode()}">')


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:15px;color:#1a1a1a;margin:0;background:#fff}
.tw{padding:8px 10px}
.tw .bar{display:flex;gap:16px;flex-wrap:wrap;align-items:center;margin-bottom:6px}
.tw label{font-weight:600}
.tw select,.tw input{font-size:15px;margin-left:6px}
.tw .note{color:#555;font-size:13px;margin:2px 0 6px}
.tw .status{margin:4px 0;font-size:14px}
.tw .panel{display:none}.tw .panel.on{display:block}
.tw .miss{color:#8c510a}
"""

_JS = r"""
const C=JSON.parse(document.getElementById('tw-controls').textContent);
const sel=C.names.map((_,j)=>document.getElementById('tw-c'+j));
const panels={};for(const p of document.querySelectorAll('.panel'))panels[p.dataset.key]=p;
const miss=document.getElementById('tw-miss'),asked=document.getElementById('tw-asked');
function show(link){const key=sel.map(s=>s.value).join('|');let hit=false;asked.style.display='none';
  for(const k in panels){const on=k===key;panels[k].classList.toggle('on',on);hit=hit||on;}
  miss.style.display=hit?'none':'block';if(link!==false)sel.forEach((s,j)=>FRAME.set(C.keys[j],s.value));}
for(const s of sel)s.addEventListener('change',()=>show());
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
function pick(v,link){v=String(v).trim();if(!v)return true;
  for(const o of sel[0].options)if(o.value===v||o.text.split(' ')[0]===v){sel[0].value=o.value;show(link);return true;}
  asked.innerHTML=esc(C.names[0])+' '+esc(v)+' is not among this page\u2019s '+sel[0].options.length+' precomputed values ('+
    [...sel[0].options].map(o=>esc(o.value)).join(', ')+'); '+C.missing;asked.style.display='block';return false;}
const find=document.getElementById('tw-find');
if(find)find.addEventListener('change',()=>pick(find.value));
if(find)find.addEventListener('input',()=>{const v=find.value.trim();if(v&&[...sel[0].options].some(o=>o.value===v||o.text.split(' ')[0]===v))pick(v);});
function fromHash(){let any=false;sel.forEach((s,j)=>{const v=FRAME.get(C.keys[j]);if(v===null)return;any=true;
  if(j===0){pick(v,false);return;}if([...s.options].some(o=>o.value===v))s.value=v;});if(any&&asked.style.display!=='block')show(false);return any;}
if(fromHash())FRAME.reveal();else show(false);
FRAME.onHash(fromHash);
"""


def _key(values) -> str:
    return "|".join(str(v) for v in values)


def switcher_html(panels: Mapping[tuple, str], controls: Sequence[tuple[str, Sequence]], *, title: str,
                  note: str = "", labels: Mapping[str, str] | None = None, search: bool = False,
                  keys: Sequence[str] | None = None, missing: str = "the live widget (Jupyter or Colab) computes any value") -> str:
    """A complete HTML page that shows one of ``panels`` at a time.

    panels: {(v_1, ..., v_m): html} — one value per control; controls: [(name, values)] in order,
    each shown as a ``<select>`` (first value selected). labels: {str(value): text shown in the list}
    (default: the value). search: a box that selects the first control's value by typing it; a value
    with no panel says so, and ``missing`` (HTML) says how to get it.
    keys: the hash parameter of each control (default ``c0``, ``c1``, ...): ``page.html#c0=v&c1=w``
    starts on that panel, and in the book's iframe the enclosing page's hash does (and follows the
    controls), :mod:`abstopk_mini.dashboard.frame`. The frame takes the height of its content.
    A combination with no panel says so. Raises ValueError if a panel's key does not match the controls."""
    if not panels:
        raise ValueError("panels is empty; pass at least one {(value, ...): html}")
    if not controls:
        raise ValueError("controls is empty; pass [(name, values)], one per element of a panel key")
    values = [[str(v) for v in vals] for _, vals in controls]
    for key in panels:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != len(controls) or any(str(v) not in vals for v, vals in zip(key, values)):
            raise ValueError(f"panel key {key!r} does not match the controls {[name for name, _ in controls]} "
                             f"with values {values}")
    keys = [f"c{j}" for j in range(len(controls))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(controls) or len(set(keys)) != len(keys) or not all(re.fullmatch(r"[A-Za-z][\w-]{0,39}", k) for k in keys):
        raise ValueError(f"keys must be {len(controls)} distinct short names (letters, digits, '-', '_'), one per "
                         f"control; got {keys!r}")
    labels = dict(labels or {})
    bar = []
    for j, ((name, _), vals) in enumerate(zip(controls, values)):
        opts = "".join(f'<option value="{_html.escape(v, quote=True)}">{_html.escape(labels.get(v, v))}</option>' for v in vals)
        bar.append(f'<span><label for="tw-c{j}">{_html.escape(name)}</label><select id="tw-c{j}">{opts}</select></span>')
    if search:
        bar.append(f'<span><label for="tw-find">or type a {_html.escape(controls[0][0])}</label>'
                   '<input id="tw-find" size="8"></span>')
    body = "".join(f'<div class="panel" data-key="{_html.escape(_key(k if isinstance(k, tuple) else (k,)), quote=True)}">'
                   f"{v}</div>" for k, v in panels.items())
    data = json.dumps({"names": [name for name, _ in controls], "keys": keys, "missing": missing}).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_html.escape(title)}</title><style>{_CSS}</style></head><body><div class=\"tw\">"
            f"<noscript>Switching needs JavaScript; the first option is shown below.</noscript>"
            f"<div class=\"bar\">{''.join(bar)}</div>"
            + (f'<div class="note">{note}</div>' if note else "")
            + '<div id="tw-asked" class="miss" role="status" style="display:none"></div>'
            + f'<div id="tw-miss" class="miss" style="display:none">not precomputed in this page; {missing}</div>'
            f"{body}</div><script type=\"application/json\" id=\"tw-controls\">{data}</script>"
            f"<script>{FRAME_JS}{_JS}</script></body></html>")


def switcher(panels: Mapping[tuple, str], controls: Sequence[tuple[str, Sequence]], *, title: str,
             height: int = 800, **kw):
    """:func:`switcher_html` in a notebook cell: a :class:`abstopk_mini.dashboard.Page` in an iframe of
    ``height`` px, returned as ``IPython.display.HTML`` (or the Page without IPython)."""
    from ..dashboard.notebook import Page

    return Page(switcher_html(panels, controls, title=title, **kw), height).output()


# =============================================================================== status lines (shared with the widgets)
def latent_status(codes: dict, sides: Sequence[str] = ("male", "female")) -> str:
    """One line on a :func:`~abstopk_mini.chapters.plots_concepts.pair_codes` result: how often the
    latent is non-zero on each side's samples, and its mean code per side."""
    za, zb = codes["z_a"], codes["z_b"]
    return (f"latent {codes['latent']}: non-zero on {100 * float((za != 0).double().mean()):.0f}% of {sides[0]} and "
            f"{100 * float((zb != 0).double().mean()):.0f}% of {sides[1]} samples; mean z "
            f"{float(za.mean()):+.3g} / {float(zb.mean()):+.3g}")


def pair_status(results: Mapping[str, dict]) -> str:
    """One line on :func:`~abstopk_mini.chapters.plots_concepts.pair_differences` results per SAE."""
    return "; ".join(f"{name}: latent {r['latents'][0]} separates most (Δz = {float(r['diff'][0]):+.3g})"
                     for name, r in results.items())


# =============================================================================== the twins
def latent_twin(sae, word_acts, pairs, candidates: Sequence[tuple[str, int]], *, neutral_words: Sequence[str] = (),
                sides: Sequence[str] = ("male", "female"), test_pairs=None, model=None, texts: Sequence[str] = (),
                orientation: int = 1, preact: bool = True, height: int = 1100, title: str = "latent explorer",
                key: str = "explorer-latent"):
    """Twin of :func:`~abstopk_mini.chapters.widgets_lm.latent_widget`: one panel per latent of
    ``candidates`` ([(label, latent)]), each with the widget's status line, its pair figure and, if
    ``model`` is given, the token highlight of every sentence of ``texts`` (indigo: side a, pink:
    side b, after multiplying by ``orientation``). key: the hash parameter (``#explorer-latent=2500``);
    a latent id typed in the page that is not a candidate gets a message naming the live widget."""
    pairs = check_pairs(word_acts, pairs)
    if not candidates:
        raise ValueError("candidates is empty; pass [(label, latent)], e.g. widgets_lm.latent_candidates(report)")
    tokens = [pc.text_tokens(model, t, word_acts.layer) for t in texts] if model is not None else []
    panels, labels = {}, {}
    for label, j in candidates:
        j = check_latent(sae, j)
        codes = pc.pair_codes(sae, word_acts, pairs, j, neutral_words)
        body = [f'<div class="status">{_html.escape(latent_status(codes, sides))}</div>',
                figure_html(pc.latent_pair_figure(codes, sides, test_pairs, preact=preact))]
        for tok in tokens:
            tv = pc.token_values(sae, tok, j)
            body.append(pc.highlight_html(tv["tokens"], orientation * tv["z"],
                                          title=f"latent {j} on each token (indigo: {sides[0]} side, pink: {sides[1]} side)"))
        panels[(j,)] = "".join(body)
        labels[str(j)] = label
    note = ("Precomputed for these latents; in Jupyter or Colab the live widget takes any latent and any sentence.")
    return switcher(panels, [("latent", [j for _, j in candidates])], title=title, height=height, labels=labels,
                    note=note, search=True, keys=[key],
                    missing="in Jupyter or Colab the live widget (<code>widgets_lm.latent_widget</code>) computes any latent")


def pair_twin(saes: Mapping[str, object], word_acts, pairs, top: int = 10, *, height: int = 760,
              title: str = "word-pair explorer"):
    """Twin of :func:`~abstopk_mini.chapters.widgets_lm.pair_widget`: one panel per word pair of
    ``pairs``, each with the widget's status line and the ``top`` latents of each SAE that separate
    the pair's two words most."""
    if not saes:
        raise ValueError("saes is empty; pass a dict name -> SAE")
    pairs = check_pairs(word_acts, pairs)
    panels, labels = {}, {}
    for a, b in pairs:
        results = {name: pc.pair_differences(sae, word_acts, (a, b), top) for name, sae in saes.items()}
        panels[(f"{a}/{b}",)] = (f'<div class="status">{_html.escape(pair_status(results))}</div>'
                                 + figure_html(pc.pair_difference_figure(results)))
        labels[f"{a}/{b}"] = f"{a} / {b}"
    return switcher(panels, [("word pair", [f"{a}/{b}" for a, b in pairs])], title=title, height=height,
                    labels=labels, note="Every pair of the chapter is precomputed.", keys=["explorer-pair"])


def toy_twin(widths: Sequence[float], ks: Sequence[int], *, P: int = 8, n_active: int = 3, n_tokens: int = 400_000,
             seed: int = 0, height: int = 720, progress=None):
    """Twin of :func:`~abstopk_mini.chapters.widgets.toy_widget` at a fixed ``P``: an AbsTopK / TopK
    pair trained (:func:`~abstopk_mini.chapters.widgets.toy_pair`) for every width multiple of
    ``widths`` and every k of ``ks`` (k is capped at the width, as the widget does), each panel the
    widget's heat maps with their metrics. progress: called with (done, total) after each pair."""
    import time

    from .widgets import WIDTH_CHOICES, toy_pair, toy_pair_figure

    bad = [w for w in widths if w not in WIDTH_CHOICES]
    if bad or not widths:
        raise ValueError(f"widths must be a non-empty subset of {WIDTH_CHOICES}; got {list(widths)!r}")
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty list of ints >= 1; got {list(ks)!r}")
    panels, total = {}, len(widths) * len(ks)
    for w in widths:
        for k in ks:
            kv = min(k, max(1, int(round(w * P))))
            t0 = time.perf_counter()
            result = toy_pair(P=P, width_mult=w, k=kv, n_active=n_active, n_tokens=n_tokens, seed=seed)
            status = (f"P={P}, d_sae={result['rows'][0]['d_sae']}, k={kv}: trained in {time.perf_counter() - t0:.1f} s"
                      + (f" (k capped at the width from {k})" if kv != k else ""))
            panels[(w, k)] = f'<div class="status">{_html.escape(status)}</div>' + figure_html(toy_pair_figure(result))
            if progress:
                progress(len(panels), total)
    note = (f"P = {P} signed axes in d = {2 * P} dimensions, {n_active} active per sample, {n_tokens:,} training "
            "samples; every combination below was trained when the chapter ran. The live widget (Jupyter or Colab) "
            "also varies P.")
    return switcher(panels, [("width d_sae / P", list(widths)), ("k", list(ks))], title="toy explorer",
                    height=height, note=note, keys=["toy-width", "toy-k"])
