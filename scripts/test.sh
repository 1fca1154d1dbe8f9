#!/usr/bin/env bash
# Set up on a fresh clone, then lint and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest "$@"
