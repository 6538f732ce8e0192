"""The package installs without the repository (issue 31): ``python -m build`` makes a wheel and an
sdist that pass ``twine check``; the wheel, installed into a fresh virtual environment outside the
checkout, carries ``results/``, ``sweeps/`` and ``pretrained/`` (setup.py), and a chapter that reads
records and shipped SAEs runs from a scratch folder with it, as on a machine that never cloned the
repository."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: a chapter that reads records (results/) and the shipped SAEs (pretrained/), in quick mode
CHAPTER = "11_two_sides_of_a_latent"
#: what a build reads: the package, its metadata and the folders setup.py bundles
SOURCE = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "requirements.txt", "constraints.txt", "abstopk_mini",
          "results", "sweeps", "pretrained")


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The wheel and the sdist, built from the checkout (without build isolation: the test
    environment's setuptools, so no index is needed)."""
    pytest.importorskip("build")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in SOURCE:  # a copy: two test workers never build in the checkout at once
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__", "_repo")} if copy is shutil.copytree else {}))
    res = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return wheels[0], sdists[0]


def test_wheel_and_sdist_pass_twine_check(dist):
    pytest.importorskip("twine")
    res = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_wheel_carries_the_records_configs_and_shipped_saes(dist):
    wheel, _ = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("results", "sweeps", "pretrained"):
        in_repo = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*") if p.is_file()}
        in_wheel = {n.removeprefix("abstopk_mini/_repo/") for n in names if n.startswith(f"abstopk_mini/_repo/{folder}/")}
        assert in_repo <= in_wheel, f"missing from the wheel: {sorted(in_repo - in_wheel)[:5]}"
    assert not any(n.startswith(("tests/", "notebooks/")) for n in names)


@pytest.mark.notebook
def test_chapter_runs_from_the_installed_wheel_outside_the_checkout(dist, tmp_path):
    """A fresh venv (outside the checkout) gets the wheel by ``pip install``; the test environment's
    site-packages lend it the dependencies (torch & co., through a .pth line, which does not run
    that environment's editable-install hooks). The chapter then runs in a folder that holds
    nothing but the notebook, with no ABSTOPK_REPO."""
    wheel, _ = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / f"{CHAPTER}.ipynb").write_bytes((ROOT / "notebooks" / f"{CHAPTER}.ipynb").read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("ABSTOPK_REPO", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(ABSTOPK_QUICK="1", ABSTOPK_RUNS=str(tmp_path / "runs"))
    where = subprocess.run([str(py), "-c", "import json, abstopk_mini as am; "
                            "print(json.dumps([am.__file__, str(am.repo.repo_root())]))"],
                           cwd=scratch, env=env, check=True, capture_output=True, text=True)
    package, root = json.loads(where.stdout)
    assert Path(package).is_relative_to(site) and Path(root) == site / "abstopk_mini" / "_repo"
    run = textwrap.dedent(f"""
        import nbformat, nbclient
        nb = nbformat.read("{CHAPTER}.ipynb", as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(  # the kernel is the fresh venv's, with the wheel's package
            "import sys, abstopk_mini\\n"
            "assert sys.prefix == {str(venv)!r}, sys.prefix\\n"
            "assert abstopk_mini.__file__.startswith({str(site)!r}), abstopk_mini.__file__"))
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={{"metadata": {{"path": "."}}}}).execute()
    """)
    res = subprocess.run([str(py), "-c", run], cwd=scratch, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert os.listdir(scratch) == [f"{CHAPTER}.ipynb"]
