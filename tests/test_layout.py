"""The layout's rule, read from the code's imports: the library never imports the
application, no package imports another's private module, and packages form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
APPLICATION = ("bptt.run", "bptt.cli", "bptt.__main__")  # and the root, which names them


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


def test_the_layout_is_read_whole():
    assert {"bptt.cells", "bptt.engine._unroll", "bptt.run._loop", "bptt.cli"} <= set(MODULES)
    assert {"bptt.engine._fast", "bptt.cells"} <= _imports("bptt.engine._unroll")
    assert "bptt._checks" in _imports("bptt.reservoir._ridge")  # `from bptt import _checks`
    assert _foreign_private("bptt.cli", "bptt.run._build")
    assert _foreign_private("bptt.engine._fast", "bptt.cells._lstm")
    assert not _foreign_private("bptt.run._loop", "bptt.run._build")
    assert not _foreign_private("bptt.tasks._series", "bptt._checks")  # the root's: shared


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
    path: list[str] = []
    done: set[str] = set()

    def visit(unit: str) -> None:
        if unit in path:
            cycle = [*path[path.index(unit) :], unit]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if unit in done:
            return
        path.append(unit)
        for target in sorted(edges.get(unit, ())):
            visit(target)
        path.pop()
        done.add(unit)

    for unit in sorted(edges):
        visit(unit)


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
