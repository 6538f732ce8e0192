"""The repository's own promises: README commands, CI entry point, packaging."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command() -> str:
    script = (ROOT / ".ci" / "run").read_text()
    awk = re.search(r"cmd=\$\(awk '(.*?)' README.md\)", script).group(1)
    return subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_ci_runs_the_readme_test_command():
    cmd = _ci_command()
    readme = (ROOT / "README.md").read_text()
    assert cmd and cmd in readme
    assert "pytest" in cmd and "ABSTOPK_QUICK=1" in cmd
    # the local CPU build of torch must be installed before anything can pull a CUDA build
    assert cmd.startswith("pip install torch==2.13.0 ")


def test_requirements_keep_torch_a_range():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    torch_lines = [line for line in reqs if re.match(r"^torch\b", line)]
    assert torch_lines == ["torch>=2.4"], "requirements.txt must keep torch a range so Colab keeps its own build"
    assert any(line.startswith("jupyter-book>=1.0.4,<2") for line in reqs)


def test_ci_script_is_executable():
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111


def test_every_submodule_is_reachable_lazily():
    import importlib

    import abstopk_mini as am

    files = {p.stem for p in Path(am.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    files |= {p.parent.name for p in Path(am.__file__).parent.glob("*/__init__.py")}  # subpackages
    assert am._SUBMODULES == files
    for name in sorted(files):
        assert getattr(am, name) is importlib.import_module(f"abstopk_mini.{name}")
