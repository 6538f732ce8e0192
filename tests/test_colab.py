"""Chapters as a fresh Colab runs them: the setup cell clones the repository and installs from it,
and a chapter copied into a scratch folder outside the repository still finds ``results/``,
``sweeps/`` and ``pretrained/`` (issue 15)."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from abstopk_mini.chapters import colab
from abstopk_mini.repo import REPO_URL

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: every chapter: 07-11 read committed records or shipped SAEs, 01-06 compute what they show; all
#: of them must run from a folder that holds nothing but the notebook
READERS = [p.stem for p in CHAPTERS]


def _setup_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_setup_cell_holds_the_one_colab_block(path):
    cell = _setup_cell(path)
    assert colab.BLOCK in cell, "run python -m abstopk_mini.chapters.colab to rewrite the setup cells"
    assert re.search(r"^import (os, sys|os,|sys, os)", cell, re.M), "the cell uses os and sys before importing them"
    assert cell.index("import os") < cell.index(colab.BLOCK)


def test_colab_block_names_the_repository_url_of_the_package():
    assert f'REPO_URL, REPO_DIR = "{REPO_URL}", ' in colab.BLOCK and REPO_URL.count("/") == 4


def _run_block(monkeypatch, clone_ok: bool, pip_ok: bool, have_dir: bool = False):
    """Run :data:`colab.BLOCK` as IPython would on Colab (its ``!`` lines through IPython's own
    transformer), with git, pip and the file system faked; returns the shell commands and the env."""
    from IPython.core.inputtransformer2 import TransformerManager

    calls, env = [], {}

    def system(cmd):
        calls.append(cmd)
        return 0 if (cmd.startswith("git clone") and clone_ok) or ("pip install" in cmd and pip_ok) else 1

    class Shell:  # IPython expands {NAME} in a ! line from the cell's variables
        def system(self, cmd):
            calls.append(cmd.format(**scope))

    fake_os = type("os", (), {"system": staticmethod(system), "environ": env,
                              "path": type("path", (), {"isdir": staticmethod(lambda p: have_dir)})})
    fake_sys = type("sys", (), {"modules": {"google.colab": object()}, "executable": "/usr/bin/python3", "path": []})
    code = TransformerManager().transform_cell(colab.BLOCK)
    scope = {"os": fake_os, "sys": fake_sys, "get_ipython": lambda: Shell()}
    exec(code, scope)
    return calls, env, fake_sys.path


def test_colab_block_installs_from_a_clone(monkeypatch):
    calls, env, path = _run_block(monkeypatch, clone_ok=True, pip_ok=True)
    assert calls == [f"git clone -q --depth 1 {REPO_URL} /content/abstopk_mini", "pip install -q -e /content/abstopk_mini"]
    assert env == {"ABSTOPK_REPO": "/content/abstopk_mini"} and path == ["/content/abstopk_mini"]
    calls, _, _ = _run_block(monkeypatch, clone_ok=False, pip_ok=True, have_dir=True)  # cloned before
    assert calls == ["pip install -q -e /content/abstopk_mini"]


def test_colab_block_installs_by_name_when_the_clone_fails(monkeypatch):
    calls, env, path = _run_block(monkeypatch, clone_ok=False, pip_ok=True)
    assert calls[1] == "/usr/bin/python3 -m pip install -q abstopk_mini" and env == {} and path == []


def test_colab_block_says_what_to_do_when_both_fail(monkeypatch):
    with pytest.raises(SystemExit) as info:
        _run_block(monkeypatch, clone_ok=False, pip_ok=False)
    message = str(info.value)
    assert "\n" not in message and "pip install abstopk_mini" in message and "python -m build" in message


def test_replace_block_rewrites_an_old_setup_cell():
    old = ('import os, sys\nif "google.colab" in sys.modules:  # old\n    REPO_DIR = "/content/x"\n'
           '    !pip install -q -e {REPO_DIR}\n\n    os.environ["ABSTOPK_REPO"] = REPO_DIR\nimport torch\n')
    new = colab.replace_block(old)
    assert new == "import os, sys\n" + colab.BLOCK + "import torch\n"
    assert colab.replace_block(new) == new
    with pytest.raises(ValueError, match="google.colab"):
        colab.replace_block("import torch\n")


@pytest.mark.notebook
@pytest.mark.parametrize("name", READERS)
def test_chapter_runs_from_a_scratch_folder(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    scratch = tmp_path / "colab"
    scratch.mkdir()
    shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", scratch)
    monkeypatch.delenv("ABSTOPK_REPO", raising=False)
    monkeypatch.setenv("ABSTOPK_RUNS", str(tmp_path / "runs"))  # a fresh, empty runs folder
    monkeypatch.setenv("ABSTOPK_QUICK", "1")
    nb = nbformat.read(scratch / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(scratch)}})
    client.execute()  # raises CellExecutionError naming the cell that failed
    assert not (scratch / "results").exists() and os.listdir(scratch) == [f"{name}.ipynb"]
