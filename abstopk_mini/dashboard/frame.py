r"""What a kernel-free page does when it is shown inside an ``<iframe srcdoc>``: :data:`FRAME_JS`.

The book shows every explorer page in an ``<iframe srcdoc="...">`` (:class:`~.notebook.Page`).
Such a frame's own address is ``about:srcdoc``: ``history.replaceState`` there throws, and a link to
``page#latent=12`` can never reach it. So the page keeps its state in the **host's** hash: the
enclosing page when the frame may reach it (a ``srcdoc`` frame has its parent's origin), else its
own document (a standalone HTML file). The functions below (one global object ``FRAME``):

* ``FRAME.get(key)`` / ``FRAME.set(key, value)`` — read / write ``key=value`` in the host's hash
  (``#latent=2500&topk-latent=3858``: several frames on one page keep their own keys); writing
  never throws and never adds a history entry;
* ``FRAME.onHash(fn)`` — call ``fn`` when the host's hash changes (a link in the book's prose);
* ``FRAME.fit()`` — size the frame to its content (it is called whenever the body's size
  changes); a frame whose parent it cannot reach posts ``{abstopkFrame: true, height, key,
  value}`` to the parent instead, which the listener that :class:`~.notebook.Page` adds applies;
* ``FRAME.reveal()`` — scroll the frame into the host's view (after a deep link selected it).
"""

from __future__ import annotations

__all__ = ["FRAME_JS", "PARENT_JS"]

FRAME_JS = r"""
const FRAME=(function(){
  if(typeof window==='undefined'||typeof document==='undefined')  // not a browser (a renderer run in node)
    return {get:()=>null,set:()=>{},onHash:()=>{},fit:()=>{},reveal:()=>{},framed:false};
  let host=null;
  try{if(window.parent!==window&&window.frameElement&&window.parent.location.href)host=window.parent;}catch(e){host=null;}
  const own=location.protocol==='about:'?null:window;  // a srcdoc document has no address of its own
  function params(w){try{return new URLSearchParams(w.location.hash.replace(/^#/,''));}catch(e){return new URLSearchParams();}}
  function post(msg){try{if(window.parent!==window)window.parent.postMessage(Object.assign({abstopkFrame:true},msg),'*');}catch(e){}}
  function get(key){const w=host||own;return w?params(w).get(key):null;}
  function set(key,value){value=String(value);const w=host||own;
    if(!w){post({key:key,value:value});return;}
    const p=params(w);if(p.get(key)===value)return;p.set(key,value);
    try{w.history.replaceState(w.history.state,'','#'+p.toString());}catch(e){post({key:key,value:value});}}
  function onHash(fn){const w=host||own;if(w)w.addEventListener('hashchange',fn);}
  let last=0;
  function fit(){const h=Math.ceil(document.body.getBoundingClientRect().height)+2;if(Math.abs(h-last)<2)return;last=h;
    if(host){try{window.frameElement.style.height=h+'px';return;}catch(e){}}
    post({height:h});}
  function reveal(){if(host)try{window.frameElement.scrollIntoView({block:'start'});}catch(e){}}
  if(window.ResizeObserver)new ResizeObserver(fit).observe(document.body);
  window.addEventListener('load',fit);
  return {get:get,set:set,onHash:onHash,fit:fit,reveal:reveal,framed:window.parent!==window};
})();
"""

#: the host side of :data:`FRAME_JS` for frames that cannot reach their parent (another origin):
#: it resizes the frame that posted a height and writes the key it posted into the page's hash
PARENT_JS = r"""
if(!window.__abstopkFrames){window.__abstopkFrames=true;window.addEventListener('message',function(e){
  const m=e.data;if(!m||m.abstopkFrame!==true)return;
  for(const f of document.getElementsByTagName('iframe')){if(f.contentWindow!==e.source)continue;
    if(typeof m.height==='number'&&m.height>0)f.style.height=Math.min(m.height,20000)+'px';
    if(typeof m.key==='string'){const p=new URLSearchParams(location.hash.replace(/^#/,''));p.set(m.key,String(m.value));
      try{history.replaceState(history.state,'','#'+p.toString());}catch(err){}}}});}
"""
