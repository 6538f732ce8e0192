"""Issue 31: README's and the landing page's headline numbers come from results/ through one module,
and a page that differs from the records fails here (so CI fails when they are stale)."""

import json
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
