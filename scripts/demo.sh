#!/usr/bin/env bash
# The main job: set up on a fresh clone, then run the demo on embedded data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh data
exec .venv/bin/python examples/quickstart.py "$@"
