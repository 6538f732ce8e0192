r"""A self-contained HTML dashboard of one latent: :func:`dashboard_html`.

The page carries its data (:mod:`.payload`, inline JSON), its CSS and one small renderer in
JavaScript; it loads nothing from anywhere, so it works offline, in a notebook output, in the
built book and in Colab. What it shows for latent :math:`i`:

* a header with the SAE and harvest, the firing rate of each sign (:math:`n^+/N`, :math:`n^-/N`)
  and a one-line summary of each side;
* the signed histogram of the non-zero codes :math:`z_{t,i}` (inline SVG, log-scaled counts);
* two columns, positive and negative side: the logit effects of :math:`+d_i` and :math:`-d_i`
  (boosted / suppressed tokens), then the top contexts, each token highlighted in the colour of
  its sign with opacity :math:`|z|/\max|z|` (the max over both sides), its value on hover, and the
  token the context was chosen for outlined. For an unsigned SAE (TopK) the right column is
  the "other side": the positive side of the latent with the most antipodal decoder row.

Tokens are shown as text, with a newline as ↵, a tab as →, and every character the page's fonts
cannot draw (control, format, private-use and unassigned code points always; others when the
browser draws them as the same box as a private-use code point) as its code point, ``[U+ADF8]``.

Colours: :data:`SIGN_COLORS`, a brown/teal pair that no method colour
(``abstopk_mini.chapters.style.METHOD_COLORS``) uses.
"""

from __future__ import annotations

import html as _html

from .frame import FRAME_JS
from .payload import payload, to_script
from .records import DashboardData

__all__ = ["SIGN_COLORS", "CSS", "RENDER_JS", "page_html", "dashboard_html"]

#: sign -> (strong colour for text and outlines, light colour for the token highlight at |z| = max)
SIGN_COLORS = {"positive": ("#01665e", "#5ab4ac"), "negative": ("#8c510a", "#d8b365")}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:14px;color:#1a1a1a;margin:0;background:#fff}
.dash{padding:10px 14px;max-width:1240px}
.dash h2{font-size:18px;margin:2px 0 4px}
.muted{color:#666;font-size:12px}
.row{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
.col{flex:1 1 420px;min-width:340px}
.pos{color:%(pos)s}.neg{color:%(neg)s}
.colhead{font-weight:600;font-size:15px;border-bottom:3px solid;padding-bottom:2px;margin:10px 0 6px}
.colhead.pos{border-color:%(pos)s}.colhead.neg{border-color:%(neg)s}
.summ{margin:2px 0}
table.lg{border-collapse:collapse;font-size:12px;margin:0 10px 6px 0}
table.lg td{padding:1px 6px;border-bottom:1px solid #eee;white-space:pre}
table.lg th{text-align:left;font-weight:600;padding:1px 6px}
.lgs{display:flex;flex-wrap:wrap}
.ctx{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;line-height:1.9;
 padding:2px 4px;border-bottom:1px solid #f0f0f0;display:flex;align-items:baseline}
.ctx .tx{flex:1;overflow-wrap:anywhere}
.ctx .rep{color:#777;font-size:11px;margin-left:6px;white-space:nowrap}
.ctx .v{flex:0 0 58px;color:#444;text-align:right;margin-right:8px;font-weight:600}
.t{white-space:pre;border-radius:2px;padding:1px 0}
.t.mx{font-weight:700;outline:2px solid;outline-offset:0}
.t.mx.p{outline-color:%(pos)s}.t.mx.n{outline-color:%(neg)s}
.stats{display:flex;gap:22px;flex-wrap:wrap;margin:4px 0}
.stat b{font-size:15px}
svg text{font-size:11px;fill:#333}
a{color:#1a1a1a}
"""

RENDER_JS = r"""
const POS=%(pos)s, NEG=%(neg)s;
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));}
const GLYPH={},NEVER=/[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Cs}]/u;let INK=null;
function ink(ch){const c=INK.c;c.clearRect(0,0,48,48);c.fillText(ch,4,36);return c.getImageData(0,0,48,48).data.join(',');}
function drawable(ch){  // false: the page's fonts have no glyph for ch (it renders as the same box as a private-use code point)
  if(ch in GLYPH)return GLYPH[ch];if(NEVER.test(ch))return GLYPH[ch]=false;if(ch.codePointAt(0)<0x300)return GLYPH[ch]=true;
  try{if(!INK){const cv=document.createElement('canvas');cv.width=cv.height=48;const c=cv.getContext('2d',{willReadFrequently:true});
      c.font='32px '+getComputedStyle(document.body).fontFamily;INK={c:c};INK.tofu=ink('\u{10FFFD}');}
    return GLYPH[ch]=ink(ch)!==INK.tofu;}catch(e){return GLYPH[ch]=true;}}
function readable(s){let o='';for(const ch of String(s))o+=drawable(ch)?ch:'[U+'+ch.codePointAt(0).toString(16).toUpperCase().padStart(4,'0')+']';return o;}
function shown(s,vis){s=s.replace(/\n/g,'\u21b5').replace(/\t/g,'\u2192');if(vis&&/^ +$/.test(s))s=s.replace(/ /g,'\u2423');return s===''?'\u2205':readable(s);}
function fmt(x){if(x===0)return '0';const a=Math.abs(x);return a>=1000||a<0.01?x.toExponential(2):x.toPrecision(3);}
function pct(n,N){return (100*n/N).toPrecision(3)+' %';}
function rgba(hex,a){const v=parseInt(hex.slice(1),16);return 'rgba('+(v>>16)+','+((v>>8)&255)+','+(v&255)+','+a.toFixed(2)+')';}
function ctxHTML(D,c,vmax,rep){
  const [toks,vals,mx,val,doc,pos]=c;let h='<div class="ctx"><span class="v '+(val>0?'pos':'neg')+'">'+fmt(val)+'</span><span class="tx">';
  for(let k=0;k<toks.length;k++){const v=vals[k],s=D.tok[toks[k]];
    const bg=v===0?'':'background:'+rgba(v>0?POS[1]:NEG[1],Math.min(1,Math.abs(v)/vmax))+';';
    h+='<span class="t'+(k===mx?' mx '+(val>0?'p':'n'):'')+'" style="'+bg+'" title="'+esc(JSON.stringify(s))+'  z = '+fmt(v)+
      (k===mx?'  (doc '+doc+', position '+pos+')':'')+'">'+esc(shown(s))+'</span><wbr>';}
  return h+(rep>1?'</span><span class="rep">\u00d7'+rep+' identical</span>':'</span>')+'</div>';}
function same(a,b){return a[2]===b[2]&&a[0].length===b[0].length&&a[0].every((t,k)=>t===b[0][k])&&a[1].every((v,k)=>v===b[1][k]);}
function ctxList(D,cs,vmax){let h='';for(let k=0;k<cs.length;){let j=k+1;while(j<cs.length&&same(cs[k],cs[j]))j++;h+=ctxHTML(D,cs[k],vmax,j-k);k=j;}return h;}
function lgTable(D,rows,head,cls){let h='<table class="lg"><tr><th class="'+cls+'">'+head+'</th><th></th></tr>';
  for(const [t,v] of rows)h+='<tr><td>'+esc(shown(D.tok[t],true))+'</td><td>'+(v>0?'+':'')+fmt(v)+'</td></tr>';return h+'</table>';}
function histSVG(r){
  const half=r.nn===0,c=half?r.hc.slice(r.hc.length/2):r.hc,n=c.length,W=560,H=150,l=44,b=30,t=8,w=(W-l-8)/Math.max(n,1),m=half?0:n/2;
  let mxc=0;for(const x of c)mxc=Math.max(mxc,x);
  const y=x=>x?(H-b)-(H-b-t)*Math.log10(1+x)/Math.log10(1+mxc):H-b;
  let s='<svg viewBox="0 0 '+W+' '+H+'" width="'+W+'" style="max-width:100%;height:auto" role="img" aria-label="signed activation histogram"><line x1="'+l+'" x2="'+(W-8)+'" y1="'+(H-b)+'" y2="'+(H-b)+'" stroke="#999"/>';
  for(let j=0;j<n;j++){if(!c[j])continue;const lo=(j-m)*r.hw,hi=lo+r.hw,yy=y(c[j]);
    s+='<rect x="'+(l+j*w).toFixed(1)+'" y="'+yy.toFixed(1)+'" width="'+Math.max(w-0.5,0.5).toFixed(1)+'" height="'+((H-b)-yy).toFixed(1)+
      '" fill="'+(j>=m?POS[0]:NEG[0])+'"><title>z in ['+fmt(lo)+', '+fmt(hi)+'): '+c[j]+' tokens</title></rect>';}
  const R=(n-m)*r.hw;s+='<text x="'+l+'" y="'+(H-b+14)+'" text-anchor="middle">'+(half?'':fmt(-R))+'</text><text x="'+(l+m*w)+'" y="'+(H-b+14)+
    '" text-anchor="middle">0</text><text x="'+(W-8)+'" y="'+(H-b+14)+'" text-anchor="end">'+fmt(R)+'</text>'+
    '<text x="'+(l+(W-l)/2)+'" y="'+(H-2)+'" text-anchor="middle">activation z (non-zero only)</text>'+
    '<text x="10" y="'+((H-b)/2+t)+'" transform="rotate(-90 10 '+((H-b)/2+t)+')" text-anchor="middle">tokens (log)</text>'+
    '<text x="'+(l-4)+'" y="'+(t+4)+'" text-anchor="end">'+mxc+'</text></svg>';return s;}
function byId(D,i){for(const r of D.L)if(r.i===i)return r;return null;}
function sideCol(D,r,neg,vmax,head){
  const cs=neg?r.N:r.P,cls=neg?'neg':'pos',lg=neg?[r.lg[2],r.lg[3]]:[r.lg[0],r.lg[1]],d=(neg?'\u2212':'+')+'d<sub>'+r.i+'</sub>';
  let h='<div class="col"><div class="colhead '+cls+'">'+head+'</div><div class="summ"><b>top tokens:</b> '+esc(readable(neg?r.sn:r.sp)||'\u2014')+'</div>';
  h+='<div class="lgs">'+lgTable(D,lg[0],d+' boosts',cls)+lgTable(D,lg[1],d+' suppresses',cls)+'</div>';
  h+='<div class="muted">top '+cs.length+' contexts (hover a token for its value; outlined: the token the context was chosen for)</div>';
  h+=ctxList(D,cs,vmax);if(!cs.length)h+='<div class="muted">never fires on this side</div>';return h+'</div>';}
function renderLatent(D,i){
  const r=byId(D,i);if(!r)return '<p>latent '+esc(i)+' is not in this page</p>';
  const other=!D.signed&&r.ap!==null?byId(D,r.ap):null;let vmax=1e-30;
  for(const q of [r,other])if(q)for(const c of q.P.concat(q.N))for(const v of c[1])vmax=Math.max(vmax,Math.abs(v));
  const N=D.n_tokens,z=N-r.np-r.nn;
  let h='<div class="dash"><h2>Latent '+r.i+'</h2><div class="muted">'+esc(D.title)+' \u00b7 '+N.toLocaleString()+' tokens</div>';
  h+='<div class="stats"><div class="stat pos">+ fires on <b>'+pct(r.np,N)+'</b> ('+r.np.toLocaleString()+')</div>'+
     (D.signed?'<div class="stat neg">\u2212 fires on <b>'+pct(r.nn,N)+'</b> ('+r.nn.toLocaleString()+')</div>':
      '<div class="stat muted">unsigned SAE: z \u2265 0</div>')+
     '<div class="stat muted">silent on '+pct(z,N)+'</div><div class="stat muted">most antipodal decoder row: '+(r.ap===null?'none (the SAE has one latent)':'latent '+r.ap+' (cos '+fmt(r.ac)+')')+'</div></div>';
  h+='<div class="summ"><span class="pos"><b>+</b> '+esc(readable(r.sp)||'\u2014')+'</span> &nbsp;|&nbsp; '+(D.signed?'<span class="neg"><b>\u2212</b> '+esc(readable(r.sn)||'\u2014'):
     '<span class="muted"><b>other side ('+(r.ap===null?'none':r.ap)+')</b> '+esc(other?readable(other.sp):'\u2014'))+'</span></div>';
  h+=histSVG(r)+'<div class="row">'+sideCol(D,r,false,vmax,'Positive side (z &gt; 0)');
  if(D.signed)h+=sideCol(D,r,true,vmax,'Negative side (z &lt; 0)');
  else if(other)h+=sideCol(D,other,false,vmax,'Other side: latent <a href="#latent='+other.i+'" data-latent="'+other.i+'">'+other.i+
     '</a> (decoder cos '+fmt(r.ac)+'), its positive side');
  return h+'</div></div>';}
"""


def _fill(template: str) -> str:
    import json

    pos, neg = SIGN_COLORS["positive"], SIGN_COLORS["negative"]
    if template is RENDER_JS:
        return template.replace("%(pos)s", json.dumps(list(pos))).replace("%(neg)s", json.dumps(list(neg)))
    return template % {"pos": pos[0], "neg": neg[0]}


def page_html(data: dict, title: str, body: str, *, extra_css: str = "", extra_js: str = "") -> str:
    """A complete HTML document: ``data`` (a :func:`~.payload.payload` dict) inline as JSON in
    ``<script id="dash-data">``, the CSS and renderer of this module, then ``body`` and ``extra_js``
    (which may use ``FRAME``, :mod:`.frame`: the page sizes its iframe to its content)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_html.escape(title)}</title><style>{_fill(CSS)}{extra_css}</style></head><body>"
            f"<noscript>This dashboard is drawn by JavaScript in the page; enable it to see the latent.</noscript>"
            f"<script type=\"application/json\" id=\"dash-data\">{to_script(data)}</script>"
            f"{body}<script>{FRAME_JS}{_fill(RENDER_JS)}\nconst D=JSON.parse(document.getElementById('dash-data').textContent);"
            f"\n{extra_js}</script></body></html>")


def dashboard_html(data: DashboardData, latent: int, *, digits: int = 3) -> str:
    """The HTML page of one latent's signed dashboard (with its antipodal partner for an unsigned SAE)."""
    p = payload(data, [latent], digits=digits)
    js = (f"document.getElementById('root').innerHTML=renderLatent(D,{int(latent)});"
          "document.title='latent '+" + str(int(latent)) + "+' \u00b7 '+D.title;")
    return page_html(p, f"latent {int(latent)}", "<div id=\"root\"></div>", extra_js=js)
