"""Regression tests for issue 28, part B: every command's inputs belong together (defect 3), shipped
SAEs work wherever an SAE does (13), honest output (6), readers hold the harvest lock (11), and the
dashboard's / steer's input checks (10, 13, 14).

Each test is named after the defect it pins down and fails on the code before the fix.
"""

import fcntl
import importlib
import json
import os
import stat

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.cli import main as cli_main

TINY = {"n_tokens": 2000, "context_length": 32, "sources": ("lee",), "chunk_offsets": (0,)}


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def acts(tiny_gpt2, tiny_gpt2_dir, runs):
    """Harvests of the tiny GPT-2 at layers 0 and 1 (both 32 wide)."""
    from abstopk_mini.runs.store import HarvestSpec, harvest_spec

    return {layer: harvest_spec(HarvestSpec(model=str(tiny_gpt2_dir), layer=layer, **TINY), runs, loaded=tiny_gpt2,
                                progress=False) for layer in (0, 1)}


@pytest.fixture
def sae_dir(acts, runs):
    """An SAE trained by the pipeline on the layer-1 harvest (records model, layer and hook)."""
    from abstopk_mini.runs.store import train_on_harvest

    cfg = am.SAEConfig(d_in=32, d_sae=64, activation="abstopk", k=4, device="cpu")
    _, _, path = train_on_harvest(acts[1], cfg, runs, progress=False, n_tokens=1024, batch_size=256)
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(am.lm.models, "load_model", refuse)


def _one_error(capsys, rc, contains=()) -> str:
    """Exit 2, one ``error:`` line (not reported as a bug), one JSON object on stdout; returns the line."""
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "bug in abstopk_mini" not in lines[0], lines[0]
    for text in (contains,) if isinstance(contains, str) else contains:
        assert text in lines[0], lines[0]
    if captured.out.strip():
        json.loads(captured.out)
    return lines[0]


def _strict(text: str):
    """json.loads that refuses NaN / Infinity, as JSON.parse does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _page_data(html: str):
    start = html.index('id="dash-data">') + len('id="dash-data">')
    return html[start:html.index("</script>", start)]


def _render_with_node(html: str, latent: int, expect: str) -> None:
    """Run the page's renderer on its data in node (when installed): JSON.parse and renderLatent succeed."""
    import shutil
    import subprocess

    if shutil.which("node") is None:
        return
    renderer = html[html.index("<script>") + len("<script>"):html.index("const D=JSON.parse")]
    script = (renderer + f"const D=JSON.parse({json.dumps(_page_data(html))});"
              f"process.stdout.write(renderLatent(D,{latent}));")
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert expect in done.stdout


def _dashboard(sae, acts_dir, out, *extra):
    return cli_main(["dashboard", "--sae", str(sae), "--acts", str(acts_dir), "--out", str(out), "--n-top", "3",
                     "--batch-size", "256", "--json", *extra])


# ----------------------------------------------------------------------------- defect 3: inputs belong together
def test_defect28_03_dashboard_refuses_a_harvest_of_another_layer(sae_dir, acts, tmp_path, capsys, no_model_load):
    """The issue's repro: a harvest of layer 0 (as wide as layer 1) for an SAE of layer 1 gave a wrong dashboard."""
    out = tmp_path / "page.html"
    line = _one_error(capsys, _dashboard(sae_dir, acts[0], out, "--latents", "0"),
                      contains=("the layer differs", "was trained on layer 1", "harvested at layer 0", "--acts"))
    assert "harvest --model M --layer L" in line  # the fix
    assert not out.exists()
    with pytest.raises(ValueError, match="the layer differs"):  # the API refuses it too
        am.dashboard.compute_dashboards(am.SAE.load(sae_dir), acts[0], None, latents=[0])


def test_defect28_03_dashboard_refuses_a_registry_model_of_another_width_before_loading(sae_dir, acts, tmp_path, capsys,
                                                                                       no_model_load):
    rc = _dashboard(sae_dir, acts[1], tmp_path / "p.html", "--latents", "0", "--model", "gemma-3-270m")
    _one_error(capsys, rc, contains=("the model differs", "--model is 'gemma-3-270m'"))
    # an SAE that names no model: the width, from the registry's shape of gemma-3-270m (640), without loading it
    cfg = am.SAEConfig(d_in=32, d_sae=8, activation="abstopk", k=2, device="cpu", hook_layer=1)
    am.SAE(cfg).save(tmp_path / "api_sae")
    with pytest.raises(ValueError, match=r"the model has d_model=640 but the SAE reads width d_in=32: .* \(the width differs\)"):
        am.lm.compat.check_inputs(am.SAE.load(tmp_path / "api_sae"), None, "gemma-3-270m")
    rc = cli_main(["steer", "--sae", str(tmp_path / "api_sae"), "--latent", "0", "--values=1", "--json"])
    _one_error(capsys, rc, contains=("width", "640", "32"))


def test_defect28_03_check_inputs_compares_model_layer_hook_and_width(acts, tiny_gpt2, tiny_gpt2_dir):
    """The one check, field by field, through the API (the CLI adds the flags' names)."""
    check = am.lm.compat.check_inputs
    base = dict(d_in=32, d_sae=8, activation="abstopk", k=2, device="cpu", model_name=str(tiny_gpt2_dir),
                hook_name="blocks.1.hook_resid_post", hook_layer=1)
    assert check(am.SAEConfig(**base), acts[1], tiny_gpt2) == (str(tiny_gpt2_dir.resolve()), 1,
                                                               "blocks.1.hook_resid_post", 32)
    for edit, field in [({"model_name": "gpt2"}, "the model"), ({"hook_layer": 0}, "the layer"),
                        ({"hook_name": "blocks.1.hook_mlp_out"}, "the hook"), ({"d_in": 64}, "the width")]:
        with pytest.raises(ValueError, match=f"do not belong together \\({field} differs\\)"):
            check(am.SAEConfig(**(base | edit)), acts[1], tiny_gpt2)
    with pytest.raises(ValueError, match="the hook differs.*hook_resid_post"):  # no harvest: the model's hook
        check(am.SAEConfig(**(base | {"hook_name": "blocks.1.hook_mlp_out"})), None, tiny_gpt2)
    with pytest.raises(ValueError, match="n_layers = 2"):
        check(am.SAEConfig(**(base | {"hook_layer": 7, "hook_name": None})), None, str(tiny_gpt2_dir))


@pytest.mark.parametrize("command", ["eval", "concepts", "steer", "dashboard", "train"])
def test_defect28_03_one_check_for_every_command(command, sae_dir, acts, tmp_path, capsys, no_model_load):
    """The same check and the same message in every command that reads an SAE or a harvest, before any load."""
    runs = ["--runs-dir", str(tmp_path / "runs")]
    argv = {"eval": ["eval", "--sae", str(sae_dir), "--layer", "0", *runs],
            "concepts": ["concepts", "--sae", str(sae_dir), "--acts", str(acts[0]), "--natural-tokens", "0"],
            "steer": ["steer", "--sae", str(sae_dir), "--layer", "0", "--latent", "0", "--values=1"],
            "dashboard": ["dashboard", "--sae", str(sae_dir), "--acts", str(acts[0]), "--latents", "0",
                          "--out", str(tmp_path / "p.html")],
            "train": ["train", "--acts", str(acts[0]), "--d-sae", "8", "--k", "2", *runs]}[command]
    if command == "train":  # a harvest whose manifest names a layer its model does not have
        manifest = json.loads((acts[0] / "manifest.json").read_text())
        manifest["layer"] = 5
        (acts[0] / "manifest.json").write_text(json.dumps(manifest))
        _one_error(capsys, cli_main(argv + ["--json"]), contains=("the inputs do not belong together", "n_layers = 2"))
        return
    _one_error(capsys, cli_main(argv + ["--json"]), contains=("the inputs do not belong together", "the layer differs"))


# ----------------------------------------------------------------------------- defect 13: shipped SAEs everywhere
@pytest.fixture
def shipped(sae_dir, tmp_path, monkeypatch):
    """A pretrained/ folder holding the layer-1 SAE as shipped SAE 'tiny-L1' ($ABSTOPK_PRETRAINED points at it)."""
    root = tmp_path / "pretrained"
    am.pretrained.ship(am.SAE.load(sae_dir), "tiny-L1", root, {"trained": "test"}, dtype="float32")
    monkeypatch.setenv("ABSTOPK_PRETRAINED", str(root))
    return root


def test_defect28_13_load_sae_resolves_every_way_to_name_an_sae(sae_dir, shipped, tmp_path):
    from abstopk_mini.runs.sae_source import load_sae

    ours = am.SAE.load(sae_dir)
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    saelens = am.interop.to_saelens(ours, tmp_path / "saelens")
    for source in (sae_dir, "tiny-L1", shipped / "tiny-L1", saelens):
        sae = load_sae(source)
        assert sae.cfg.hook_layer == 1 and sae.cfg.d_in == 32
        torch.testing.assert_close(sae(x), ours(x), rtol=1e-4, atol=1e-5)  # input scale folded: fp32 rounding
    with pytest.raises(FileNotFoundError, match="tiny-L1"):  # an unknown name lists the shipped ones
        load_sae("no-such-sae", flag="--sae")
    weights = shipped / "tiny-L1" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # the hash is checked, by name and by folder
    for source in ("tiny-L1", shipped / "tiny-L1"):
        with pytest.raises(ValueError, match="SHA-256"):
            load_sae(source)


@pytest.mark.parametrize("by", ["name", "folder"])
def test_defect28_13_every_sae_command_takes_a_shipped_sae(by, shipped, acts, tiny_gpt2_dir, tmp_path, capsys):
    """concepts, eval, steer and dashboard accept a shipped SAE by name or folder (they pointed a CLI user
    at an API function before)."""
    sae = "tiny-L1" if by == "name" else str(shipped / "tiny-L1")
    runs = ["--runs-dir", str(tmp_path / "runs")]
    commands = [["steer", "--sae", sae, "--latent", "0", "--values=-2,2"],
                ["eval", "--sae", sae, "--tokens", "64", "--acts-tokens", "256", *runs],
                ["concepts", "--sae", sae, "--natural-tokens", "0"],
                ["dashboard", "--sae", sae, "--acts", str(acts[1]), "--latents", "0", "--n-top", "3",
                 "--out", str(tmp_path / "p.html")]]
    for argv in commands:
        rc = cli_main(argv + ["--json"])
        captured = capsys.readouterr()
        assert rc == 0, (argv[0], captured.err)
        result = _strict(captured.out)
        assert result["command"] == argv[0]


# ----------------------------------------------------------------------------- defect 6: no NaN / Infinity
def test_defect28_06_dashboard_of_a_one_latent_sae_holds_no_infinity(acts, tiny_gpt2_dir, tmp_path, capsys):
    """d_sae = 1: the antipode's cosine was +inf, written as Infinity (JSON.parse throws: a blank page)."""
    for activation in ("topk", "abstopk"):
        cfg = am.SAEConfig(d_in=32, d_sae=1, activation=activation, k=1, device="cpu", model_name=str(tiny_gpt2_dir),
                           hook_name="blocks.1.hook_resid_post", hook_layer=1)
        sae = am.SAE(cfg)
        with torch.no_grad():
            sae.b_enc.fill_(1.0)  # fires on every token
        sae.save(tmp_path / activation)
        out, data = tmp_path / f"{activation}.html", tmp_path / f"{activation}.json"
        rc = _dashboard(tmp_path / activation, acts[1], out, "--latents", "0", "--data", str(data), "--judge")
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        _strict(captured.out)
        page = _strict(_page_data(out.read_text()))
        assert page["L"][0]["ap"] is None and page["L"][0]["ac"] is None  # no other latent: no antipode
        saved = _strict(data.read_text())
        assert saved["latents"][0]["antipode"] is None
        back = am.dashboard.DashboardData.load(data)
        am.dashboard.browser_html(back)  # the loaded data renders again
        _render_with_node(out.read_text(), 0, "none (the SAE has one latent)")
    with pytest.raises(am.strict_json.NonFiniteJSONError, match=r"\$\[\"x\"\]\[1\]"):
        importlib.import_module("abstopk_mini.dashboard.payload").to_script({"x": [1.0, float("inf")]})


def test_defect28_06_steer_json_never_holds_nan(sae_dir, capsys):
    rc = cli_main(["steer", "--sae", str(sae_dir), "--latent", "0", "--values=-1e38,0,1e38", "--prompt", "The",
                   "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = _strict(captured.out)  # a literal NaN before the fix
    assert result["log_odds"][1] is not None
    for i in (0, 2):
        assert result["log_odds"][i] is None and all(v is None for v in result["per_prompt"][i])
    assert any("1e+38" in note and "not finite" in note for note in result["notes"])
    assert result["generations"]["1e+38"] is None
    from argparse import Namespace

    from abstopk_mini.cli.report import emit

    emit(Namespace(json=True, command="eval"), {"fvu": float("nan"), "l0": [1.0, float("inf")]}, "")  # a missed one
    captured = capsys.readouterr()
    out = _strict(captured.out)
    assert out["fvu"] is None and out["l0"] == [1.0, None]
    assert '$["fvu"]' in out["notes"][0] and '$["l0"][1]' in out["notes"][0] and "not finite" in captured.err
    with pytest.raises(am.strict_json.NonFiniteJSONError, match=r"\$\[\"x\"\]"):  # the guard under it
        am.strict_json.dumps({"x": float("nan")})


def test_defect28_06_eval_json_writes_null_with_the_reason(sae_dir, tmp_path, capsys, monkeypatch):
    """Loss recovered is NaN when the ablation's CE equals the clean CE (splice.loss_recovered): eval printed NaN."""
    import math

    real = am.lm.splice.evaluate

    def undefined_ratio(*args, **kwargs):
        res = real(*args, **kwargs)
        res.loss_recovered_zero = am.lm.splice.loss_recovered(1.0, 0.5, 1.0)  # denominator 0: NaN
        return res

    monkeypatch.setattr(am.lm.splice, "evaluate", undefined_ratio)
    rc = cli_main(["eval", "--sae", str(sae_dir), "--tokens", "64", "--acts-tokens", "256",
                   "--runs-dir", str(tmp_path / "runs"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = _strict(captured.out)
    assert result["splice_loss_recovered_zero"] is None and math.isfinite(result["fvu"])
    assert any("splice_loss_recovered_zero" in note for note in result["notes"])


# ----------------------------------------------------------------------------- defect 11: readers hold the lock
@pytest.mark.parametrize("command", ["dashboard", "concepts", "eval"])
def test_defect28_11_harvest_readers_hold_the_shared_harvest_lock(command, sae_dir, acts, tmp_path, capsys,
                                                                   monkeypatch):
    """While a command reads a harvest, `harvest --overwrite` (an exclusive lock on it) must wait."""
    from abstopk_mini.lm.shards import ShardDataset
    from abstopk_mini.runs.store import harvest_lock

    held = []
    real_read = ShardDataset.read_shard

    def probing_read(self, i, key="activations"):
        fd = os.open(harvest_lock(self.dir), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what an overwriting harvest asks for
            held.append(False)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        return real_read(self, i, key)

    monkeypatch.setattr(ShardDataset, "read_shard", probing_read)
    argv = {"dashboard": ["dashboard", "--sae", str(sae_dir), "--acts", str(acts[1]), "--latents", "0", "--n-top", "3",
                          "--out", str(tmp_path / "p.html")],
            "concepts": ["concepts", "--sae", str(sae_dir), "--acts", str(acts[1]), "--natural-tokens", "0"],
            "eval": ["eval", "--sae", str(sae_dir), "--tokens", "64", "--acts-tokens", "256",
                     "--runs-dir", str(tmp_path / "runs")]}[command]
    rc = cli_main(argv + ["--json"])
    assert rc == 0, capsys.readouterr().err
    assert held and all(held), held


# ----------------------------------------------------------------------------- defects 10, 13, 14: dashboard checks
@pytest.mark.parametrize("flag, value, message", [("--n-top", "0", "--n-top"), ("--batch-size", "0", "--batch-size"),
                                                 ("--before", "-1", "--before")])
def test_defect28_13_dashboard_counts_are_checked_before_the_model_loads(flag, value, message, sae_dir, acts, tmp_path,
                                                                         capsys, no_model_load):
    """--n-top 0 was checked after the model loaded; --batch-size 0 was reported as a bug (defect 10)."""
    out = tmp_path / "p.html"
    _one_error(capsys, _dashboard(sae_dir, acts[1], out, "--latents", "0", flag, value), contains=message)
    assert not out.exists()


def test_defect28_13_dashboard_output_folders_are_checked_before_any_work(sae_dir, acts, tmp_path, capsys,
                                                                        no_model_load):
    """--data into a missing folder: raw ENOENT after the HTML was written. Now refused first, nothing written."""
    out = tmp_path / "p.html"
    rc = _dashboard(sae_dir, acts[1], out, "--latents", "0", "--data", str(tmp_path / "missing" / "d.json"))
    _one_error(capsys, rc, contains=("--data", "does not exist"))
    assert not out.exists()
    _one_error(capsys, _dashboard(sae_dir, acts[1], tmp_path / "nope" / "p.html", "--latents", "0"), contains="--out")


def test_defect28_13_dashboard_error_starts_its_own_line(sae_dir, acts, tmp_path, capsys, monkeypatch):
    """An error while the progress bar is drawn: the `error:` line was glued to the bar."""
    import abstopk_mini.dashboard.data as dashboard_data

    def fail(sae, batches, **kw):
        next(iter(batches))
        kw["progress"](256)
        raise ValueError("stop here")

    monkeypatch.setattr(dashboard_data, "latent_stats", fail)
    rc = _dashboard(sae_dir, acts[1], tmp_path / "p.html", "--latents", "0")
    err = capsys.readouterr().err
    assert rc == 2 and "error: stop here" in err
    assert err.index("error: ") == 0 or err[err.index("error: ") - 1] == "\n", repr(err[-300:])


def test_defect28_14_dashboard_files_get_the_normal_file_mode(sae_dir, acts, tmp_path, capsys):
    out, data = tmp_path / "p.html", tmp_path / "d.json.gz"
    assert _dashboard(sae_dir, acts[1], out, "--latents", "0,1", "--data", str(data)) == 0, capsys.readouterr().err
    expected = am.io.default_file_mode()
    assert expected & 0o044  # the test means something: the umask lets others read
    for path in (out, data):
        assert stat.S_IMODE(path.stat().st_mode) == expected, oct(path.stat().st_mode)


def test_defect28_14_dashboard_latents_are_deduplicated_and_bounded(sae_dir, acts, tmp_path, capsys, monkeypatch):
    out = tmp_path / "p.html"
    assert _dashboard(sae_dir, acts[1], out, "--latents", ",".join(["3"] * 20_000 + ["5", "3"])) == 0
    result = _strict(capsys.readouterr().out)
    assert result["latents"] == [3, 5]
    assert any("20,000" in note and "once" in note for note in result["notes"])
    monkeypatch.setattr(am.lm.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    many = ",".join(str(i) for i in range(5000))
    _one_error(capsys, _dashboard(sae_dir, acts[1], out, "--latents", many), contains=("--latents", "at most"))


# ----------------------------------------------------------------------------- defect 10: steer --prompt too long
def test_defect28_10_steer_prompt_longer_than_the_context_is_refused(sae_dir, capsys, monkeypatch):
    """The tiny GPT-2 reads 128 positions: a longer prompt raised IndexError (reported as a bug)."""
    monkeypatch.setattr(am.lm.steering, "logit_diff_curve", lambda *a, **k: pytest.fail("the curve ran first"))
    rc = cli_main(["steer", "--sae", str(sae_dir), "--latent", "0", "--values=1", "--prompt", "word " * 300, "--json"])
    _one_error(capsys, rc, contains=("--prompt", "128"))
    loaded = am.lm.models.load_model(am.SAE.load(sae_dir).cfg.model_name, device="cpu")
    with pytest.raises(ValueError, match="positions"):  # the API too
        am.lm.steering.generate_with(loaded, "word " * 300)
