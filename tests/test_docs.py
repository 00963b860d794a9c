"""Every page of docs/ runs as written: its Python examples execute, its figures exist,
and the index lists it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "README.md")
CODE = re.compile(r"```python\n(.*?)```", re.DOTALL)
FIGURE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def test_the_index_lists_every_page_and_every_capability_has_one():
    index = (DOCS / "README.md").read_text()
    assert PAGES and all(f"({page.name})" in index for page in PAGES)
    expected = {"clipping", "taps", "tbptt", "diagnostics", "cells", "reservoir"}
    expected |= {"hessian-free", "bench"}
    assert {page.stem for page in PAGES} == expected


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_the_page_runs_and_shows_a_figure_the_project_drew(page, tmp_path, monkeypatch):
    text = page.read_text()
    blocks = CODE.findall(text)
    assert blocks, f"{page.name} has no runnable example"
    figures = FIGURE.findall(text)
    assert figures, f"{page.name} has no figure"
    for figure in figures:
        assert (DOCS / figure).is_file(), f"{figure}: run python docs/make_figures.py"
        assert figure.startswith("figures/") and Path(figure).stem in _drawn()
    monkeypatch.chdir(tmp_path)  # an example that writes, writes here
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for block in blocks:
        exec(compile(block, str(page), "exec"), namespace)  # the page's own code, as written


def _drawn() -> set[str]:
    """The figures docs/make_figures.py draws (by name)."""
    script = (DOCS / "make_figures.py").read_text()
    table = script[script.index("FIGURES = {") :]
    return set(re.findall(r'"([a-z-]+)": ', table))
