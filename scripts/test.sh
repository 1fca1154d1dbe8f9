#!/usr/bin/env bash
# Set up on a fresh clone, then lint, check the import boundary and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m ruff check .
.venv/bin/lint-imports --no-cache    # the core never imports a plugin; plugins are independent
exec .venv/bin/python -m pytest "$@"
