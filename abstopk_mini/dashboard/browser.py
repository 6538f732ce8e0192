"""One self-contained HTML page that browses many latents' dashboards: :func:`browser_html`.

A sidebar lists the requested latents (id and the one-line summary of each side); a search box
filters them by latent id (a number: that id, or ids starting with it) or by token (text: the
latents whose chosen tokens, summaries or logit tokens contain it, case-insensitive). Only the
selected latent is rendered (by the renderer of :mod:`.html`), so the page opens as fast as the
list is drawn; the URL hash ``#latent=ID`` selects a latent and can be linked to.

Size. The page is the compact payload (:mod:`.payload`) plus ~10 kB of CSS and JS; per latent it
grows with ``2 · n_top · (before + after + 1)`` context tokens (a token index and a 3-digit value
each) and ``4 · n_logits`` logit entries. :func:`write_browser` reports the size written.
"""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write
from .html import page_html
from .payload import payload
from .records import DashboardData

__all__ = ["browser_html", "write_browser"]

_CSS = """
.wrap{display:flex;height:100vh}
.side{width:270px;flex:0 0 270px;border-right:1px solid #ddd;display:flex;flex-direction:column;background:#fafafa}
.side input{margin:8px;padding:5px 7px;font-size:13px;border:1px solid #bbb;border-radius:4px}
.side .count{margin:0 9px 4px}
.list{overflow-y:auto;flex:1}
.item{padding:4px 9px;cursor:pointer;border-bottom:1px solid #eee;font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.item:hover{background:#eef}.item.sel{background:#dde}
.item b{display:inline-block;min-width:42px}
.main{flex:1;overflow-y:auto}
"""

_JS = r"""
const req=D.req.length?D.req:D.L.map(r=>r.i);
const hay={};for(const r of D.L){const s=[r.sp,r.sn];for(const c of r.P.concat(r.N))s.push(D.tok[c[0][c[2]]]);
  for(const l of r.lg)for(const e of l)s.push(D.tok[e[0]]);hay[r.i]=s.join('\u0001').toLowerCase();}
let current=null;
function item(i){const r=byId(D,i);return '<div class="item" data-latent="'+i+'" title="+ '+esc(r.sp)+' | \u2212 '+esc(r.sn)+'"><b>'+i+
  '</b><span class="pos">'+esc(r.sp.split(' \u00b7 ')[0]||'\u2014')+'</span> | <span class="'+(D.signed?'neg':'muted')+'">'+esc((D.signed?r.sn:byId(D,r.ap)?byId(D,r.ap).sp:'').split(' \u00b7 ')[0]||'\u2014')+'</span></div>';}
function filter(q){q=q.trim().toLowerCase();let ids=req;
  if(q){ids=/^\d+$/.test(q)?D.L.map(r=>r.i).filter(i=>String(i).startsWith(q)).sort((a,b)=>(String(a)===q?-1:String(b)===q?1:a-b))
    :req.filter(i=>hay[i].includes(q));}
  document.getElementById('list').innerHTML=ids.map(item).join('');
  document.getElementById('count').textContent=ids.length+' of '+req.length+' latents';mark();}
function mark(){for(const el of document.querySelectorAll('.item'))el.classList.toggle('sel',+el.dataset.latent===current);}
function select(i){if(!byId(D,i))return;current=i;const t0=performance.now();document.getElementById('main').innerHTML=renderLatent(D,i);
  mark();document.getElementById('main').scrollTop=0;if(location.hash!=='#latent='+i)history.replaceState(null,'','#latent='+i);
  window.lastRenderMs=performance.now()-t0;}
document.getElementById('list').addEventListener('click',e=>{const el=e.target.closest('.item');if(el)select(+el.dataset.latent);});
document.getElementById('main').addEventListener('click',e=>{const a=e.target.closest('a[data-latent]');if(a){e.preventDefault();select(+a.dataset.latent);}});
document.getElementById('q').addEventListener('input',e=>filter(e.target.value));
const h=/latent=(\d+)/.exec(location.hash);filter('');select(h&&byId(D,+h[1])?+h[1]:req[0]);
document.title=D.title+' \u00b7 '+req.length+' latents';
"""

_BODY = ('<div class="wrap"><div class="side"><input id="q" type="search" placeholder="latent id or token" '
         'aria-label="search latents by id or token"><div id="count" class="count muted"></div>'
         '<div id="list" class="list"></div></div><div id="main" class="main"></div></div>')


def browser_html(data: DashboardData, latents=None, *, digits: int = 3, title: str | None = None) -> str:
    """The browser page of ``latents`` (default: all in ``data``), see the module docstring."""
    p = payload(data, latents, digits=digits, title=title)
    return page_html(p, p["title"], _BODY, extra_css=_CSS, extra_js=_JS)


def write_browser(data: DashboardData, path, latents=None, **kw) -> int:
    """Write :func:`browser_html` to ``path`` (temp file + rename); return its size in bytes."""
    return write_page(browser_html(data, latents, **kw), path)


def write_page(page: str, path) -> int:
    """Write an HTML page to ``path`` atomically (mode ``0o666 & ~umask``, like any new file);
    return its size in bytes."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path={str(path)!r}: folder {str(path.parent)!r} does not exist; create it first")
    raw = page.encode("utf-8")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(raw))
    return len(raw)
