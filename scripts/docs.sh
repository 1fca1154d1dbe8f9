#!/usr/bin/env bash
# Build the documentation site (Sphinx + MyST): the guide pages in docs/*.md and the API
# reference generated from the docstrings, with warnings as errors.
#   bash scripts/docs.sh              # -> docs/_build/html/index.html
#   bash scripts/docs.sh OUT_DIR      # somewhere else
# The docstring examples run as doctests with the tests (pytest --doctest-modules, see
# pyproject.toml); this script builds the pages.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/_build/html}
bash scripts/setup.sh test
if ! .venv/bin/python -c "import sphinx, myst_parser" 2>/dev/null; then
    echo "[docs] installing wrapgrad[docs]"
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[docs]"
fi
rm -rf docs/api/generated   # autosummary writes one page per module here, afresh each build
.venv/bin/python -m sphinx -b html -E -W --keep-going -q docs "$OUT"   # -E: every page afresh, as CI sees it
echo "[docs] built $OUT/index.html"
