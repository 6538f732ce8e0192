"""Signed feature dashboards: per-latent top contexts of each sign, histogram, firing rates, logit
effects — computed from a harvest and an SAE, shown as self-contained HTML (no kernel, no network).

* :mod:`.stream`   one streaming pass: counts, top-N of each side, exact signed histogram
* :mod:`.logits`   the logit lens of ±d_i (final norm + unembedding)
* :mod:`.records`  the JSON-serialisable results (:class:`DashboardData`)
* :mod:`.data`     :func:`compute_dashboards`: harvest + SAE -> DashboardData
* :mod:`.payload`  the compact JSON a page carries
* :mod:`.html`     one latent's self-contained page (CSS, renderer, colours)
* :mod:`.browser`  one page browsing many latents, searchable by id and token
* :mod:`.notebook` :func:`show`: a page in an iframe, for Jupyter, Colab and the built book
* :mod:`.frame`    what a page does in that iframe: deep links in the parent's hash, its height
* :mod:`.judge`    rules over each side's top tokens: do the two sides mean opposite things?

    data = am.dashboard.compute_dashboards(sae, acts_dir, loaded, latents=[3, 17])
    am.dashboard.show(data, 3)                        # in a notebook cell
    am.dashboard.write_browser(data, "latents.html")  # -> size in bytes
"""

from .browser import browser_html, rerun_command, write_browser, write_page
from .data import antipodes, compute_dashboards, select_bidirectional
from .logits import LogitEffects, get_final_norm, logit_effects
from .html import SIGN_COLORS, dashboard_html
from .judge import (Judgement, blind_sample, count_verdicts, judge, judge_latent, lexicon_sides, opposite_lexicon,
                    reading_sheet)
from .notebook import Page, show
from .payload import payload
from .records import Context, DashboardData, LatentDashboard, load_union
from .stream import LatentStats, latent_stats

__all__ = ["browser_html", "rerun_command", "write_browser", "write_page", "SIGN_COLORS", "dashboard_html", "Page", "show", "payload",
           "compute_dashboards", "select_bidirectional", "antipodes", "LogitEffects", "get_final_norm",
           "logit_effects", "Judgement", "judge", "judge_latent", "count_verdicts", "opposite_lexicon", "lexicon_sides", "blind_sample", "reading_sheet", "Context", "DashboardData", "LatentDashboard", "load_union", "LatentStats", "latent_stats"]
