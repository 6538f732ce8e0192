"""Chapters as a fresh Colab runs them: the setup cell clones the repository and installs from it, then makes one call,
and a chapter copied into a scratch folder outside the repository still finds ``results/``,
``sweeps/`` and ``pretrained/`` (issue 15)."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import abstopk_mini as am
from abstopk_mini.chapters import session
from abstopk_mini.repo import REPO_URL

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: every chapter: 07-11 read committed records or shipped SAEs, 01-06 compute what they show; all
#: of them must run from a folder that holds nothing but the notebook
READERS = [p.stem for p in CHAPTERS]


def _setup_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


START = "QUICK, MODEL, T0 = am.chapters.session.start()"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_setup_cell_is_the_colab_lines_and_one_call(path):
    """Each chapter's first code cell: its imports, the Colab lines of :data:`session.COLAB`, then
    ``import abstopk_mini as am`` and the one set-up call, before anything uses the package."""
    cell = _setup_cell(path)
    assert session.COLAB in cell, "run python -m abstopk_mini.chapters.session to rewrite the Colab lines"
    assert re.search(r"^import (os, sys|sys)", cell, re.M) and cell.index("import ") < cell.index(session.COLAB)
    after = cell[cell.index(session.COLAB) + len(session.COLAB):]
    am_at, start_at = after.index("import abstopk_mini as am\n"), after.index(START)
    assert am_at < start_at and after.count(START) == 1
    assert "am." not in after[:start_at].replace("import abstopk_mini as am", ""), "the package is used before start()"
    for gone in ("is_quick()", "print(f\"quick mode", "set_num_threads", "ABSTOPK_MODEL"):
        assert gone not in cell, f"{gone!r} belongs to session.start(), not to the chapter"


def _run_colab_lines(have_dir: bool, clone_ok: bool = True):
    """Run :data:`session.COLAB` as IPython does on Colab (its ``!`` lines through IPython's own
    transformer) with the shell faked; returns the shell commands and sys.path."""
    from IPython.core.inputtransformer2 import TransformerManager

    calls = []

    class Shell:
        def system(self, cmd):
            calls.append(cmd)

    fake_sys = type("sys", (), {"modules": {"google.colab": object()}, "path": []})
    exec(TransformerManager().transform_cell(session.COLAB), {"sys": fake_sys, "get_ipython": lambda: Shell()})
    return calls, fake_sys.path


def test_colab_lines_clone_once_and_install_editable():
    calls, path = _run_colab_lines(have_dir=False)
    assert calls == [f"test -d /content/abstopk_mini || git clone -q --depth 1 {REPO_URL} /content/abstopk_mini",
                     "pip install -q -e /content/abstopk_mini"]
    assert path == ["/content/abstopk_mini"] and REPO_URL.count("/") == 4


def test_colab_lines_do_nothing_off_colab():
    from IPython.core.inputtransformer2 import TransformerManager

    fake_sys = type("sys", (), {"modules": {}, "path": []})
    exec(TransformerManager().transform_cell(session.COLAB), {"sys": fake_sys, "get_ipython": None})
    assert fake_sys.path == []


def test_an_editable_install_finds_the_repository_without_abstopk_repo(monkeypatch, tmp_path):
    """On Colab the chapters find results/ from the package's own location (the clone), not from a
    variable the setup would have to set."""
    monkeypatch.delenv("ABSTOPK_REPO", raising=False)
    monkeypatch.chdir(tmp_path)
    assert am.repo.repo_root() == ROOT


def test_start_reads_the_environment_and_prints_one_line(monkeypatch, capsys):
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("ABSTOPK_QUICK", "1")
    monkeypatch.setenv("ABSTOPK_MODEL", "gpt2")
    try:
        quick, model, t0 = session.start()
        assert (quick, model) == (True, "gpt2") and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    monkeypatch.delenv("ABSTOPK_QUICK")
    monkeypatch.delenv("ABSTOPK_MODEL")
    quick, model, _ = session.start()
    assert (quick, model) == (False, "gemma-3-270m")
    assert capsys.readouterr().out == "quick mode: on\nquick mode: off\n"


def test_colab_lines_rewrite_an_old_setup_cell():
    old = ('import os, sys\nif "google.colab" in sys.modules:  # old\n    REPO_DIR = "/content/x"\n'
           '    !pip install -q -e {REPO_DIR}\n\n    os.environ["ABSTOPK_REPO"] = REPO_DIR\nimport torch\n')
    new = session.colab_lines(old)
    assert new == "import os, sys\n" + session.COLAB + "import torch\n"
    assert session.colab_lines(new) == new
    with pytest.raises(ValueError, match="google.colab"):
        session.colab_lines("import torch\n")


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
