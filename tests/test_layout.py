"""The layout's rule, read from the code's imports: the library never imports the
application, no package imports another's private module, and packages form no cycle.
Inside the application, :mod:`bptt.run` is built in parts that import each other only
through their packages and in one direction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
APPLICATION = ("bptt.run", "bptt.cli", "bptt.__main__")  # and the root, which names them

# The parts of bptt.run, and the parts each may import (through the package only).
# Training is the base every other part builds on (config, run directory, the loop);
# the bench plans and executes trainings and ESN runs; the report reads run
# directories and the bench's results.csv and literature rows.
PART_IMPORTS: dict[str, set[str]] = {
    "bptt.run.training": set(),
    "bptt.run.esn": {"bptt.run.training"},
    "bptt.run.diagnosis": {"bptt.run.training"},
    "bptt.run.bench": {"bptt.run.training", "bptt.run.esn"},
    "bptt.run.report": {"bptt.run.training", "bptt.run.bench"},
}
PARTS = tuple(PART_IMPORTS)
# bptt.run's modules outside the parts: one below them that imports none of bptt.run
# (the figures, drawn by training's TensorBoard log and by the report's pages) and one
# above them that imports their packages (run_bench: the bench's runs, then the
# report's page; in the bench it would make bench -> report -> bench a cycle).
RUN_BELOW = ("bptt.run._figures",)
RUN_ABOVE = ("bptt.run._bench",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SOURCE.glob("bptt/**/*.py"))}


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every bptt module ``name`` imports, at any depth of its code."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importer's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from bptt import cells` imports the module bptt.cells
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return {m for m in found if m == "bptt" or m.startswith("bptt.")}


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _unit(module: str) -> str:
    """The package (or top-level module) a module belongs to: bptt.engine, bptt.taps."""
    return ".".join(module.split(".")[:2])


def _foreign_private(importer: str, imported: str) -> bool:
    """Whether ``imported`` is a private module of a package ``importer`` is not in."""
    parts = imported.split(".")
    private = [i for i, part in enumerate(parts) if part.startswith("_")]
    if not private:
        return False
    owner = ".".join(parts[: private[0]])  # the package whose private module it is
    return not (importer == owner or importer.startswith(owner + "."))


def _part(module: str) -> str | None:
    """The part of bptt.run a module belongs to (None: outside the parts)."""
    return next((p for p in PARTS if _in(module, (p,))), None)


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in a graph of imports (None: there is none)."""
    path: list[str] = []
    done: set[str] = set()

    def visit(unit: str) -> list[str] | None:
        if unit in path:
            return [*path[path.index(unit) :], unit]
        if unit in done:
            return None
        path.append(unit)
        for target in sorted(edges.get(unit, ())):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(unit)
        return None

    return next(filter(None, (visit(unit) for unit in sorted(edges))), None)


def test_the_layout_is_read_whole():
    modules = {"bptt.cells", "bptt.engine._unroll", "bptt.run.training._loop", "bptt.cli"}
    assert modules <= set(MODULES)
    assert {"bptt.engine._fast", "bptt.cells"} <= _imports("bptt.engine._unroll")
    assert "bptt._checks" in _imports("bptt.reservoir._ridge")  # `from bptt import _checks`
    assert "bptt.run._figures" in _imports("bptt.run.report._report")  # `import a.b as c`
    assert _foreign_private("bptt.cli", "bptt.run.training._build")
    assert _foreign_private("bptt.run.bench._plan", "bptt.run.training._config")
    assert _foreign_private("bptt.engine._fast", "bptt.cells._lstm")
    assert not _foreign_private("bptt.run.training._loop", "bptt.run.training._build")
    assert not _foreign_private("bptt.tasks._series", "bptt._checks")  # the root's: shared
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}}) is None


@pytest.mark.parametrize("name", [m for m in MODULES if m != "bptt" and not _in(m, APPLICATION)])
def test_the_library_never_imports_the_application(name):
    wrong = sorted(m for m in _imports(name) if _in(m, APPLICATION))
    assert not wrong, f"{name} imports {wrong}"


@pytest.mark.parametrize("name", list(MODULES))
def test_no_module_imports_another_packages_private_module(name):
    wrong = sorted(m for m in _imports(name) if _foreign_private(name, m))
    assert not wrong, f"{name} imports private {wrong}"


def test_the_packages_form_no_cycle():
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        if name == "bptt":  # the root names everything; it is no package of its own
            continue
        targets = {_unit(m) for m in _imports(name) if m != "bptt"} - {_unit(name)}
        edges.setdefault(_unit(name), set()).update(targets)
    cycle = _cycle(edges)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_every_module_of_the_application_has_its_place():
    run = [m for m in MODULES if _in(m, ("bptt.run",)) and m != "bptt.run"]
    unplaced = sorted(m for m in run if _part(m) is None and m not in RUN_BELOW + RUN_ABOVE)
    assert not unplaced, f"in no part of bptt.run: {unplaced}"
    for part in PARTS:  # each part is a package
        assert MODULES[part].name == "__init__.py", f"{part} is not a package"


@pytest.mark.parametrize("part", PARTS)
def test_each_part_states_its_public_api(part):
    """A docstring, imports from the part's own modules, and ``__all__``: nothing else."""
    import importlib

    tree = ast.parse(MODULES[part].read_text())
    assert ast.get_docstring(tree), f"{part}/__init__.py says nothing of what the part does"
    for node in tree.body[1:]:
        own = isinstance(node, ast.ImportFrom) and (node.module or "").startswith(part + "._")
        listed = isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
        assert own or listed, f"{part}/__init__.py line {node.lineno} is no re-export"
    package = importlib.import_module(part)
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert not missing, f"{part}.__all__ names what it lacks: {missing}"


def test_bptt_run_re_exports_the_parts():
    import importlib

    import bptt.run

    sources = [importlib.import_module(m) for m in (*PARTS, *RUN_ABOVE)]
    for name in bptt.run.__all__:
        value = getattr(bptt.run, name)
        assert any(getattr(m, name, None) is value for m in sources), name


@pytest.mark.parametrize("name", [m for m in MODULES if _part(m) is not None])
def test_a_part_imports_another_only_through_its_package(name):
    """No private module of another part, nor bptt.run or the module above the parts."""
    wrong = []
    for imported in _imports(name):
        if not _in(imported, ("bptt.run",)) or _part(imported) == _part(name):
            continue
        if imported in RUN_BELOW:
            continue
        if imported not in PARTS:  # bptt.run, run_bench's module, a part's private module
            wrong.append(imported)
    assert not wrong, f"{name} imports {sorted(wrong)}"


def test_the_parts_import_each_other_in_one_direction():
    edges: dict[str, set[str]] = {part: set() for part in PARTS}
    for name in MODULES:
        part = _part(name)
        if part is not None:
            edges[part].update(p for p in map(_part, _imports(name)) if p not in (None, part))
    for part, targets in edges.items():
        extra = sorted(targets - PART_IMPORTS[part])
        assert not extra, f"{part} imports {extra}, against the parts' direction"
    assert _cycle(PART_IMPORTS) is None


def test_the_modules_beside_the_parts_keep_their_level():
    def run_imports(name: str) -> set[str]:
        return {m for m in _imports(name) if _in(m, ("bptt.run",))}

    for name in RUN_BELOW:  # below the parts: nothing of bptt.run
        assert not run_imports(name), f"{name} imports {sorted(run_imports(name))}"
    for name in RUN_ABOVE:  # above them: their packages (bptt.run itself imports these)
        wrong = sorted(run_imports(name) - set(PARTS))
        assert not wrong, f"{name} imports {wrong}"
    wrong = sorted(run_imports("bptt.cli") - {"bptt.run", *PARTS})
    assert not wrong, f"bptt.cli imports {wrong}: only bptt.run and its parts' packages"


def test_importing_the_library_does_not_load_the_application():
    import subprocess
    import sys

    probe = (
        "import sys, bptt, bptt.cells, bptt.diagnose, bptt.clip, bptt.reservoir; "
        "print(sorted(m for m in ('bptt.run', 'bptt.cli', 'pydantic', 'click') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# A function of the application a reader takes in at once: its code (the docstring
# aside) within a screen.
LONGEST_FUNCTION = 60


def test_no_function_of_the_application_runs_past_a_screen():
    def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
        lines = node.end_lineno - node.lineno + 1
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            if isinstance(first.value.value, str):  # the docstring
                lines -= first.end_lineno - first.lineno + 1
        return lines

    long = []
    for name, path in MODULES.items():
        if not (name.startswith("bptt.run") or name == "bptt.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if code_lines(node) > LONGEST_FUNCTION:
                    long.append(f"{name}.{node.name}: {code_lines(node)} lines")
    assert not long, long


TESTS = Path(__file__).resolve().parent


def test_the_tests_mirror_the_packages():
    """Each package of the library and each part of the application has its tests in the
    directory of the same path (tests/clip for bptt.clip, tests/run/bench for
    bptt.run.bench); no test at the top is named after a package (those moved). The
    top keeps the tests of the single modules and those that cross packages."""
    packages = sorted(
        m for m, p in MODULES.items() if p.name == "__init__.py" and m.count(".") >= 1
    )
    public = [m for m in packages if not m.rpartition(".")[2].startswith("_")]
    public = [m for m in public if m != "bptt.run"]  # its tests are its parts'
    for package in public:
        where = TESTS.joinpath(*package.split(".")[1:])
        assert list(where.glob("test_*.py")), f"{package} has no tests in {where}"
    leaves = {m.split(".")[1] for m in public}
    misplaced = [
        p.name for p in TESTS.glob("test_*.py") if p.stem.split("_")[1] in leaves - {"run"}
    ]
    assert not misplaced, f"tests named after a package, at the top: {misplaced}"
