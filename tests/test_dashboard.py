"""Signed dashboards: every number against a direct computation on the tiny GPT-2 (and a tiny Gemma-3)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import abstopk_mini as am
from abstopk_mini import dashboard as dash
from abstopk_mini.dashboard.stream import latent_stats, pack_keys, unpack_keys

from conftest import TINY_SENTENCES

N_TOP, BEFORE, AFTER, BATCH = 5, 6, 3, 100


@pytest.fixture(scope="module")
def acts_dir(tiny_gpt2, tmp_path_factory):
    """~1200 tokens in shards of 256; every document appears 3 times, so exact ties occur."""
    docs = [" ".join(TINY_SENTENCES[i:] + TINY_SENTENCES[:i]) for i in range(6)] * 3
    out = tmp_path_factory.mktemp("dash_acts")
    am.lm.activations.harvest(tiny_gpt2, docs, layer=1, n_tokens=1200, out_dir=out, context_length=32,
                           batch_size=8, shard_tokens=256, min_length=2, progress=False)
    return out


def _sae(activation: str, acts_dir) -> am.SAE:
    """A random SAE with the book's input scale (E‖s x‖² = d_in) centred on the data (b_dec ≈ s · mean x),
    so that most latents fire."""
    X = am.lm.shards.load_activations(acts_dir)
    s = float((32 / X.pow(2).sum(1).mean()).sqrt())
    sae = am.SAE(am.SAEConfig(d_in=32, d_sae=48, activation=activation, k=4, input_scale=s, device="cpu", seed=3))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_enc.copy_(0.05 * torch.randn(48, generator=g))
        sae.b_dec.copy_(s * X.mean(0) + 0.1 * torch.randn(32, generator=g))
    return sae.eval()


@pytest.fixture(scope="module", params=["abstopk", "topk"])
def computed(request, tiny_gpt2, acts_dir):
    sae = _sae(request.param, acts_dir)
    data = dash.compute_dashboards(sae, acts_dir, tiny_gpt2, latents=list(range(48)), n_top=N_TOP,
                                   before=BEFORE, after=AFTER, batch_size=BATCH)
    ds = am.lm.shards.ShardDataset(acts_dir)
    cols = {k: torch.cat([ds.read_shard(i, k) for i in range(len(ds.shards))])
            for k in ("activations", "token_ids", "chunk_index", "doc_index", "position")}
    with torch.no_grad():  # the same batches as the streaming pass: the same instructions per row
        z_same = torch.cat([sae.encode(b) for i in range(len(ds.shards)) for b in ds.read_shard(i).split(BATCH)])
        z_full = sae.encode(cols["activations"])  # one batch: equal up to fp32 rounding
    return SimpleNamespace(sae=sae, data=data, z=z_same, z_full=z_full, **cols)


def _top(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest positive values, ties by the smaller index (brute force)."""
    idx = np.nonzero(values > 0)[0]
    order = np.lexsort((idx, -values[idx]))
    return idx[order][:n]


def test_counts_rates_and_top_contexts_equal_brute_force(computed):
    c = computed
    assert c.data.n_tokens == len(c.z) == 1200
    for rec in c.data.latents:
        zi = c.z[:, rec.latent].numpy()
        assert (rec.n_pos, rec.n_neg) == (int((zi > 0).sum()), int((zi < 0).sum()))
        assert rec.pos_rate == rec.n_pos / 1200 and rec.neg_rate == rec.n_neg / 1200
        for side, ctxs, sign in ((0, rec.top_pos, 1.0), (1, rec.top_neg, -1.0)):
            expect = _top(sign * zi, N_TOP)
            assert [x.token_index for x in ctxs] == expect.tolist()
            got = torch.tensor([x.value for x in ctxs], dtype=torch.float32)
            torch.testing.assert_close(got, torch.from_numpy(zi[expect]), rtol=0, atol=0)  # same code path
            assert all(np.sign(x.value) == sign for x in ctxs)
        if not c.sae.cfg.signed:
            assert rec.n_neg == 0 and rec.top_neg == []
    assert any(len(set(x.value for x in r.top_pos)) < len(r.top_pos) for r in c.data.latents), "no ties exercised"
    assert sum(r.n_pos > N_TOP for r in c.data.latents) >= 30  # most latents fire: the test is not vacuous


def test_context_windows_tokens_and_values(computed):
    c = computed
    for rec in c.data.latents:
        for ctx in rec.top_pos + rec.top_neg:
            g = ctx.token_index
            rows = [t for t in range(g - BEFORE, g + AFTER + 1)
                    if 0 <= t < 1200 and c.chunk_index[t] == c.chunk_index[g]]
            assert ctx.token_ids == c.token_ids[rows].tolist()
            assert rows[ctx.max_pos] == g
            assert (ctx.doc, ctx.chunk, ctx.position) == (int(c.doc_index[g]), int(c.chunk_index[g]), int(c.position[g]))
            # re-encoded in other batches: fp32 rounding of a 32-term dot product, relative to the code scale
            scale = c.z_full[:, rec.latent].abs().max().item()
            torch.testing.assert_close(torch.tensor(ctx.values), c.z_full[rows, rec.latent], rtol=1e-5, atol=1e-5 * scale)
            assert np.sign(ctx.values[ctx.max_pos]) == np.sign(ctx.value)


def test_histogram_equals_numpy_counts(computed):
    c = computed
    for rec in c.data.latents:
        zi = c.z[:, rec.latent].double().numpy()
        if rec.n_pos + rec.n_neg == 0:
            assert rec.hist_counts == []
            continue
        w, m = rec.hist_width, len(rec.hist_counts) // 2
        R = w * 32  # n_bins = 64 by default: 32 per side; R is a power of two just above max |z|
        amax = np.abs(zi).max()
        assert amax < R <= 2 * amax and np.log2(R).is_integer()
        edges = np.arange(m + 1) * w
        pos = np.histogram(zi[zi > 0], bins=edges)[0]
        neg = np.histogram(-zi[zi < 0], bins=edges)[0]
        assert rec.hist_counts == neg[::-1].tolist() + pos.tolist()
        assert sum(rec.hist_counts) == rec.n_pos + rec.n_neg
        assert rec.hist_edges[0] == -m * w and rec.hist_edges[-1] == m * w


def test_histogram_is_exact_when_the_range_doubles():
    """Batches of growing scale force several doublings; counts equal one histogram made at the end."""
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(50, 3, generator=g) * s for s in (0.01, 0.2, 5.0, 80.0)]
    parts[1][:, 2] = 0.0                             # a column that is silent in one batch
    fake = SimpleNamespace(cfg=SimpleNamespace(d_sae=3), W_dec=torch.zeros(3, 1), encode=lambda x: x)
    stats = latent_stats(fake, parts, n_top=4, n_bins=16)
    z = torch.cat(parts).double().numpy()
    for i in range(3):
        w = stats.bin_width(i)
        assert np.abs(z[:, i]).max() < w * 8 <= 2 * np.abs(z[:, i]).max()
        edges = np.arange(9) * w
        assert stats.hist[i, 0].tolist() == np.histogram(z[z[:, i] > 0, i], bins=edges)[0].tolist()
        assert stats.hist[i, 1].tolist() == np.histogram(-z[z[:, i] < 0, i], bins=edges)[0].tolist()
    with pytest.raises(ValueError, match="n_bins"):
        latent_stats(fake, parts, n_bins=24)


def test_pack_keys_order_and_round_trip():
    v = torch.tensor([3.0, -1.0, 0.0, 1e-30, 3.0, -0.0, 2.5])
    idx = torch.tensor([7, 1, 2, 3, 4, 5, 6])
    keys = pack_keys(v, idx)
    back_v, back_i = unpack_keys(keys)
    assert torch.equal(back_v.view(torch.int32), v.view(torch.int32)) and torch.equal(back_i, idx)
    order = torch.argsort(keys, descending=True).tolist()
    assert [int(idx[j]) for j in order][:4] == [4, 7, 6, 3]  # 3.0 (index 4 before 7), 2.5, 1e-30


def test_logit_effects_equal_final_norm_and_unembedding(computed, tiny_gpt2):
    c = computed
    lm = tiny_gpt2.model
    ln, W_U = lm.transformer.ln_f, lm.lm_head.weight.double()
    s = c.sae.cfg.input_scale
    for rec in c.data.latents[:12]:
        lists = {}
        for name, sign in (("pos", 1.0), ("neg", -1.0)):
            d = sign * c.sae.W_dec[rec.latent].detach().double() / s
            u = (d - d.mean()) / torch.sqrt(d.var(unbiased=False) + ln.eps)
            direct = (u * ln.weight.double()) @ W_U.T  # the LayerNorm bias is what N(0) gives: removed
            lists[name] = direct
            boost, suppress = getattr(rec.logits, f"{name}_boost"), getattr(rec.logits, f"{name}_suppress")
            assert len(boost) == len(suppress) == 8
            for pairs, ref in ((boost, direct.sort(descending=True).values), (suppress, direct.sort().values)):
                ids = [t for t, _ in pairs]
                got = torch.tensor([v for _, v in pairs], dtype=torch.float64)
                torch.testing.assert_close(got, direct[ids], rtol=1e-5, atol=1e-5)      # fp32 vs fp64
                torch.testing.assert_close(got, ref[:8], rtol=1e-5, atol=1e-5)          # and they are the top 8
        torch.testing.assert_close(lists["neg"], -lists["pos"], rtol=0, atol=1e-12)  # ℓ is odd


def test_final_norm_and_logit_lens_on_a_tiny_gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
    lm = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        lm.model.norm.weight.normal_(0, 0.3)
    ids = torch.randint(0, 64, (2, 7))
    hidden = lm(input_ids=ids, output_hidden_states=True).hidden_states
    x = am.lm.hooks.residual_stream(lm, ids, 1)
    norm = dash.get_final_norm(lm)
    torch.testing.assert_close(norm(x), hidden[-1], rtol=1e-5, atol=1e-5)  # it is the norm the model applies
    d = torch.randn(3, 32, dtype=torch.float64)
    rms = d / torch.sqrt(d.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + norm.weight.double())
    direct = rms @ lm.get_output_embeddings().weight.double().T
    torch.testing.assert_close(dash.logit_effects(lm, d.float()).double(), direct, rtol=1e-5, atol=1e-5)


def test_antipodes_and_bidirectional_selection(computed):
    c = computed
    W = c.sae.W_dec.detach()
    C = am.metrics.cosine_matrix(W.T, W.T)
    C.fill_diagonal_(float("inf"))
    for rec in c.data.latents:
        assert rec.antipode == int(C[rec.latent].argmin())
        assert abs(rec.antipode_cos - float(C[rec.latent].min())) < 1e-12
    stats = latent_stats(c.sae, [c.activations], n_top=N_TOP)
    chosen = dash.select_bidirectional(stats, 5, signed=c.sae.cfg.signed, W_dec=W, min_count=2)
    zp, zn = (c.z_full > 0).sum(0), (c.z_full < 0).sum(0)
    if c.sae.cfg.signed:
        weak = torch.minimum(zp, zn)
        ok = [i for i in range(48) if weak[i] >= 2]
        assert chosen == sorted(ok, key=lambda i: (-int(weak[i]) / int(zp[i] + zn[i]), -int(weak[i]), i))[:5]
    else:
        partners = [int(C[i].argmin()) for i in chosen]
        assert all(zp[i] >= 2 and zp[j] >= 2 for i, j in zip(chosen, partners))
        assert len(set(chosen) | set(partners)) == 2 * len(chosen)  # one latent per pair
        alive = [i for i in range(48) if zp[i] >= 2 and zp[int(C[i].argmin())] >= 2]
        assert float(C[chosen[0]].min()) == min(float(C[i].min()) for i in alive)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in = [], {}, None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in = dict(attrs).get("id", "code")
            self.scripts[self._in] = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.scripts[self._in] += data


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    p.close()
    return p


def test_pages_are_self_contained_and_carry_the_data(computed):
    data = computed.data
    rec = next(r for r in data.latents if r.top_pos)
    hostile = rec.top_pos[0].token_ids[0]
    original = data.tokens[hostile]
    data.tokens[hostile] = '</script><img src="http://x">&'  # token text must not end the data script
    try:
        for page, latents in ((dash.dashboard_html(data, rec.latent), [rec.latent]), (dash.browser_html(data), None)):
            assert "http://" not in page.split('id="dash-data">')[0] and "https://" not in page
            tags = _parse(page)
            assert not [t for t, a in tags.tags if t in ("link", "img", "iframe") or (t == "script" and "src" in a)]
            blob = json.loads(tags.scripts["dash-data"])
            assert blob == json.loads(json.dumps(dash.payload(data, latents)))
            assert "renderLatent" in tags.scripts["code"]
    finally:
        data.tokens[hostile] = original
    blob = dash.payload(data, [rec.latent])
    first = blob["L"][0]
    assert first["np"] == rec.n_pos and first["hc"] == rec.hist_counts
    for ctx, packed in zip(rec.top_pos, first["P"]):
        assert [blob["tok"][t] for t in packed[0]] == [data.tokens[t] for t in ctx.token_ids]
        np.testing.assert_allclose(packed[1], ctx.values, rtol=5e-3, atol=0)  # 3 significant digits


def test_records_round_trip_and_notebook_iframe(computed, tmp_path):
    data = computed.data
    back = dash.DashboardData.load(data.save(tmp_path / "d.json"))
    assert back.to_dict() == json.loads(json.dumps(data.to_dict()))
    gz = data.save(tmp_path / "d.json.gz")  # gzip by suffix, byte-identical when saved again (mtime 0)
    assert gzip.decompress(gz.read_bytes()) == (tmp_path / "d.json").read_bytes()
    assert dash.DashboardData.load(gz).to_dict() == back.to_dict()
    assert data.save(tmp_path / "e.json.gz").read_bytes() == gz.read_bytes()
    page = dash.Page(dash.dashboard_html(data, 5), 700)
    tags = _parse(page._repr_html_())
    (tag, attrs), *rest = tags.tags  # the frame, then the listener for frames that cannot reach this page
    assert [t for t, _ in rest] == ["script"]
    assert tag == "iframe" and attrs["srcdoc"] == page.html and "height:700px" in attrs["style"]
    shown = dash.show(data, 5)
    assert "<iframe srcdoc=" in shown.data
    assert dash.show(data).data.startswith("<iframe srcdoc=")  # all latents: the browser


def test_cli_dashboard_json(computed, acts_dir, tiny_gpt2_dir, tmp_path, capsys):
    from abstopk_mini.cli import main

    computed.sae.save(tmp_path / "sae")
    out = tmp_path / "d.html"
    rc = main(["dashboard", "--sae", str(tmp_path / "sae"), "--acts", str(acts_dir), "--latents", "0,5,17",
               "--out", str(out), "--model", str(tiny_gpt2_dir), "--n-top", "3", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["latents"] == [0, 5, 17] and result["page"] == "browser"
    assert result["size_bytes"] == out.stat().st_size > 0
    assert "verdicts" not in result
    rc = main(["dashboard", "--sae", str(tmp_path / "sae"), "--acts", str(acts_dir), "--latents", "0,5,17",
               "--out", str(out), "--model", str(tiny_gpt2_dir), "--n-top", "3", "--judge",
               "--data", str(tmp_path / "d.json.gz"), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    judged = dash.judge(dash.DashboardData.load(tmp_path / "d.json.gz"))  # the same rules on the saved data
    assert result["judgements"] == json.loads(json.dumps([j.to_dict() for j in judged]))
    assert result["verdicts"] == dash.count_verdicts(judged) and result["verdicts"]["n"] == 3
    rc = main(["dashboard", "--sae", str(tmp_path / "sae"), "--acts", str(acts_dir), "--latents", "0,x",
               "--out", str(out), "--model", str(tiny_gpt2_dir), "--json"])
    assert rc == 2 and "--latents" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium(computed, tmp_path):
    rec = next(r for r in computed.data.latents if r.top_pos)
    path = tmp_path / "one.html"
    dash.write_page(dash.dashboard_html(computed.data, rec.latent), path)
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert f"<h2>Latent {rec.latent}</h2>" in dom
    blob = dash.payload(computed.data, [rec.latent])

    def groups(cs):  # the page shows consecutive identical contexts once
        return sum(1 for k, c in enumerate(cs) if k == 0 or c[:3] != cs[k - 1][:3])

    shown = [r for r in blob["L"] if r["i"] == rec.latent or not computed.sae.cfg.signed]
    expected = sum(groups(r["P"]) + (groups(r["N"]) if r["i"] == rec.latent else 0) for r in shown)
    root = dom.split('<div id="root">')[1].split("<script")[0]  # the rendered part, not the renderer's source
    assert root.count('class="t mx') == expected
    assert root.count("<rect") == sum(1 for x in rec.hist_counts if x)
