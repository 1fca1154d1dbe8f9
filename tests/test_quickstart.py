"""``examples/quickstart.py`` runs end to end (in its seconds-long smoke mode)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("WRAPGRAD_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("quickstart", QUICKSTART)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    assert module.main(["--smoke", "--quiet", "--out", str(out)]) == 0
    table = (out / "quickstart.md").read_text()
    # One row per method x enhancer, each with a top-k intersection in [0, 1].
    rows = [
        line
        for line in table.splitlines()
        if line.startswith("| saliency") or line.startswith("| integrated")
    ]
    assert len(rows) == 8
    for row in rows:
        value = float(row.split("|")[2].split("±")[0])
        assert 0.0 <= value <= 1.0
    assert (out / "quickstart.png").stat().st_size > 10_000
    assert "test accuracy" in capsys.readouterr().out
