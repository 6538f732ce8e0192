"""The exercise versions of the chapters (issue 29, items 3 and 4).

- every committed ``notebooks/exercises/*.ipynb`` is what ``python -m abstopk_mini.chapters.exercise_versions``
  generates from the chapters now (CI fails when one is stale);
- every stub, run, makes its check stop with ``NotWrittenYet`` carrying the stub's hint (not a
  traceback from inside the package), and the chapter's solution passes with the reference note;
- each chapter with exercises links both versions with their Colab links; the exercise versions are
  neither pages of the book nor notebooks nbmake runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import abstopk_mini as am
from abstopk_mini.chapters import exercise_versions as ev
from abstopk_mini.exercises.harness import REFERENCE_NOTE

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ev.chapters_with_exercises(ROOT)


def _nb(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _run(*sources: str) -> str:
    """Execute cells in one fresh namespace (what a notebook's setup cell provides: am, torch); return stdout."""
    ns = {"am": am, "torch": torch}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for src in sources:
            exec(compile(src, "<cell>", "exec"), ns)
    return out.getvalue()


_CHECK = re.compile(r"\bam\.exercises\.(check_\w+)\(")
STUBS = [(_rel(p), ex) for p in CHAPTERS for ex in ev.exercises(_nb(p), _rel(p))]


def test_defect29_01_chapters_from_5_on_teach_with_two_exercises_or_more():
    """Issue 29: every chapter from 5 on holds at least two exercises with checks, 14 or more in all,
    each check its own (no check serves two exercises)."""
    per = {int(Path(chapter).name[:2]): [] for chapter, _ in STUBS}
    for chapter, ex in STUBS:
        per[int(Path(chapter).name[:2])].append(ex)
    later = {n: exs for n, exs in per.items() if n >= 5}
    assert set(later) == set(range(5, max(later) + 1)) and all(len(exs) >= 2 for exs in later.values()), \
        {n: len(exs) for n, exs in later.items()}
    checks = [_CHECK.search(_src(_nb(ROOT / chapter)["cells"][ex.check_index])).group(1) for chapter, ex in STUBS]
    assert len(checks) == len(set(checks)), checks
    assert sum(len(exs) for exs in later.values()) >= 14


def test_chapters_1_to_4_have_their_exercises():
    names = {ex.name for _, ex in STUBS}
    assert {"my_iht", "my_abs_topk", "my_prox", "my_ista", "my_twin"} <= names
    assert {_rel(p) for p in CHAPTERS} >= {f"notebooks/{n}.ipynb" for n in
                                           ("01_sparse_coding", "02_one_step_to_saes", "03_unrolling_deeper",
                                            "04_toy_bidirectional")}


# ----------------------------------------------------------------------------- item 3: current, and stubs fail with the hint
def test_defect29_03_committed_exercise_versions_are_current():
    bad = ev.stale(ROOT)
    assert not bad, f"stale exercise versions {bad}: run python -m abstopk_mini.chapters.exercise_versions"


@pytest.mark.parametrize("chapter, ex", STUBS, ids=[ex.name for _, ex in STUBS])
def test_defect29_03_every_stub_fails_its_check_with_the_hint(chapter, ex):
    nb = _nb(ROOT / ev.exercise_path(chapter))
    stub, check = _src(nb["cells"][ex.index]), _src(nb["cells"][ex.check_index])
    assert ev.STUB_TAG in nb["cells"][ex.index]["metadata"]["tags"] and "reference" not in stub
    assert "raise NotImplementedError(" in stub and f"def {ex.name}(" in stub
    with pytest.raises(am.exercises.NotWrittenYet) as info:
        _run(stub, check)
    assert str(info.value) == f"your {ex.name} is not written yet — {ex.hint}"
    assert info.value.__suppress_context__ and info.value.__cause__ is None  # no chained traceback
    assert ex.hint.startswith("hint: ") and len(ex.hint) > 30


@pytest.mark.parametrize("chapter, ex", STUBS, ids=[ex.name for _, ex in STUBS])
def test_defect29_04_the_solution_passes_and_says_it_is_the_books(chapter, ex):
    nb = _nb(ROOT / chapter)
    out = _run(_src(nb["cells"][ex.index]), _src(nb["cells"][ex.check_index]))
    assert out.startswith("✓ ") and out.rstrip().endswith(REFERENCE_NOTE), out


@pytest.mark.parametrize("chapter", [_rel(p) for p in CHAPTERS])
def test_defect29_04_committed_outputs_never_pass_a_check_the_reader_did_not_run(chapter):
    """Every "✓" the committed chapter shows says it ran on the book's reference solution."""
    nb = _nb(ROOT / chapter)
    found = ev.exercises(nb, chapter)
    lines = ["".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", [])]
    ticks = [ln for text in lines for ln in text.splitlines() if "✓" in ln]
    assert len(ticks) == len(found), f"{chapter}: {len(ticks)} ✓ lines for {len(found)} exercises (re-execute it)"
    assert all(ln.endswith(REFERENCE_NOTE) for ln in ticks), ticks


def test_exercise_versions_hold_no_solution_and_no_output():
    for path in CHAPTERS:
        nb = _nb(ROOT / ev.exercise_path(_rel(path)))
        for cell in nb["cells"]:
            assert ev.SOLUTION_TAG not in cell["metadata"].get("tags", [])
            assert "am.exercises.reference" not in _src(cell)
            assert cell.get("outputs", []) == [] and "execution" not in cell["metadata"]
        assert ":::{dropdown}" not in json.dumps(nb)  # answers fold on Colab too (<details>)


# ----------------------------------------------------------------------------- item 3: links, book and nbmake
@pytest.mark.parametrize("chapter", [_rel(p) for p in CHAPTERS])
def test_defect29_03_chapter_links_both_versions_with_colab(chapter):
    nb = _nb(ROOT / chapter)
    links = [c for c in nb["cells"] if ev.LINKS_TAG in c["metadata"].get("tags", [])]
    assert len(links) == 1 and nb["cells"].index(links[0]) <= 3, "the links cell belongs near the top"
    text = _src(links[0])
    assert text == ev.links_markdown(chapter, len(ev.exercises(nb, chapter)))
    owner_repo = am.repo.REPO_URL.removeprefix("https://github.com/")
    for path in (ev.exercise_path(chapter), chapter):
        assert (ROOT / path).is_file()
        assert f"(https://colab.research.google.com/github/{owner_repo}/blob/main/{path})" in text
        assert f"({am.repo.REPO_URL}/blob/main/{path})" in text
    assert "Work through it" in text and "Read the solutions" in text


def test_exercise_versions_are_not_book_pages():
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True and "notebooks/exercises" in cfg["exclude_patterns"]
    assert "exercises" not in (ROOT / "_toc.yml").read_text()


def test_nbmake_collects_the_chapters_not_their_exercise_versions():
    pytest.importorskip("nbmake")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}  # CI's --junitxml is the outer run's
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--nbmake", "-p", "no:cacheprovider",
                           "tests", "notebooks"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]  # as the README's command collects
    items = [ln.split("::")[0] for ln in proc.stdout.splitlines() if ".ipynb::" in ln]
    assert "notebooks/01_sparse_coding.ipynb" in items, proc.stdout + proc.stderr
    assert not [p for p in items if "exercises" in p], items


# ----------------------------------------------------------------------------- the generator itself
SOLUTION = '''@am.exercises.reference
def my_f(u, k=2):
    """Double u.  u [n] -> [n]"""
    # hint: multiply
    # by two
    return 2 * u
'''


def test_stub_keeps_signature_and_docstring_and_carries_the_hint():
    name, hint, stub = ev.stub_source(SOLUTION)
    assert (name, hint) == ("my_f", "hint: multiply by two")
    assert stub == 'def my_f(u, k=2):\n    """Double u.  u [n] -> [n]"""\n    raise NotImplementedError(\'hint: multiply by two\')'


@pytest.mark.parametrize("source, says", [
    (SOLUTION.replace("@am.exercises.reference\n", ""), "decorate my_f"),
    (SOLUTION.replace('    """Double u.  u [n] -> [n]"""\n', ""), "needs a docstring"),
    (SOLUTION.replace("    # hint: multiply\n    # by two\n", ""), "# hint:"),
    (SOLUTION + "\nprint(my_f(1))\n", "one function and nothing else"),
    ("import torch\n" + SOLUTION, "one function and nothing else"),
])
def test_solution_cell_convention_is_enforced(source, says):
    with pytest.raises(ValueError, match=says):
        ev.stub_source(source)


def _chapter(task: str, check: str) -> dict:
    cell = lambda kind, src, tags=(): {"cell_type": kind, "id": f"c{abs(hash(src)) % 10**8}", "metadata": {"tags": list(tags)},  # noqa: E731
                                      "source": src.splitlines(keepends=True),
                                      **({"outputs": [], "execution_count": None} if kind == "code" else {})}
    return {"cells": [cell("markdown", "# 9. A chapter\n\nintro"), cell("code", "import os, sys", ["hide-input"]),
                      cell("markdown", ev.links_markdown("notebooks/09_x.ipynb", 1), [ev.LINKS_TAG]),
                      cell("markdown", task), cell("code", SOLUTION, [ev.SOLUTION_TAG, "hide-input"]), cell("code", check),
                      cell("markdown", ":::{dropdown} Answer\nforty-two\n:::")],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_exercise_version_of_a_small_chapter():
    nb = _chapter("**Ex 9.1.** Difficulty ●○○○○ · Importance ●●○○○ · ~5 min", "am.exercises.check_f(my_f)")
    out = ev.exercise_version(nb, "notebooks/09_x.ipynb")
    srcs = [_src(c) for c in out["cells"]]
    assert srcs[0].startswith("# 9. A chapter — exercises\n")
    assert srcs[2] == ev.exercise_header("notebooks/09_x.ipynb") and "09_x.ipynb" in srcs[2]
    assert srcs[4].endswith("raise NotImplementedError('hint: multiply by two')")
    assert out["cells"][4]["metadata"]["tags"] == [ev.STUB_TAG]
    assert srcs[6] == "<details><summary>Answer</summary>\n\nforty-two\n\n</details>"
    assert ev.exercise_version(json.loads(ev.render(nb)), "notebooks/09_x.ipynb") == out


@pytest.mark.parametrize("task, check, says", [
    ("**Ex 9.1.** no marks", "am.exercises.check_f(my_f)", "Difficulty"),
    ("**Ex 9.1.** Difficulty ●○○○○ · Importance ●●○○○ · ~5 min", "print(my_f)", "next code cell must check it"),
])
def test_a_chapter_breaking_the_convention_is_refused(task, check, says):
    with pytest.raises(ValueError, match=says):
        ev.exercise_version(_chapter(task, check), "notebooks/09_x.ipynb")


def test_check_mode_finds_a_stale_version(tmp_path, capsys):
    (tmp_path / "notebooks").mkdir()
    chapter = _chapter("**Ex 9.1.** Difficulty ●○○○○ · Importance ●●○○○ · ~5 min", "am.exercises.check_f(my_f)")
    (tmp_path / "notebooks" / "09_x.ipynb").write_text(ev.render(chapter), encoding="utf-8")
    assert ev.main(["--root", str(tmp_path), "--check"]) == 1
    assert ev.main(["--root", str(tmp_path)]) == 0
    written = tmp_path / "notebooks" / "exercises" / "09_x_exercises.ipynb"
    assert written.is_file() and ev.main(["--root", str(tmp_path), "--check"]) == 0
    written.write_text(written.read_text().replace("multiply", "add"), encoding="utf-8")
    (tmp_path / "notebooks" / "exercises" / "99_orphan_exercises.ipynb").write_text("{}")
    assert ev.stale(tmp_path) == ["notebooks/exercises/09_x_exercises.ipynb", "notebooks/exercises/99_orphan_exercises.ipynb"]
    assert ev.main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "error: --root" in capsys.readouterr().err


def test_urls():
    assert ev.colab_url("notebooks/01_a.ipynb") == ("https://colab.research.google.com/github/"
                                                    "abstopk-mini/abstopk_mini/blob/main/notebooks/01_a.ipynb")
    assert ev.exercise_path("notebooks/01_a.ipynb") == "notebooks/exercises/01_a_exercises.ipynb"
    with pytest.raises(ValueError, match="NN_topic.ipynb"):
        ev.exercise_path("notebooks/intro.md")


@pytest.mark.notebook
def test_an_exercise_version_run_in_a_kernel_stops_at_the_first_stub_with_its_hint(tmp_path, monkeypatch):
    """Chapter 2's exercise version, run as Colab runs it (a fresh kernel, quick mode, going on after
    errors): the only errors are the checks' NotWrittenYet, one per exercise, each with its stub's hint."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    chapter = "notebooks/02_one_step_to_saes.ipynb"
    first = ev.exercises(_nb(ROOT / chapter), chapter)[0]
    monkeypatch.setenv("ABSTOPK_QUICK", "1")
    monkeypatch.setenv("ABSTOPK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(ROOT / ev.exercise_path(chapter), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [(i, o) for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    found = ev.exercises(_nb(ROOT / chapter), chapter)
    assert [(i, e["ename"]) for i, e in errors] == [(ex.check_index, "NotWrittenYet") for ex in found]
    assert errors[0][1]["evalue"] == f"your {first.name} is not written yet — {first.hint}"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_defect29_05_chapter_opens_with_what_you_build_and_closes_with_takeaways(path):
    """Issue 29, item 5: the first markdown cell says what the reader will build; a '## Takeaways' cell
    near the end holds 3 to 5 bullets."""
    cells = _nb(path)["cells"]
    md = [(i, _src(c)) for i, c in enumerate(cells) if c["cell_type"] == "markdown"]
    assert "**What you will build**" in md[0][1] or "What you will build" in md[0][1]
    takeaways = [(i, s) for i, s in md if re.search(r"^## Takeaways\s*$", s, re.M)]
    assert len(takeaways) == 1, f"{path.name}: one '## Takeaways' cell; found {len(takeaways)}"
    i, text = takeaways[0]
    bullets = re.findall(r"^[-*] \S", text.split("## Takeaways", 1)[1], re.M)
    assert 3 <= len(bullets) <= 5, f"{path.name}: {len(bullets)} takeaways"
    assert i >= len(cells) - 6, f"{path.name}: the takeaways close the chapter (cell {i} of {len(cells)})"
