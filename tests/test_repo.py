"""The repository's own promises: README commands, CI entry point, packaging."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command() -> str:
    script = (ROOT / ".ci" / "run").read_text()
    awk = re.search(r"cmd=\$\(awk '(.*?)' README.md\)", script).group(1)
    return subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _readme_test_block() -> list[str]:
    """The lines of the fenced block right after the ``<!-- test command -->`` marker, read as Markdown
    (independently of the CI script's awk): exactly one marker, and the block follows it at once."""
    lines = (ROOT / "README.md").read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip() == "<!-- test command -->"]
    assert len(marks) == 1, f"README.md needs exactly one '<!-- test command -->' marker; found {len(marks)}"
    fence = lines[marks[0] + 1]
    assert fence.startswith("```"), "the test command's fenced block must follow its marker directly"
    end = next(i for i in range(marks[0] + 2, len(lines)) if lines[i].startswith("```"))
    return lines[marks[0] + 2:end]


def test_ci_runs_the_readme_test_command():
    """What `.ci/run` extracts is the whole one-line block the README shows as the test command (a
    second line, a moved marker or an empty block would make CI run something else)."""
    block = _readme_test_block()
    assert len(block) == 1, f"the README's test command must be one line; the block has {len(block)}"
    assert _ci_command() == block[0].strip()
    cmd = block[0]
    assert "pytest" in cmd and "ABSTOPK_QUICK=1" in cmd and "--nbmake tests notebooks" in cmd
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

    root = Path(am.__file__).parent
    packages = [root] + sorted(p.parent for p in root.rglob("*/__init__.py"))
    for pkg in packages:  # the top level and every subpackage reach each of their modules lazily
        dotted = ".".join(("abstopk_mini",) + pkg.relative_to(root).parts)
        package = importlib.import_module(dotted)
        files = {p.stem for p in pkg.glob("*.py") if not p.stem.startswith("_")}
        files |= {p.parent.name for p in pkg.glob("*/__init__.py")}  # subpackages
        assert files <= set(dir(package)), (dotted, files - set(dir(package)))
        for name in sorted(files):
            module = importlib.import_module(f"{dotted}.{name}")
            value = getattr(package, name)  # a package may re-export a function named like its module
            assert value is module or getattr(value, "__module__", None) == module.__name__
    # the short names of the sparse-coding modules
    for short, full in (("prox", "coding.prox"), ("unroll", "coding.unroll"), ("toy", "coding.toy")):
        assert getattr(am, short) is importlib.import_module(f"abstopk_mini.{full}")


def _pins() -> dict[str, str]:
    """name -> version of every `name==version` line of constraints.txt (names normalised as pip does)."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not a `name==version` pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_constraints_pin_every_requirement_and_the_readme_uses_them():
    pins = _pins()
    assert pins["torch"] == "2.13.0"  # no local tag: it must also match a CUDA build's 2.13.0
    assert "abstopk-mini" not in pins  # the package itself comes from the checkout (-e .)
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = re.match(r"^([A-Za-z0-9_.-]+)", line)
        if name and not line.startswith("#"):
            assert re.sub(r"[-_.]+", "-", name.group(1)).lower() in pins, f"{line!r} has no pin in constraints.txt"
    assert "-c constraints.txt" in _ci_command()


# ----------------------------------------------------------------------------- layers (CONVENTIONS.md "Layout")
PACKAGE = ROOT / "abstopk_mini"
#: the layers, bottom up: a module may import its own layer and those below it, never one above
LAYERS = (
    ("core", ("kernels",)),  # the top-level modules and the fast kernels
    ("coding / lm / concepts / dashboard data / saebench", ("coding", "lm", "concepts", "dashboard", "saebench")),
    ("runs", ("runs",)),
    ("the book and the report", ("chapters", "exercises")),
    ("the command line", ("cli",)),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The modules of the package that ``path`` imports anywhere in the file (inside functions and
    ``TYPE_CHECKING`` blocks too: a lazy import is an arrow all the same), and its third-party roots."""
    import ast

    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:  # `from pkg import module` names the module, `from module import name` the module
                sub = f"{target}.{a.name}"
                out.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").is_file()
                        or (ROOT / Path(*sub.split(".")) / "__init__.py").is_file() else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def _layer(module: str) -> int | None:
    """The index in :data:`LAYERS` of a module of the package (None: the CLI and the package's face)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in ("__init__", "__main__"):
        return None
    for i, (_, folders) in enumerate(LAYERS):
        if parts[1] in folders:
            return i
    return 0 if (PACKAGE / f"{parts[1]}.py").is_file() else None


def test_layers_import_downward_only():
    """core -> coding / lm / concepts -> runs (computes and writes records, no matplotlib) -> the book and
    the report -> the CLI: no import runs back up, and no two modules import each other in a circle."""
    files = sorted(PACKAGE.rglob("*.py"))
    graph = {_module_name(p): _imports(p) for p in files}
    up = []
    for module, imports in graph.items():
        here = _layer(module)
        if here is None:
            continue
        for target in imports:
            there = _layer(target) if target.startswith("abstopk_mini.") else None
            if there is not None and there > here:
                up.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
            if target.split(".")[0] == "matplotlib" and here < 3:
                up.append(f"{module} ({LAYERS[here][0]}) imports matplotlib: figures belong to the book and the report")
    assert not up, "\n".join(sorted(up))
    # no circle between modules (a package's __init__ only hands its submodules' names on)
    edges = {m: {t for t in imps if t in graph and not (PACKAGE / Path(*t.split(".")[1:]) / "__init__.py").is_file()}
             for m, imps in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            assert state.get(t) != "open", "import circle: " + " -> ".join(stack[stack.index(t):] + [t])
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_module_stays_within_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"modules over 450 lines (give each a sibling module): {long}"
