"""Every Markdown table in the docs renders with its header's columns: a bare ``|`` inside a cell,
even inside a code span, splits the row in GFM and in MyST (markdown-it), so the cell is cut and
the rest of the row is lost without a warning from Sphinx."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"])
_BARE_PIPE = re.compile(r"(?<!\\)\|")


def _tables(text: str):
    """(line number, header cells, row cells) for every table row outside code fences."""
    fenced, header = False, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("|"):
            header = None
            continue
        cells = len(_BARE_PIPE.findall(line))
        if header is None:
            header = cells
        yield number, header, cells


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_table_row_has_its_headers_cells(page: Path) -> None:
    bad = [
        f"{page.name}:{n}: {cells - 1} cells, the header has {header - 1}"
        for n, header, cells in _tables(page.read_text(encoding="utf-8"))
        if cells != header
    ]
    assert not bad, "escape | inside cells as \\|:\n" + "\n".join(bad)


def test_the_check_sees_a_pipe_in_a_code_span() -> None:
    rows = list(_tables("| a | b |\n|---|---|\n| `|x|` | y |\n| `\\|x\\|` | y |\n"))
    assert [cells == header for _, header, cells in rows] == [True, True, False, True]
