"""The Jupyter Book builds strictly, and every page it promises is there and clean.

One strict build per test session (``jupyter-book build --all -W --keep-going``) into a
temporary directory, so the tests never write into the working tree. Then the built HTML is
checked against ``_toc.yml``:

- every toc entry has a page;
- every chapter (a notebook under ``notebooks/``) shows at least one figure from its outputs
  and no error output (a traceback); stderr streams such as warnings are allowed;
- the notation page has its tables, the bibliography lists every entry of the .bib file,
  and maths is served from ``_static`` (renders offline).

The chapter checks are parametrised over the notebook entries of ``_toc.yml``, so they grow
as chapters are added. The checker itself is tested on small HTML snippets shaped like what
myst-nb emits, so a check that could never fail would show up here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
bs4 = pytest.importorskip("bs4")

ROOT = Path(__file__).resolve().parents[1]
TOC = ROOT / "_toc.yml"
BIB = ROOT / "book" / "references.bib"
CHAPTER_DIR = "notebooks/"


# ------------------------------------------------------------------ reading the toc


def toc_files(toc_path: Path = TOC) -> list[str]:
    """Every ``file:`` in a jb-book toc (root first), without extension, in reading order."""
    toc = yaml.safe_load(toc_path.read_text())
    files = [toc["root"]]

    def walk(items):
        for item in items or []:
            if "file" in item:
                files.append(item["file"])
            walk(item.get("sections"))
            walk(item.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", f) for f in files]


def chapter_files(toc_path: Path = TOC) -> list[str]:
    """The toc entries that are chapter notebooks (``notebooks/NN_topic``)."""
    return [f for f in toc_files(toc_path) if f.startswith(CHAPTER_DIR)]


# ------------------------------------------------------------------ the HTML checker


TRACEBACK_CLASSES = {"traceback", "output_error"}  # myst-nb: "traceback"; nbsphinx: "output_error"
TRACEBACK_TEXT = "Traceback (most recent call last)"


def chapter_problems(html: str) -> list[str]:
    """What is wrong with a built chapter page; an empty list means it is fine.

    A chapter must show at least one image inside a cell output (a figure from the notebook;
    the Colab logo and other page furniture do not count) and no error output: no element with
    a traceback class, and no stderr stream holding a Python traceback. Plain stderr (warnings,
    progress bars) is fine.
    """
    soup = bs4.BeautifulSoup(html, "html.parser")
    problems = []
    outputs = soup.select("div.cell_output")
    if not any(out.find("img") is not None for out in outputs):
        problems.append(f"no figure: none of the {len(outputs)} cell outputs holds an <img>")
    for el in soup.find_all(class_=lambda c: c is not None and c in TRACEBACK_CLASSES):
        first = el.get_text(" ", strip=True)[:300]
        problems.append(f"error output: {first!r}")
    for el in soup.select("div.output.stderr"):
        text = el.get_text(" ", strip=True)
        if TRACEBACK_TEXT in text:
            problems.append(f"traceback printed to stderr: {text[:300]!r}")
    return problems


# ------------------------------------------------------------------ one strict build


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory) -> Path:
    """Build the book once, strictly, into a temp dir; fail with the warnings if it fails."""
    pytest.importorskip("jupyter_book", reason="the book needs jupyter-book (requirements.txt)")
    out = tmp_path_factory.mktemp("book")
    cmd = [
        sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build", "--all", "-W", "--keep-going", "--path-output", str(out), str(ROOT),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    seconds = time.perf_counter() - t0
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # drop terminal colours
    if proc.returncode != 0:
        warnings = [ln for ln in log.splitlines() if "WARNING" in ln or "ERROR" in ln]
        pytest.fail(
            f"strict book build failed (exit {proc.returncode}) after {seconds:.0f} s.\n"
            "Warnings and errors:\n  " + "\n  ".join(warnings or ["(none found)"]) +
            "\n--- last lines of the log ---\n" + "\n".join(log.splitlines()[-30:]),
            pytrace=False,
        )
    print(f"book build: {seconds:.1f} s")
    html = out / "_build" / "html"
    assert (html / "index.html").is_file(), f"build succeeded but {html}/index.html is missing"
    return html


# ------------------------------------------------------------------ the built book


@pytest.mark.parametrize("entry", toc_files())
def test_every_toc_entry_has_a_page(html_dir, entry):
    page = html_dir / f"{entry}.html"
    assert page.is_file(), f"_toc.yml lists {entry!r} but the build has no {page.name}"


@pytest.mark.parametrize("chapter", chapter_files())
def test_chapter_has_a_figure_and_no_error_output(html_dir, chapter):
    assert (ROOT / f"{chapter}.ipynb").is_file(), f"{chapter}.ipynb listed in _toc.yml is missing"
    problems = chapter_problems((html_dir / f"{chapter}.html").read_text(encoding="utf-8"))
    assert not problems, f"{chapter}: " + "; ".join(problems)


def test_notation_page_has_the_tables(html_dir):
    soup = bs4.BeautifulSoup((html_dir / "book" / "notation.html").read_text(), "html.parser")
    text = soup.get_text(" ")
    assert len(soup.find_all("table")) >= 4, "the notation page should hold its symbol tables"
    for name in ["W_enc", "b_dec", "d_sae", "abs_topk", "am.unroll.iht", "am.SAEConfig",
                 "am.train_sae", "am.metrics.fvu"]:
        assert name in text, f"notation page does not mention {name}"


def test_bibliography_lists_every_bib_entry(html_dir):
    soup = bs4.BeautifulSoup((html_dir / "book" / "references.html").read_text(), "html.parser")
    n_bib = len(re.findall(r"^@\w+\{", BIB.read_text(), flags=re.M))
    n_html = len(soup.select("div.citation"))
    assert n_bib > 0
    assert n_html == n_bib, f"references page shows {n_html} entries, {BIB.name} has {n_bib}"


def test_intro_citations_resolve(html_dir):
    soup = bs4.BeautifulSoup((html_dir / "book" / "intro.html").read_text(), "html.parser")
    links = [a for a in soup.find_all("a", href=True) if a["href"].startswith("references.html#")]
    assert len(links) >= 5, "the intro should cite the literature with {cite}"


def test_maths_is_served_locally(html_dir):
    soup = bs4.BeautifulSoup((html_dir / "book" / "intro.html").read_text(), "html.parser")
    srcs = [s["src"] for s in soup.find_all("script", src=True) if "mathjax" in s["src"].lower()]
    assert srcs, "no MathJax script on the intro page"
    for src in srcs:
        assert not src.startswith(("http:", "https:", "//")), f"MathJax loads from a CDN: {src}"
        assert (html_dir / "book" / src).resolve().is_file(), f"MathJax script {src} not in the build"


# ------------------------------------------------------------------ the checker itself


def _page(*outputs: str) -> str:
    """A chapter page shaped like myst-nb's output: one cell per output, plus a Colab logo."""
    cells = "".join(
        '<div class="cell docutils container"><div class="cell_input docutils container">'
        "<pre>code</pre></div>"
        f'<div class="cell_output docutils container">{o}</div></div>'
        for o in outputs
    )
    logo = '<img alt="Colab logo" src="../_static/images/logo_colab.png">'
    return f"<html><body>{logo}<main>{cells}</main></body></html>"


FIGURE = '<img alt="" src="../_images/abc.png" />'
STDOUT = '<div class="output stream highlight-myst-ansi notranslate"><pre>quick mode: off</pre></div>'
WARNING = ('<div class="output stderr highlight-myst-ansi notranslate">'
           "<pre>UserWarning: a harmless warning</pre></div>")
TRACEBACK = ('<div class="output traceback highlight-ipythontb notranslate"><pre>'
             '<span class="ne">ZeroDivisionError</span> Traceback (most recent call last)'
             "</pre></div>")
STDERR_TRACEBACK = ('<div class="output stderr highlight-myst-ansi notranslate"><pre>'
                    "Traceback (most recent call last):\n  File ...\nValueError: k</pre></div>")


def test_checker_accepts_a_figure_with_warnings():
    assert chapter_problems(_page(STDOUT, WARNING, FIGURE)) == []


def test_checker_needs_a_figure_in_an_output():
    problems = chapter_problems(_page(STDOUT, WARNING))  # only the Colab logo is an <img>
    assert len(problems) == 1 and problems[0].startswith("no figure")


def test_checker_rejects_an_error_output():
    problems = chapter_problems(_page(FIGURE, TRACEBACK))
    assert len(problems) == 1 and "ZeroDivisionError" in problems[0]


def test_checker_rejects_a_traceback_on_stderr():
    problems = chapter_problems(_page(FIGURE, STDERR_TRACEBACK))
    assert len(problems) == 1 and problems[0].startswith("traceback printed to stderr")


def test_toc_reader_finds_nested_entries(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: Theory\n    chapters:\n"
        "      - file: notebooks/01_sparse_coding\n"
        "        sections:\n          - file: notebooks/01b_extra.ipynb\n"
        "  - caption: Reference\n    chapters:\n      - file: book/notation\n"
    )
    assert toc_files(toc) == ["book/intro", "notebooks/01_sparse_coding", "notebooks/01b_extra",
                              "book/notation"]
    assert chapter_files(toc) == ["notebooks/01_sparse_coding", "notebooks/01b_extra"]


# ------------------------------------------------------------------ the sources (no build needed)
#
# Checks on the committed chapter notebooks and book pages themselves: what a reader would see
# even without building (a placeholder in a printed output), what nbformat and the sidebar need
# (cell ids; headings without maths, since the sidebar and the page <title> show the heading as
# plain text where MathJax does not run).

import json  # noqa: E402
import warnings  # noqa: E402

PLACEHOLDER = re.compile(r"\b(WALL|TODO|TBD|XXX|FIXME)\b|\{\{")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}|:{3,})")


def toc_sources(toc_path: Path = TOC) -> list[Path]:
    """The source file (.md or .ipynb) of every toc entry."""
    out = []
    for entry in toc_files(toc_path):
        found = [p for p in (ROOT / f"{entry}.ipynb", ROOT / f"{entry}.md") if p.is_file()]
        assert found, f"_toc.yml lists {entry!r} but neither {entry}.ipynb nor {entry}.md exists"
        out.append(found[0])
    return out


def placeholders(text: str) -> list[str]:
    """Each placeholder in ``text`` (WALL, TODO, TBD, XXX, FIXME as words, or an unfilled ``{{``),
    with a little context."""
    return [text[max(0, m.start() - 40): m.end() + 40].replace("\n", " ") for m in PLACEHOLDER.finditer(text)]


def markdown_headings(text: str) -> list[str]:
    """The ATX headings (``# ...`` to ``###### ...``) of a markdown text, outside fenced blocks."""
    heads, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if m:
            mark = m.group(1)[0]
            if fence is None:
                fence = mark
            elif fence == mark:
                fence = None
            continue
        if fence is None and (h := HEADING.match(line)):
            heads.append(h.group(2))
    return heads


def notebook_texts(nb: dict):
    """(cell index, what, text) for every markdown cell and every text output of a notebook.

    A self-contained page shown in an iframe (a dashboard, ``<iframe srcdoc=...``) is data, not
    prose: its payload holds model vocabulary strings such as ``{{{`` and is left out."""
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            yield i, "markdown", "".join(cell["source"])
        for out in cell.get("outputs", []):
            if "text" in out:
                yield i, f"{out.get('name', 'stream')} output", "".join(out["text"])
            for mime, value in out.get("data", {}).items():
                value = "".join(value) if isinstance(value, list) else value
                if mime.startswith("text/") and not (mime == "text/html" and value.startswith("<iframe srcdoc=")):
                    yield i, f"{mime} output", value


def source_problems(path: Path) -> list[str]:
    """Placeholders in the text a reader sees, and maths in headings, for one page source."""
    problems = []
    if path.suffix == ".ipynb":
        texts = list(notebook_texts(json.loads(path.read_text(encoding="utf-8"))))
    else:
        texts = [(None, "page", path.read_text(encoding="utf-8"))]
    for i, what, text in texts:
        where = f"cell {i} ({what})" if i is not None else what
        problems += [f"{where}: placeholder ...{p}..." for p in placeholders(text)]
        if what in ("markdown", "page"):
            problems += [f"{where}: maths in heading {h!r}" for h in markdown_headings(text) if "$" in h]
    return problems


@pytest.mark.parametrize("source", toc_sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_has_no_placeholder_and_no_maths_in_headings(source):
    problems = source_problems(source)
    assert not problems, f"{source.relative_to(ROOT)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("chapter", chapter_files())
def test_notebook_is_valid_nbformat_with_cell_ids(chapter):
    nbformat = pytest.importorskip("nbformat")
    path = ROOT / f"{chapter}.ipynb"
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert (raw["nbformat"], raw["nbformat_minor"]) >= (4, 5), f"{path.name}: cell ids need nbformat >= 4.5"
    missing = [i for i, cell in enumerate(raw["cells"]) if "id" not in cell]
    assert not missing, f"{path.name}: cells {missing} have no id"
    ids = [cell["id"] for cell in raw["cells"]]
    assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nbformat warns (MissingIDFieldWarning, ...) instead of failing
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)


@pytest.mark.parametrize("chapter", chapter_files())
def test_every_figure_has_alt_text_and_the_setup_is_hidden(chapter):
    """A figure's alt text is its caption (cell metadata ``mystnb.image.alt``, which MyST-NB puts on
    the <img>), not the image's hash file name; the setup cell is folded away (``hide-input``)."""
    raw = json.loads((ROOT / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert "hide-input" in code[0]["metadata"].get("tags", []), f"{chapter}: the setup cell is not tagged hide-input"
    bad = [i for i, c in enumerate(code) if any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
           and not c["metadata"].get("mystnb", {}).get("image", {}).get("alt", "").startswith("Figure ")]
    assert not bad, f"{chapter}: code cells {bad} show a figure without alt text 'Figure N.M: ...'"


def test_built_images_carry_their_alt_text(html_dir):
    page = (html_dir / "notebooks" / "06_training_saes.html").read_text()
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert any(a.startswith("Figure 6.1: ") for a in alts) and not any(a.endswith(".png") for a in alts)


def test_notebook_texts_leave_out_iframe_pages_only():
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"data": {"text/html": '<iframe srcdoc="{&quot;tok&quot;: &quot;{{{&quot;}"></iframe>', "text/plain": "<HTML>"}},
        {"data": {"text/html": "<p>{{ unfilled }}</p>"}}]}]}
    texts = [t for _, _, t in notebook_texts(nb)]
    assert texts == ["<HTML>", "<p>{{ unfilled }}</p>"] and len(placeholders(texts[1])) == 1


def test_placeholder_finder():
    assert placeholders("wall time 557 s, a wall of text") == []
    assert len(placeholders("wall time **WALL s**")) == 1
    assert len(placeholders("TODO: rerun\nnot done (TBD), XXX")) == 3
    assert len(placeholders("Hello {{ name }}")) == 1
    assert placeholders("TODOS and XXXL and a set {1}") == []


def test_heading_finder_skips_fences_and_sees_maths():
    text = ("# 3. Unrolling deeper: $T$-step encoders\n\ntext with $x$\n\n```python\n# $not a heading$\n```\n"
            ":::{admonition} Box\n## $also fenced$\n:::\n### Plain heading ###\n")
    assert markdown_headings(text) == ["3. Unrolling deeper: $T$-step encoders", "Plain heading"]
    nb = {"cells": [{"cell_type": "markdown", "source": ["## 1.5 Support as $k$ grows\n"]},
                    {"cell_type": "code", "source": ["# $code comment$\n"],
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": ["wall time WALL s\n"]}]}]}
    assert [(i, what) for i, what, _ in notebook_texts(nb)] == [(0, "markdown"), (1, "stdout output")]


def test_source_checker_flags_a_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title with $T$\n\nwall time **WALL s**\n\n## Clean heading\n")
    problems = source_problems(page)
    assert len(problems) == 2
    assert any("placeholder" in p for p in problems) and any("maths in heading" in p for p in problems)


# ------------------------------------------------------------------ page chrome of the built book


def test_references_page_labels_are_author_year(html_dir):
    """Citations in the text read "Zhu et al. [2025]"; the references page labels match, not [1]."""
    soup = bs4.BeautifulSoup((html_dir / "book" / "references.html").read_text(), "html.parser")
    labels = [el.get_text("", strip=True) for el in soup.select("div.citation span.label")]
    assert labels, "no labelled entries on the references page"
    bad = [lab for lab in labels if not re.fullmatch(r"\[[^\[\]\d][^\[\]]*, \d{4}[a-z]?\]", lab)]
    assert not bad, f"references not labelled author-year: {bad[:5]}"
    assert "[Zhu et al., 2025]" in labels


def test_one_search_field_per_page(html_dir):
    """The sidebar's search field only: no second, full-width one in a header bar above the page."""
    for page in ("book/intro.html", "notebooks/03_unrolling_deeper.html"):
        soup = bs4.BeautifulSoup((html_dir / page).read_text(), "html.parser")
        fields = soup.select("button.search-button-field")
        assert len(fields) == 1, f"{page}: {len(fields)} search fields"
        assert fields[0].find_parent(class_="bd-sidebar-primary") is not None, f"{page}: the search field is not in the sidebar"
        header = soup.select_one("#pst-header")
        assert header is None or not header.select(".navbar-item"), f"{page}: the header bar has items"


def test_code_cells_wrap_long_lines(html_dir):
    """A chapter page loads a stylesheet that makes its code cells wrap (pre-wrap) rather than
    scroll, so the end of a 120-character line is in the text column, not behind a scroll bar."""
    soup = bs4.BeautifulSoup((html_dir / "notebooks/06_training_saes.html").read_text(), "html.parser")
    assert soup.select(".cell_input div.highlight pre"), "no code cell on the page"
    sheets = [link["href"].split("?")[0] for link in soup.select('link[rel="stylesheet"]')]
    css = "".join((html_dir / "notebooks" / href).read_text() for href in sheets if href.endswith("code.css"))
    rule = re.search(r"\.cell_input div\.highlight pre,?[^{]*\{([^}]*)\}", css)
    assert rule and "pre-wrap" in rule.group(1), f"no wrapping rule for code cells in {sheets}"


def test_command_blocks_and_printed_outputs_wrap(html_dir):
    """The markdown pages' command blocks (how_to_run's) wrap like code cells; printed outputs
    wrap too, in a smaller type (>= 11.5 px) so that aligned tables up to ~97 characters fit."""
    soup = bs4.BeautifulSoup((html_dir / "book/how_to_run.html").read_text(), "html.parser")
    blocks = soup.select('div[class^="highlight-"] > div.highlight pre')
    assert blocks, "no command block on how_to_run"
    sheets = [link["href"].split("?")[0] for link in soup.select('link[rel="stylesheet"]')]
    css = "".join((html_dir / "book" / href).read_text() for href in sheets if href.endswith("code.css"))
    rule = re.search(r'div\[class\^="highlight-"\] > div\.highlight pre\s*\{([^}]*)\}', css)
    assert rule and "pre-wrap" in rule.group(1), f"no wrapping rule for command blocks in {sheets}"
    chapter = bs4.BeautifulSoup((html_dir / "notebooks/10_is_the_verdict_ours.html").read_text(), "html.parser")
    assert chapter.select("div.cell_output div.output div.highlight pre"), "no printed output on chapter 10"
    out = re.search(r"div\.cell_output div\.output div\.highlight pre\s*\{([^}]*)\}", css)
    assert out and "pre-wrap" in out.group(1), "no wrapping rule for printed outputs"
    size = re.search(r"font-size:\s*([0-9.]+)px", out.group(1))
    assert size and float(size.group(1)) >= 11.5, f"printed outputs set below 11.5 px: {out.group(1)}"


# ------------------------------------------------------------------ figure widths
# The text column is about 690 px wide; a figure is drawn at 6 in and 200 dpi (1 200 px, see
# abstopk_mini.chapters.style) and shown scaled to the column, so its text reads at the body size.
# A wider PNG is shown smaller still: anything over 1 400 px has text below the body size.

import base64  # noqa: E402
import struct  # noqa: E402

MAX_PNG_PX = 1400


def png_size(data) -> tuple[int, int]:
    """(width, height) of a base64 PNG (a str, or the list of lines nbformat may store), read from
    its IHDR chunk: 8 signature bytes, 4 length bytes, b"IHDR", then width and height (big-endian)."""
    text = "".join(data) if isinstance(data, list) else data
    head = base64.b64decode("".join(text.split())[:32])  # 32 base64 characters = the first 24 bytes
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"not a PNG header: {head[:16]!r}")
    return struct.unpack(">II", head[16:24])


def png_outputs(nb: dict):
    """``(cell index, base64 PNG)`` for every PNG output of the notebook, in order."""
    for i, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                yield i, png


def wide_pngs(nb: dict, limit: int = MAX_PNG_PX) -> list[str]:
    """``"cell i: W x H px"`` for every PNG output of the notebook wider than ``limit`` pixels."""
    sizes = [(i, png_size(png)) for i, png in png_outputs(nb)]
    return [f"cell {i}: {w} x {h} px" for i, (w, h) in sizes if w > limit]


@pytest.mark.parametrize("chapter", chapter_files())
def test_committed_figures_fit_the_text_column(chapter):
    nb = json.loads((ROOT / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    wide = wide_pngs(nb)
    assert not wide, f"{chapter}: PNG outputs wider than {MAX_PNG_PX} px: " + "; ".join(wide)


#: the book's text column, px at a 1,280 px window, and the smallest size figure text may show at
TEXT_COLUMN_PX, MIN_TEXT_PX = 690, 13


def png_dpi(data) -> float | None:
    """Dots per inch stored in a base64 PNG's pHYs chunk (None if it has none before the image data).
    Chunks are 4 length bytes, 4 type bytes, the data and a 4-byte CRC; pHYs holds x and y pixels
    per unit (big-endian) and a unit byte (1 = metre)."""
    raw = base64.b64decode("".join(("".join(data) if isinstance(data, list) else data).split()))
    i = 8
    while i + 8 <= len(raw):
        (n,), kind = struct.unpack(">I", raw[i:i + 4]), raw[i + 4:i + 8]
        if kind == b"pHYs":
            x, _, unit = struct.unpack(">IIB", raw[i + 8:i + 17])
            return x * 0.0254 if unit == 1 else None
        if kind == b"IDAT":
            return None
        i += 12 + n
    return None


def small_text_pngs(nb: dict, font_pt: float, column_px: int = TEXT_COLUMN_PX, min_px: float = MIN_TEXT_PX) -> list[str]:
    """``"cell i: ..."`` for every PNG output whose ``font_pt`` text shows smaller than ``min_px``
    on the page: a PNG of width W drawn at D dpi shows text of s pt at s · D / 72 · min(1, column / W)
    px. A PNG without a stored dpi was not drawn by the book's style module and is listed too."""
    out = []
    for i, png in png_outputs(nb):
        (w, _), dpi = png_size(png), png_dpi(png)
        shown = None if dpi is None else font_pt * dpi / 72 * min(1.0, column_px / w)
        if shown is None or shown < min_px:
            out.append(f"cell {i}: {w} px at {'?' if dpi is None else f'{dpi:.0f}'} dpi, {font_pt:g} pt text shows at "
                       f"{'?' if shown is None else f'{shown:.1f}'} px")
    return out


@pytest.mark.parametrize("chapter", chapter_files())
def test_committed_figures_show_text_at_body_size(chapter):
    """Every figure is drawn by abstopk_mini.chapters.style (its dpi is stored in the PNG), so its
    text is at least style.FONT points; at that dpi and width it must read at >= MIN_TEXT_PX."""
    from abstopk_mini.chapters import style

    nb = json.loads((ROOT / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    small = small_text_pngs(nb, style.FONT)
    assert not small, f"{chapter}: figures whose text is too small at page width: " + "; ".join(small)


def _png_b64(width: int, height: int, dpi: float | None = None) -> str:
    ihdr = struct.pack(">II", width, height) + bytes([8, 6, 0, 0, 0])
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + b"\0" * 4  # noqa: E731
    phys = chunk(b"pHYs", struct.pack(">IIB", round(dpi / 0.0254), round(dpi / 0.0254), 1)) if dpi else b""
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + phys + chunk(b"IDAT", b"")).decode()


def test_text_size_checker_reads_the_stored_dpi():
    assert png_dpi(_png_b64(1200, 600, dpi=200)) == pytest.approx(200, abs=0.01)
    assert png_dpi(_png_b64(1200, 600)) is None
    nb = {"cells": [{"outputs": [{"data": {"image/png": _png_b64(1200, 600, dpi=200)}}]},  # 10 pt: 16.1 px
                    {"outputs": [{"data": {"image/png": _png_b64(1290, 400, dpi=100)}}]},  # 10 pt: 7.4 px
                    {"outputs": [{"data": {"image/png": _png_b64(640, 400)}}]}]}
    assert small_text_pngs(nb, 10) == ["cell 1: 1290 px at 100 dpi, 10 pt text shows at 7.4 px",
                                       "cell 2: 640 px at ? dpi, 10 pt text shows at ? px"]


def test_width_checker_reads_png_headers():
    b64 = _png_b64(1401, 300)
    assert png_size(b64) == (1401, 300)
    assert png_size([b64[:10] + "\n", b64[10:]]) == (1401, 300)  # split over lines, as nbformat may store it
    nb = {"cells": [{"outputs": [{"data": {"image/png": _png_b64(1400, 10)}}]},
                    {"outputs": [{"data": {"text/plain": "x"}}, {"data": {"image/png": b64}}]}]}
    assert wide_pngs(nb) == ["cell 1: 1401 x 300 px"]
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(base64.b64encode(b"GIF89a" + b"\0" * 30).decode())


# ------------------------------------------------------------------ machine paths in outputs
#: an absolute path of the machine that ran a chapter (a reader's machine has none of them)
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|root|tmp|content|Users|mnt|scratch)/[\w.\-/]+")
#: chapters whose committed outputs predate the check and that need trained Gemma SAEs to re-execute
PRINTS_MACHINE_PATHS = ()


def machine_paths(nb: dict) -> list[str]:
    """``"cell i: /path"`` for every absolute machine path in a text output (stream or text/plain);
    iframe pages (dashboards, explorers) are data, not printed paths, and are skipped."""
    out = []
    for i, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            text = output.get("text") or data.get("text/plain") or ""
            text = "".join(text) if isinstance(text, list) else text
            out += [f"cell {i}: {m}" for m in MACHINE_PATH.findall(text)]
    return out


def _path_params() -> list:
    xfail = pytest.mark.xfail(strict=False, reason="needs trained Gemma SAEs to re-execute; not re-executed here")
    return [pytest.param(c, marks=xfail if c in PRINTS_MACHINE_PATHS else (), id=c) for c in chapter_files()]


@pytest.mark.parametrize("chapter", _path_params())
def test_committed_outputs_print_no_machine_paths(chapter):
    """A path printed as /work/runs/... means nothing to a reader; chapters print paths relative to the
    runs folder or the repository (or name $ABSTOPK_RUNS)."""
    nb = json.loads((ROOT / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    found = machine_paths(nb)
    assert not found, f"{chapter}: absolute machine paths in outputs: " + "; ".join(found[:5])


def test_machine_path_checker():
    nb = {"cells": [{"outputs": [{"text": ["runs directory: /work/runs\n"]}]},
                    {"outputs": [{"data": {"text/plain": "acts/gemma-3-270m-L6 and ./runs and 1/2"}}]},
                    {"outputs": [{"data": {"text/plain": "saved to /home/me/x.json"}}]}]}
    assert machine_paths(nb) == ["cell 0: /work/runs", "cell 2: /home/me/x.json"]


# ------------------------------------------------------------------ widgets and their kernel-free twins
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def widget_problems(nb: dict) -> list[str]:
    """A live ipywidget shows nothing in the published book (no kernel): its cell must be tagged
    ``remove-output`` and the next code cell must show the kernel-free twin (an ``<iframe srcdoc>``
    page, abstopk_mini.chapters.twins)."""
    cells = nb.get("cells", [])
    code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    problems = []
    for n, i in enumerate(code):
        cell = cells[i]
        if not any(WIDGET_MIME in o.get("data", {}) for o in cell.get("outputs", [])):
            continue
        if "remove-output" not in cell.get("metadata", {}).get("tags", []):
            problems.append(f"cell {i}: a live widget not tagged remove-output")
        nxt = cells[code[n + 1]] if n + 1 < len(code) else {}
        html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in nxt.get("outputs", []))
        if "<iframe srcdoc=" not in html:
            problems.append(f"cell {i}: no kernel-free twin in the next code cell")
    return problems


@pytest.mark.parametrize("chapter", chapter_files())
def test_every_widget_has_a_kernel_free_twin(chapter):
    nb = json.loads((ROOT / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    problems = widget_problems(nb)
    assert not problems, f"{chapter}: " + "; ".join(problems)


def test_widget_checker():
    widget = {"cell_type": "code", "metadata": {}, "outputs": [{"data": {WIDGET_MIME: {}}}]}
    twin = {"cell_type": "code", "metadata": {}, "outputs": [{"data": {"text/html": '<iframe srcdoc="...">'}}]}
    tagged = dict(widget, metadata={"tags": ["remove-output"]})
    md = {"cell_type": "markdown", "source": "x"}
    assert widget_problems({"cells": [tagged, md, twin]}) == []
    assert widget_problems({"cells": [widget, twin]}) == ["cell 0: a live widget not tagged remove-output"]
    assert widget_problems({"cells": [tagged, md]}) == ["cell 0: no kernel-free twin in the next code cell"]


def test_runs_label_never_names_a_machine_path(monkeypatch):
    from abstopk_mini.runs.store import runs_label

    monkeypatch.setenv("ABSTOPK_RUNS", "/work/runs")
    assert runs_label() == "$ABSTOPK_RUNS" and runs_label(quick=True) == "a temporary folder"
    monkeypatch.delenv("ABSTOPK_RUNS")
    assert runs_label() == "./runs"
