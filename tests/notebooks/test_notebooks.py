"""The notebooks are product: each lesson is checked for the shape DESIGN.md promises learners.

nbval (``make notebooks``) runs them and compares the outputs they teach with; these tests check what nbval
cannot see: one setup cell, no helper code, stored outputs for every checked cell, self-checking exercises.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
MAX_CODE_LINES = 45  # a manifest in YAML is the longest thing a lesson's cell should hold


def _cells(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["cells"])


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _code(path: Path) -> list[str]:
    return [_source(c) for c in _cells(path) if c["cell_type"] == "code"]


lessons = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])


def test_there_are_lessons() -> None:
    assert NOTEBOOKS, "notebooks/ holds no lesson"


@lessons
def test_name_is_numbered_kebab_case(path: Path) -> None:
    assert re.fullmatch(r"\d\d-[a-z0-9]+(-[a-z0-9]+)*\.ipynb", path.name)


@lessons
def test_opens_with_a_title_then_one_setup_cell(path: Path) -> None:
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# ")
    code = _code(path)
    assert "meshlab.lab.up()" in code[0], "the first code cell starts the lab"
    assert sum("lab.up(" in c for c in code) == 1, "exactly one cell starts the lab"
    assert not any(re.search(r"^\s*(import|from)\s", c, re.M) for c in code[1:]), "imports belong in the setup cell"


@lessons
def test_holds_no_helper_code(path: Path) -> None:
    for source in _code(path):
        assert not re.search(r"^\s*(def|class|async def)\s|lambda\b", source, re.M), source
        assert len(source.splitlines()) <= MAX_CODE_LINES, source[:80]


@lessons
def test_every_checked_cell_has_stored_outputs_and_none_is_an_error(path: Path) -> None:
    checked = [c for c in _cells(path) if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in _source(c)]
    assert checked, "nbval --nbval-lax compares only cells marked NBVAL_CHECK_OUTPUT: mark what the lesson teaches"
    for cell in checked:
        assert cell.get("outputs"), f"no stored output to compare with: {_source(cell)[:80]!r}"
    for cell in _cells(path):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors or "raises-exception" in cell.get("metadata", {}).get("tags", []), _source(cell)[:80]


@lessons
def test_ends_with_exercises_that_check_themselves(path: Path) -> None:
    cells = _cells(path)
    starts = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and
              re.search(r"^#+ .*exercises?", _source(c), re.M | re.I)]
    assert starts, "no Exercises section"
    after = [_source(c) for c in cells[starts[-1]:] if c["cell_type"] == "code"]
    assert any(re.search(r"^\s*assert\s", s, re.M) for s in after), "exercises need a cell that checks the answer"
