"""Showing a dashboard in a notebook cell: :func:`show` and :class:`Page`.

A page is shown inside an ``<iframe srcdoc="...">``: the iframe gets its own document, so the
page's script runs wherever the cell's HTML output is displayed — Jupyter, Colab, and the
static Jupyter Book page (where nothing else would run it) — and its CSS cannot leak into the
notebook's. Nothing is fetched: the page is the iframe's source.

The page sizes the frame to its content and keeps its deep link (``#latent=12``) in the enclosing
page's hash (:mod:`.frame`); ``height`` is only the frame's height until the page's script has run.
The small script after the frame does the same for a frame that cannot reach its parent.
"""

from __future__ import annotations

import html as _html

from .frame import PARENT_JS

__all__ = ["Page", "show"]


class Page:
    """An HTML page that a notebook shows in an iframe (``_repr_html_``).

    html: the complete document; height: the iframe's height in px until the page sizes it to its
    content (:mod:`.frame`).
    """

    def __init__(self, html: str, height: int = 900):
        if not isinstance(html, str):
            raise TypeError(f"html must be the page as a str; got {type(html).__name__}")
        self.html, self.height = html, int(height)

    def iframe(self) -> str:
        """``<iframe srcdoc=...>`` holding the page (escaped as an attribute value)."""
        return (f'<iframe srcdoc="{_html.escape(self.html, quote=True)}" style="width:100%;height:{self.height}px;'
                'border:1px solid #ddd;border-radius:4px" title="latent dashboard"></iframe>'
                f"<script>{PARENT_JS}</script>")

    def _repr_html_(self) -> str:
        return self.iframe()

    def save(self, path) -> int:
        """Write the page to ``path``; returns its size in bytes."""
        from .browser import write_page

        return write_page(self.html, path)

    def output(self):
        """What a notebook cell shows: ``IPython.display.HTML`` of :meth:`iframe` (with ``.page`` set to
        this page), or the page itself when IPython is not installed."""
        try:
            from IPython.display import HTML
        except ImportError:
            return self
        import warnings

        with warnings.catch_warnings():  # IPython suggests IFrame(src=...), which needs a URL; srcdoc needs none
            warnings.simplefilter("ignore", UserWarning)
            out = HTML(self.iframe())
        out.page = self
        return out

    def __len__(self) -> int:
        return len(self.html.encode("utf-8"))


def show(data, latent: int | None = None, *, height: int | None = None, **kw):
    """Display ``data`` (a DashboardData) in a notebook: the dashboard of ``latent``, or the browser of
    all its latents when ``latent`` is None. Returns an ``IPython.display.HTML`` of the iframe when
    IPython is installed (a cell's value is shown), else the :class:`Page`. kw go to the page builder."""
    from .browser import browser_html
    from .html import dashboard_html

    if latent is None:
        page = Page(browser_html(data, **kw), height or 1000)
    else:
        page = Page(dashboard_html(data, latent, **kw), height or 900)
    return page.output()
