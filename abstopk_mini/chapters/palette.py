r"""The book's palette: how a figure names and draws each method, keyed by the activation's name.

* one colour, label and marker per activation (:data:`ACTIVATION_COLORS`, :data:`ACTIVATION_LABELS`,
  :data:`ACTIVATION_MARKERS`; AbsTopK red, TopK blue, ...), keyed by
  :attr:`abstopk_mini.nonlinearities.ActivationSpec.name`: the core spec says what an activation
  is, this module how the book shows it;
* the methods of the theory chapters that are not activations (ISTA, FISTA, IHT, one step,
  the Lasso): :data:`METHOD_COLORS` (with the activations), in hues no activation uses;
* the two sides of a concept axis and the neutral words (male / female / neutral):
  :data:`GENDER_COLORS` (:data:`SIDE_COLORS` as a tuple, :data:`SIDE_LIGHT` for token
  highlights), distinct from every method colour and from the dashboards' sign colours
  (:data:`abstopk_mini.dashboard.html.SIGN_COLORS`).

Distinct means a CIEDE2000 colour difference of at least 15 (tests/test_plots_style.py), and
for the gender sides also a hue at least 45° from AbsTopK's and TopK's
(tests/test_layout_check.py): a navy beside TopK's blue reads as "blue" whatever its ΔE.
Re-exported by :mod:`abstopk_mini.chapters.style`, where the figures read it.
"""

from __future__ import annotations

from ..nonlinearities import SPECS

__all__ = [
    "ACTIVATION_COLORS", "ACTIVATION_LABELS", "ACTIVATION_MARKERS", "METHOD_COLORS", "GENDER_COLORS", "SIDE_COLORS",
    "SIDE_LIGHT", "REFERENCE", "BAND", "SERIES", "color", "label", "marker", "line_style", "rgb",
]

#: one colour per activation (keyed by its spec's name), so a method has the same colour in every chapter
ACTIVATION_COLORS = {
    "relu": "#7f7f7f", "jumprelu": "#2ca02c", "absjumprelu": "#9467bd", "topk": "#1f77b4", "abstopk": "#d62728",
    "batchtopk": "#17becf", "batchabstopk": "#ff7f0e",
}
#: how figures name an activation ("abstopk" -> "AbsTopK")
ACTIVATION_LABELS = {
    "relu": "ReLU", "jumprelu": "JumpReLU", "absjumprelu": "AbsJumpReLU", "topk": "TopK", "abstopk": "AbsTopK",
    "batchtopk": "BatchTopK", "batchabstopk": "BatchAbsTopK",
}
#: a marker per activation, for figures that tell many methods apart on one panel
ACTIVATION_MARKERS = {"topk": "o", "abstopk": "s", "batchtopk": "v", "batchabstopk": "^", "jumprelu": "D",
                      "absjumprelu": "P", "relu": "x"}
_FISTA = "#4d004b"
#: the activations, plus the sparse-coding methods of chapters 1-3 (hues no activation uses)
METHOD_COLORS = {
    **ACTIVATION_COLORS,
    "one step": "#222222", "IHT, η=1": "#bd9e39", "IHT, η=1/L": "#6b6b00",
    "ISTA": "#e7298a", "FISTA": _FISTA, "Lasso (FISTA)": _FISTA,
}
#: side a (male), side b (female) and neutral words; no method or dashboard sign colour is near, and
#: neither side shares a hue with AbsTopK or TopK, whose colours stand beside them in chapters 7-9
#: (green and orchid: at least 45° of CIE LCh hue from AbsTopK red and TopK blue)
GENDER_COLORS = {"male": "#448866", "female": "#e8a0cc", "neutral": "#c7c7c7"}
#: the same as a tuple (side a, side b, neutral), for concept axes other than gender too
SIDE_COLORS = (GENDER_COLORS["male"], GENDER_COLORS["female"], GENDER_COLORS["neutral"])
#: light versions of side a and side b, for backgrounds under text (token highlights)
SIDE_LIGHT = ("#a6dba0", GENDER_COLORS["female"])
#: reference lines and markers that are not a method (zero lines, "no intervention", DiM)
REFERENCE = "#000000"
#: shaded ranges (the bidirectional band)
BAND = "#2ca02c"
#: line styles for series that are not methods (layer statistics, token groups): black and greys,
#: told apart by marker and dash, so they never read as a method's colour
SERIES = (
    {"color": "#000000", "marker": "o", "ls": "-"},
    {"color": "#5a5a5a", "marker": "s", "ls": "--"},
    {"color": "#a0a0a0", "marker": "^", "ls": ":"},
)


_BY_PREFIX = {**METHOD_COLORS, **{ACTIVATION_LABELS[name]: c for name, c in ACTIVATION_COLORS.items()}}


def color(name: str, default: str = REFERENCE) -> str:
    """The colour of a method named by its activation (``"abstopk"``, ``"abstopk-k32"``), its
    label (``"AbsTopK latent 398"``) or a key of :data:`METHOD_COLORS` (``"ISTA, λ=0.05"``):
    the longest name that starts ``name`` wins (``"IHT, η=1/L"`` before ``"IHT, η=1"``);
    ``default`` when none does."""
    for key in sorted(_BY_PREFIX, key=len, reverse=True):
        if name.startswith(key):
            return _BY_PREFIX[key]
    return default


def label(name: str) -> str:
    """The display name of an activation (``"abstopk"`` -> ``"AbsTopK"``); other names unchanged."""
    return ACTIVATION_LABELS.get(name, name)


def line_style(name: str) -> dict:
    """Line keywords for an activation (or ``"abstopk-k32"``): its colour, dashed when signed."""
    spec = SPECS.get(name.split("-")[0])
    return {"color": color(name), "ls": "--" if spec is not None and spec.signed else "-"}


def marker(name: str, default: str = "o") -> str:
    """The marker of an activation (or ``"abstopk-k32"``); ``default`` for other names."""
    return ACTIVATION_MARKERS.get(name.split("-")[0], default)


def rgb(hex_color: str) -> str:
    """``"#393b79"`` -> ``"57,59,121"`` (for CSS ``rgba(...)``)."""
    h = hex_color.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"hex_color must look like '#rrggbb'; got {hex_color!r}")
    return ",".join(str(int(h[i:i + 2], 16)) for i in (0, 2, 4))
