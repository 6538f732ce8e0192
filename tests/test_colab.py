"""Chapters as a fresh Colab runs them: the setup cell clones the repository and installs from it,
and a chapter copied into a scratch folder outside the repository still finds ``results/``,
``sweeps/`` and ``pretrained/`` (issue 15)."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: every chapter: 07-11 read committed records or shipped SAEs, 01-06 compute what they show; all
#: of them must run from a folder that holds nothing but the notebook
READERS = [p.stem for p in CHAPTERS]


def _setup_cell(path: Path) -> str:
    nb = json.loads(path.read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_setup_cell_clones_and_installs_from_the_clone(path):
    cell = _setup_cell(path)
    block = re.search(r'if "google\.colab" in sys\.modules:.*?\n((?:    .*\n)+)', cell + "\n").group(1)
    assert "!git clone -q --depth 1 https://github.com/abstopk-mini/abstopk_mini {REPO_DIR}" in block
    assert "!pip install -q -e {REPO_DIR}" in block
    assert 'os.environ["ABSTOPK_REPO"] = REPO_DIR' in block and "sys.path.insert(0, REPO_DIR)" in block
    assert re.search(r"^import (os, sys|os,|sys, os)", cell, re.M), "the cell uses os and sys before importing them"


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
