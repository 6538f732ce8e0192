"""Issue 31: README's and the landing page's headline numbers come from results/ through one module,
and a page that differs from the records fails here (so CI fails when they are stale)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from abstopk_mini.chapters import findings, findings_text

ROOT = Path(__file__).resolve().parent.parent


def _copy_checkout(tmp_path: Path) -> Path:
    """The pages and the records findings reads, in a scratch folder."""
    for rel in [*findings.SOURCES.values(), *findings_text.PAGES]:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, dst)
    return tmp_path


def test_issue31_readme_and_intro_findings_are_current():
    assert findings_text.stale(ROOT) == [], "run python -m abstopk_mini.chapters.findings_text --write"
    for rel in findings_text.PAGES:
        text = (ROOT / rel).read_text(encoding="utf-8")
        assert text.count(findings_text.START) == 1 and text.count(findings_text.END) == 1


def test_issue31_findings_match_hand_computed_values():
    v = findings.compute(ROOT)
    # results/steps_vs_tokens.jsonl, stage "long" (seed 0): AbsTopK 0.0487519, TopK 0.0481788
    assert v["long_gap_s0"] == pytest.approx(0.0487519 / 0.0481788 - 1, rel=1e-12)
    assert v["long_kl_lower_s1"] == pytest.approx(1 - 0.469117 / 0.557157, rel=1e-12)
    # results/recipe_ladder.jsonl: the single rungs range from the paper's Adam to its AuxK
    assert v["ladder_min"] == pytest.approx(0.067742 / 0.0662188 - 1, rel=1e-9)
    assert v["ladder_max"] == pytest.approx(0.0737583 / 0.0692016 - 1, rel=1e-9)
    assert v["ladder_batch_select"] == pytest.approx(0.123462 / 0.0647082 - 1, rel=1e-9)
    assert findings_text.pct(v["ladder_b_dec_zeros"]) == "−5.8 %"
    # results/recipe_ladder_long.jsonl, batch-level selection at its 1,172-step snapshots: +184 % and +170 %
    assert findings_text.pct(v["batch_early_gap_s0"], True, 0) == "+184 %"
    assert findings_text.pct(v["batch_early_gap_s1"], True, 0) == "+170 %"
    # results/gemma_sweep.jsonl: TopK's most dead SAE at k >= 32 is a b_dec variant (29.2 %), 21.4 % by default
    assert v["dead_max_topk"] == pytest.approx(0.291748) and v["dead_max_topk_default"] == pytest.approx(0.214233)
    # the 30,000-step run saw 3.84M tokens: the token range must include it
    assert v["train_tokens_max"] == 3839922
    # the blinded reading is one seed, and the pages say so
    assert v["reading_seed"] == 0
    assert "0 of 30 per SAE do (seed 0 only)" in findings_text.render_readme(v)


def test_issue31_stale_page_is_caught_and_rewritten(tmp_path):
    root = _copy_checkout(tmp_path)
    assert findings_text.stale(root) == []
    path = root / "results/steps_vs_tokens.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in recs:
        if r["stage"] == "long" and r["activation"] == "abstopk":
            r["heldout"]["fvu"] = 0.0500
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert sorted(findings_text.stale(root)) == ["README.md", "book/intro.md"]
    assert findings_text.main(["--check", "--root", str(root)]) == 1
    assert findings_text.main(["--write", "--root", str(root)]) == 0
    assert findings_text.stale(root) == []
    assert "+3.8 %" in (root / "book/intro.md").read_text(encoding="utf-8")     # 0.0500 / 0.0481788 - 1


def test_issue31_page_without_markers_is_one_clear_error(tmp_path, capsys):
    root = _copy_checkout(tmp_path)
    readme = root / "README.md"
    before = readme.read_text(encoding="utf-8").replace(findings_text.START + "\n", "")
    readme.write_text(before, encoding="utf-8")
    assert findings_text.main(["--write", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: README.md must hold")
    assert readme.read_text(encoding="utf-8") == before                          # nothing written
    assert findings_text.main(["--check", "--root", str(tmp_path / "nowhere")]) == 2


# ------------------------------------------------------------------ prose about findings, not history

#: the chapters whose prose this issue's part owns (01-04 are re-executed and edited elsewhere)
OWNED = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))  # every chapter
PAGES_MD = sorted((ROOT / "book").glob("*.md"))
CHANGELOG = re.compile(r"re-run\b|previous (full )?run|first run|earlier run|\(was |this session|"
                       r"issue tracker|could not re-read|moved into subpackages|has been restructured since|"
                       r"the code has changed since", re.I)
STATED_WALL = re.compile(r"(?:wall time|(?:chapter|page|notebook|it) took|(?:it|notebook) ran in)\s+\**([\d,]+)\s*s\b", re.I)
PRINTED_WALL = re.compile(r"wall time[^:\n]*:\s*([\d,]+)\s*s\b", re.I)


def _markdown(nb_path: Path) -> list[str]:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


def _printed(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))


def changelog_phrases(texts) -> list[str]:
    return [m.group(0) for t in texts for m in CHANGELOG.finditer(t)]


def test_issue31_changelog_finder_sees_history():
    assert changelog_phrases(["This is a re-run (after the package moved into subpackages)",
                              "Against this chapter's previous full run (29 November)", "the first run differed",
                              "FVU 0.1 (was 0.2)", "as quoted in our issue tracker"]) != []
    assert len(changelog_phrases(["This is a re-run (after the package moved into subpackages)"])) == 2
    assert changelog_phrases(["At 1,172 steps of the same run the gap was +5.6 %", "a rerun reuses them"]) == []


@pytest.mark.parametrize("path", OWNED + PAGES_MD, ids=lambda p: p.name)
def test_issue31_pages_state_findings_not_history(path):
    texts = _markdown(path) if path.suffix == ".ipynb" else [path.read_text(encoding="utf-8")]
    assert changelog_phrases(texts) == []


@pytest.mark.parametrize("path", OWNED, ids=lambda p: p.name)
def test_issue31_stated_wall_times_equal_printed(path):
    printed = set(PRINTED_WALL.findall(_printed(path)))
    stated = {m for t in _markdown(path) for m in STATED_WALL.findall(t)}
    assert stated <= printed, f"prose states wall times {sorted(stated - printed)} s, the run printed {sorted(printed)}"


def test_issue31_wall_time_checker_reads_both_sides():
    assert STATED_WALL.findall("wall time **90 s**, printed at the end; the chapter took 113 s; training took 7 s") == ["90", "113"]
    assert PRINTED_WALL.findall("wall time: 366 s on 1 CPU thread(s)\nwall time of this notebook: 55 s") == ["366", "55"]


def test_issue31_paper_is_cited_not_quoted_from_hearsay():
    texts = [t for p in OWNED for t in _markdown(p)] + [p.read_text(encoding="utf-8") for p in PAGES_MD]
    assert not any("~30 %" in t or "about 30 %" in t for t in texts)
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    assert "eprint        = {2510.00404}" in bib
    assert "{cite}`zhu2025abstopk`" in (ROOT / "book" / "intro.md").read_text(encoding="utf-8")


def test_bench_verdict_needs_two_standard_errors_on_each_seed():
    def s(absorb, absorb_s1, tpp, tpp_s1):
        return {"bench_absorption_diff": absorb, "bench_absorption_diff_se": 0.01, "bench_absorption_diff_s1": absorb_s1,
                "bench_absorption_diff_se_s1": 0.01, "bench_tpp20_diff": tpp, "bench_tpp20_diff_se": 0.01,
                "bench_tpp20_diff_s1": tpp_s1, "bench_tpp20_diff_se_s1": 0.01}
    assert findings_text._bench_verdict(s(-0.01, -0.05, 0.0, 0.0)).startswith("neither absorption nor TPP")
    said = findings_text._bench_verdict(s(-0.03, -0.05, -0.03, -0.021))  # lower absorption is better
    assert said.startswith("AbsTopK is better on absorption on both seeds; TopK is better on TPP on both seeds")
    assert "TPP does not separate" in findings_text._bench_verdict(s(0.03, 0.05, 0.03, -0.03))
