"""Issue 31, the explorers as the book shows them: a page inside an ``<iframe srcdoc>`` of a parent page,
driven in headless Chromium through chromedriver's WebDriver protocol (plain HTTP, no Selenium needed).

Deep links live in the parent's hash, search matches whole tokens or a latent id, a latent the page
does not hold says so, the frame takes its content's height, tokens without a glyph are shown by code
point, and nothing logs an error to the console.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from abstopk_mini import dashboard as dash
from abstopk_mini.chapters import style, twins
from abstopk_mini.dashboard.logits import LogitEffects

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                                reason="needs Debian chromium and chromium-driver")

TOKENS = {0: " she", 1: " he", 2: " established", 3: " the", 4: "\ue000", 5: " her", 6: "▁She", 7: " war",
          8: " of", 9: " and", 10: " her", 11: " 그녀"}


def _ctx(tok: int, value: float, n: int = 14):
    ids = [8, 9, 3] * (n // 3) + [tok]
    vals = [0.0] * (len(ids) - 1) + [value]
    return dash.Context(token_ids=ids, values=vals, max_pos=len(ids) - 1, value=value, token_index=0, doc=0, chunk=0,
                        position=len(ids))


def _latent(i: int, pos_tok: int, neg_tok: int, n_ctx: int = 10, logit_tok: int = 3):
    lg = LogitEffects([(logit_tok, 1.0)], [(8, -1.0)], [(9, 0.5)], [(4, -0.5), (11, -0.4)])
    name = {t: TOKENS[t].strip(" ▁") for t in TOKENS}
    return dash.LatentDashboard(
        latent=i, n_pos=n_ctx, n_neg=n_ctx, pos_rate=0.01, neg_rate=0.01, hist_width=0.5, hist_counts=[1, 2, 2, 1],
        top_pos=[_ctx(pos_tok, 1.0 + k) for k in range(n_ctx)], top_neg=[_ctx(neg_tok, -1.0 - k) for k in range(n_ctx)],
        logits=lg, summary_pos=f"{name[pos_tok]} ×{n_ctx}", summary_neg=f"{name[neg_tok]} ×{n_ctx}", antipode=None,
        antipode_cos=None)


def _data() -> dash.DashboardData:
    """Latent 7: she / her; 12: established / the; 30: he / war; 2500: She (a ▁-token) / her, many contexts."""
    latents = [_latent(7, 0, 5), _latent(12, 2, 3), _latent(30, 1, 7), _latent(2500, 6, 10, logit_tok=5)]
    return dash.DashboardData(latents=latents, requested=[7, 12, 30, 2500], tokens=dict(TOKENS), n_tokens=1000,
                              sae={"activation": "abstopk", "k": 4, "d_sae": 4096, "signed": True,
                                   "model_name": "gemma-3-270m"},
                              harvest={"dir": "acts/gemma-3-270m-L6-heldout-x", "model": "gemma-3-270m", "layer": 6},
                              settings={"n_top": 10, "selection": "latents"})


class _Driver:
    """The few WebDriver commands the tests need, over HTTP to a chromedriver this object starts."""

    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(["chromedriver", f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                self._call("GET", "/status")
                break
            except OSError:
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": shutil.which("chromium"),
                                   "args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                                            "--no-first-run", "--disable-background-networking"]}}}}
        self.sid = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def cmd(self, method: str, path: str, body=None):
        return self._call(method, f"/session/{self.sid}{path}", body if body is not None or method == "GET" else {})

    def get(self, url: str):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def frame(self, index=None):
        if index is None:
            self.cmd("POST", "/frame/parent", {})
        else:
            self.cmd("POST", "/frame", {"id": index})

    def click(self, css: str):
        el = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        self.cmd("POST", f"/element/{next(iter(el.values()))}/click", {})

    def type(self, css: str, text: str):
        el = next(iter(self.cmd("POST", "/element", {"using": "css selector", "value": css}).values()))
        self.cmd("POST", f"/element/{el}/clear", {})
        self.cmd("POST", f"/element/{el}/value", {"text": text})

    def errors(self) -> list:
        """Console messages of level SEVERE since the last call (exceptions included)."""
        return [e["message"] for e in self.cmd("POST", "/se/log", {"type": "browser"}) if e["level"] == "SEVERE"]

    def close(self):
        try:
            self.cmd("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def driver():
    d = _Driver()
    yield d
    d.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder served over HTTP (as the published book is) with the parent pages."""
    root = tmp_path_factory.mktemp("site")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _book_page(*frames: str) -> str:
    """What the built book holds around a cell's HTML output: prose, then each output in its div."""
    cells = "".join(f'<div class="cell_output docutils container"><div class="output text_html">{f}</div></div>'
                    for f in frames)
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'></head><body><h1>chapter</h1><p>text</p>{cells}</body></html>"


def _wait(driver, script: str, *args, timeout: float = 10.0):
    end = time.time() + timeout
    while True:
        v = driver.js(script, *args)
        if v or time.time() > end:
            return v
        time.sleep(0.1)


def test_issue31_browser_in_srcdoc_frame_links_searches_and_fits(driver, site):
    root, base = site
    data = _data()
    (root / "book.html").write_text(_book_page(dash.Page(dash.browser_html(data), 300).iframe()), encoding="utf-8")
    driver.get(f"{base}/book.html")
    driver.errors()
    driver.frame(0)
    assert _wait(driver, "return document.querySelector('#main h2')&&document.querySelector('#main h2').textContent") == "Latent 7"
    driver.click('.item[data-latent="30"]')  # a click writes the parent's hash, not the frame's
    assert driver.js("return document.querySelector('#main h2').textContent") == "Latent 30"
    driver.frame()
    assert driver.js("return location.hash") == "#latent=30"
    assert driver.errors() == []

    def found(q):
        driver.frame(0)
        driver.type("#q", q)
        ids = driver.js("return [...document.querySelectorAll('#list .item')].map(e=>+e.dataset.latent)")
        msg = driver.js("return document.getElementById('miss').textContent")
        driver.frame()
        return ids, msg

    assert found("she") == ([7, 2500], "")       # whole tokens: " she" and "▁She"; not "established" (latent 12)
    assert found("he")[0] == [30]                # not "the", "she" or "her"
    assert found("HER")[0] == [2500, 7]          # case-insensitive; 2500 first: " her" is also its top logit token
    assert found("30")[0] == [30]                # a number is a latent id
    ids, msg = found("123")
    assert ids == [] and "latent 123 is not in this page\u2019s 4 precomputed latents" in msg
    assert "python -m abstopk_mini dashboard --sae gemma-3-270m-L6-abstopk-4096-k4" in msg and "--latents 123 " in msg

    # the frame is as tall as its content: nothing scrolls inside it, nothing is cut
    assert found("2500")[0] == [2500]
    driver.frame(0)
    driver.click('.item[data-latent="2500"]')
    driver.frame()
    fit = _wait(driver, "const f=document.querySelector('iframe'),d=f.contentDocument;"
                        "return Math.abs(f.clientHeight-d.documentElement.scrollHeight)<=4&&f.clientHeight>300"
                        "?[f.clientHeight,d.body.getBoundingClientRect().height]:null")
    assert fit and fit[0] >= fit[1], fit
    driver.frame(0)
    text = driver.js("return document.getElementById('main').textContent")
    assert "[U+E000]" in text  # a private-use code point: never a glyph
    korean = subprocess.run(["fc-list", ":charset=adf8"], capture_output=True, text=True).stdout.strip() != ""
    assert ("그녀" in text) == korean and ("[U+ADF8][U+B140]" in text) == (not korean)  # as the fonts allow
    driver.frame()
    assert driver.errors() == []


def test_issue31_parent_hash_selects_a_latent_and_a_missing_one_says_so(driver, site):
    root, base = site
    data = _data()
    (root / "two.html").write_text(_book_page(dash.Page(dash.browser_html(data), 300).iframe(),
                                              dash.Page(dash.browser_html(data, key="topk-latent"), 300).iframe()),
                                   encoding="utf-8")
    driver.get(f"{base}/two.html#latent=2500&topk-latent=12")
    heads = []
    for k in (0, 1):
        driver.frame(k)
        heads.append(_wait(driver, "const h=document.querySelector('#main h2');return h&&h.textContent"))
        driver.frame()
    assert heads == ["Latent 2500", "Latent 12"]  # each frame reads its own key
    driver.js("location.hash='#latent=123&topk-latent=12'")  # a link in the prose: the frame follows it
    driver.frame(0)
    assert "latent 123 is not in this page" in _wait(
        driver, "const m=document.querySelector('#main .miss');return m&&m.textContent")
    driver.frame()
    assert driver.errors() == []


def test_issue31_standalone_page_keeps_its_own_hash(driver, tmp_path):
    path = tmp_path / "browser.html"
    dash.write_browser(_data(), path)
    driver.get(path.as_uri() + "#latent=12")
    assert _wait(driver, "const h=document.querySelector('#main h2');return h&&h.textContent") == "Latent 12"
    driver.click('.item[data-latent="30"]')
    assert driver.js("return location.hash") == "#latent=30"
    assert driver.errors() == []


def test_issue31_latent_explorer_says_which_latents_it_holds(driver, site):
    root, base = site
    page = twins.switcher_html({(2500,): "<p>P2500</p>", (2414,): "<p>P2414</p>"}, [("latent", [2500, 2414])],
                               title="t", search=True, keys=["explorer-latent"], missing="the live widget computes any")
    (root / "twin.html").write_text(_book_page(dash.Page(page, 200).iframe()), encoding="utf-8")
    driver.get(f"{base}/twin.html#explorer-latent=2414")
    driver.frame(0)
    assert _wait(driver, "const p=document.querySelector('.panel.on');return p&&p.textContent") == "P2414"
    driver.type("#tw-find", "123\n")
    assert ("latent 123 is not among this page\u2019s 2 precomputed values (2500, 2414); the live widget computes any"
            in driver.js("return document.getElementById('tw-asked').textContent"))
    driver.type("#tw-find", "2500")
    assert driver.js("return document.querySelector('.panel.on').textContent") == "P2500"
    driver.frame()
    assert driver.js("return location.hash") == "#explorer-latent=2500"
    assert driver.errors() == []


def test_issue31_table_headers_are_human_labels():
    t = style.Table([{"train_preact_sign": 0.5, "d_sae": 4096, "some_new_field": 1}],
                    labels={"some_new_field": "new field"})
    page = t._repr_html_()
    assert "<th>pre-act. sign acc. (train)</th><th>width</th><th>new field</th>" in page and "_" not in page
    assert repr(t).splitlines()[0].split() == ["pre-act.", "sign", "acc.", "(train)", "width", "new", "field"]
    assert "<th>other field</th>" in style.Table([{"other_field": 1}])._repr_html_()


def test_issue31_union_joins_dashboards_of_one_sae_and_refuses_others():
    a, b = _data(), _data()
    b.latents = [_latent(99, 1, 0)] + b.latents[:1]
    b.requested, b.settings = [99, 7], {"n_top": 10, "selection": "top_bidirectional=1"}
    u = a.union(b)
    assert u.requested == [7, 12, 30, 2500, 99] and [r.latent for r in u.latents] == [7, 12, 30, 2500, 99]
    assert u.settings["selection"] == "latents + top_bidirectional=1"
    assert "latent 99" not in dash.browser_html(a) and '"i":99' in dash.browser_html(u)
    c = _data()
    c.harvest = dict(c.harvest, layer=9)
    with pytest.raises(ValueError, match="harvest"):
        a.union(c)
    c = _data()
    c.settings = {"n_top": 5, "selection": "latents"}
    with pytest.raises(ValueError, match="settings"):
        a.union(c)


def _browser_latents(nb_path) -> set:
    """The latent ids of every dashboard page among a committed notebook's outputs."""
    import html
    import re

    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    ids = set()
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            page = html.unescape("".join(out.get("data", {}).get("text/html", "")))
            for blob in re.findall(r'<script type="application/json" id="dash-data">(.*?)</script>', page, re.S):
                ids.update(r["i"] for r in json.loads(blob)["L"])
    return ids


def test_issue31_book_browsers_hold_the_gender_and_named_latents():
    """Chapter 11's browsers: the 200 most bidirectional latents and every latent with a gendered side
    (read by the same SAEs on the same harvest); chapter 7's pages: every latent its text names."""
    import re

    from abstopk_mini.repo import find
    from abstopk_mini.runs.sweep import read_results

    results = find("results")
    rec = {(r["activation"], r["seed"]): r for r in read_results(results / "opposite_meanings.jsonl")}
    for act in ("abstopk", "topk"):
        files = rec[act, 0]["files"]
        data = dash.load_union(results / files["top"], results / files["gender"])  # what chapter 11 shows
        assert set(rec[act, 0]["gendered_latents"]) <= set(data.requested)
        assert {"abstopk": 2500, "topk": 3858}[act] in data.requested
    nb = find("notebooks") / "07_bidirectional_features.ipynb"
    prose = " ".join("".join(c["source"]) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]
                     if c["cell_type"] == "markdown")
    named = {int(m) for m in re.findall(r"\blatents? (\d+)\b(?![.,]\d|\s*%)", prose)}  # not "latents 21.7 %"
    assert {2500, 3858, 1685, 2414, 479} <= named
    assert named <= _browser_latents(nb), sorted(named - _browser_latents(nb))
