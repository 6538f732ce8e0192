"""One self-contained HTML page that browses many latents' dashboards: :func:`browser_html`.

A sidebar lists the requested latents (id and the one-line summary of each side); a search box
filters them by latent id (a number: that id first, then the ids starting with it; an id the page
does not hold says so and names the command that computes it, :func:`rerun_command`) or by whole
token (each word of the query must be, case-insensitively and without a token's leading space or
``▁``, one of a latent's chosen tokens, summary words or logit tokens: "he" finds *he*, not
*the* or *she*; latents whose chosen tokens it is come first). Only the selected latent is
rendered (by the renderer of :mod:`.html`), so the page opens as fast as the list is drawn.

Links. The hash ``#latent=ID`` selects a latent. Inside the book's ``<iframe srcdoc>`` the hash is
the enclosing page's (:mod:`.frame`): clicking a latent writes it there, and opening the book's
page at ``...#latent=ID`` (or following such a link) selects it; ``key`` renames the parameter
for pages shown side by side. The frame takes the height of its content.

Size. The page is the compact payload (:mod:`.payload`) plus ~10 kB of CSS and JS; per latent it
grows with ``2 · n_top · (before + after + 1)`` context tokens (a token index and a 3-digit value
each) and ``4 · n_logits`` logit entries. :func:`write_browser` reports the size written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..io import atomic_write
from .html import page_html
from .payload import payload
from .records import DashboardData

__all__ = ["browser_html", "write_browser", "write_page", "rerun_command"]

_CSS = """
.wrap{display:flex;align-items:flex-start}
.side{width:270px;flex:0 0 270px;border-right:1px solid #ddd;display:flex;flex-direction:column;background:#fafafa}
.side input{margin:8px;padding:5px 7px;font-size:13px;border:1px solid #bbb;border-radius:4px}
.side .count{margin:0 9px 4px}
.miss{color:#8c510a}.side .miss{margin:0 9px 6px;color:#8c510a;font-size:12px;white-space:normal}
.side .miss code{font-size:11px;overflow-wrap:anywhere}
.list{overflow-y:auto;max-height:640px}
.item{padding:4px 9px;cursor:pointer;border-bottom:1px solid #eee;font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.item:hover{background:#eef}.item.sel{background:#dde}
.item b{display:inline-block;min-width:42px}
.main{flex:1;min-width:0}
"""

_JS = r"""
const req=D.req.length?D.req:D.L.map(r=>r.i);const KEY=OPT.key;
function norm(t){return String(t).replace(/^[\s\u2581\u0120]+/,'').replace(/\s+$/,'').toLowerCase();}
// per latent: how often each whole token (lower case, leading space / \u2581 dropped) is a chosen token,
// a summary word or a logit token; a search term matches whole tokens only
const hay={};for(const r of D.L){const m=new Map(),add=(t,w)=>{t=norm(t);if(t)m.set(t,(m.get(t)||0)+w);};
  for(const c of r.P.concat(r.N))add(D.tok[c[0][c[2]]],3);
  for(const s of [r.sp,r.sn])for(const part of (s||'').split(' \u00b7 '))add(part.replace(/ \u00d7\d+$/,''),0);
  for(const l of r.lg)for(const e of l)add(D.tok[e[0]],1);hay[r.i]=m;}
let current=null;
function item(i){const r=byId(D,i);return '<div class="item" data-latent="'+i+'" title="+ '+esc(r.sp)+' | \u2212 '+esc(r.sn)+'"><b>'+i+
  '</b><span class="pos">'+esc(readable(r.sp.split(' \u00b7 ')[0])||'\u2014')+'</span> | <span class="'+(D.signed?'neg':'muted')+'">'+esc(readable((D.signed?r.sn:byId(D,r.ap)?byId(D,r.ap).sp:'').split(' \u00b7 ')[0])||'\u2014')+'</span></div>';}
function missing(i){return 'latent '+esc(i)+' is not in this page\u2019s '+req.length+' precomputed latents; run <code>'+
  esc(OPT.cmd.replace(/\{latent\}/g,String(i)))+'</code>';}
function filter(q){const terms=q.trim().split(/[\s,]+/).map(norm).filter(Boolean);let ids=req,miss='';
  if(terms.length===1&&/^\d+$/.test(terms[0])){const n=+terms[0],all=D.L.map(r=>r.i);
    ids=all.filter(i=>String(i).startsWith(terms[0])).sort((a,b)=>(a===n?-1:b===n?1:a-b));if(!all.includes(n))miss=missing(n);}
  else if(terms.length){const score=i=>terms.reduce((s,t)=>s+(hay[i].get(t)||0),0);
    ids=req.filter(i=>terms.every(t=>hay[i].has(t))).map((i,k)=>[score(i),k,i]).sort((a,b)=>b[0]-a[0]||a[1]-b[1]).map(x=>x[2]);}
  document.getElementById('list').innerHTML=ids.map(item).join('');
  document.getElementById('miss').innerHTML=miss;
  document.getElementById('count').textContent=ids.length+' of '+req.length+' latents';mark();}
function mark(){for(const el of document.querySelectorAll('.item'))el.classList.toggle('sel',+el.dataset.latent===current);}
function select(i,link){if(!byId(D,i)){document.getElementById('main').innerHTML='<div class="dash"><p class="miss">'+missing(i)+'</p></div>';
    current=null;mark();return false;}
  current=i;const t0=performance.now();document.getElementById('main').innerHTML=renderLatent(D,i);
  mark();if(link!==false)FRAME.set(KEY,i);window.lastRenderMs=performance.now()-t0;return true;}
document.getElementById('list').addEventListener('click',e=>{const el=e.target.closest('.item');if(el)select(+el.dataset.latent);});
document.getElementById('main').addEventListener('click',e=>{const a=e.target.closest('a[data-latent]');if(a){e.preventDefault();select(+a.dataset.latent);}});
document.getElementById('q').addEventListener('input',e=>filter(e.target.value));
function fromHash(){const v=FRAME.get(KEY);if(v===null||!/^\d+$/.test(v))return false;if(+v!==current)select(+v,false);return true;}
filter('');if(fromHash())FRAME.reveal();else select(req[0],false);
FRAME.onHash(fromHash);
document.title=D.title+' \u00b7 '+req.length+' latents';
"""

_BODY = ('<div class="wrap"><div class="side"><input id="q" type="search" placeholder="latent id or whole token" '
         'aria-label="search latents by id or by whole token"><div id="count" class="count muted"></div>'
         '<div id="miss" class="miss" role="status"></div><div id="list" class="list"></div></div>'
         '<div id="main" class="main"></div></div>')


def rerun_command(data: DashboardData, sae: str | None = None) -> str:
    """The command that computes the dashboard of a latent this page lacks, with ``{latent}`` for its id.

    sae: the ``--sae`` argument (default: the shipped SAE's name for this SAE's model, layer, activation,
    width and k, as ``abstopk_mini.pretrained`` names them); the harvest is the one the page was read on,
    under the runs folder (``$ABSTOPK_RUNS``, default ``runs``)."""
    s, h = data.sae, data.harvest
    if sae is None:
        sae = f"{s.get('model_name') or h.get('model')}-L{h.get('layer')}-{s.get('activation')}-{s.get('d_sae')}-k{s.get('k')}"
    acts = str(h.get("dir") or "HARVEST_DIR")
    acts = acts if acts.startswith("/") else f"runs/{acts}"
    return f"python -m abstopk_mini dashboard --sae {sae} --acts {acts} --latents {{latent}} --out latent-{{latent}}.html"


def browser_html(data: DashboardData, latents=None, *, digits: int = 3, title: str | None = None,
                 key: str = "latent", sae: str | None = None) -> str:
    """The browser page of ``latents`` (default: all in ``data``), see the module docstring.

    key: the name of its parameter in the hash (``#latent=12``; pages shown side by side need their
    own); sae: the ``--sae`` the "not precomputed" message names (:func:`rerun_command`)."""
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,39}", key):
        raise ValueError(f"key must be a short name (letters, digits, '-', '_'; a letter first), the page's hash "
                         f"parameter as in #latent=12; got {key!r}")
    p = payload(data, latents, digits=digits, title=title)
    opt = json.dumps({"key": key, "cmd": rerun_command(data, sae)}).replace("</", "<\\/")
    return page_html(p, p["title"], _BODY, extra_css=_CSS, extra_js=f"const OPT={opt};\n{_JS}")


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
