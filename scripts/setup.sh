#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install wrapgrad into it.
#   bash scripts/setup.sh            # runtime + data extras
#   bash scripts/setup.sh test       # + test tools and the example third-party plugin
# torch is pinned by constraints.txt. For a CPU build from the PyTorch index on a machine that
# reaches it, set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu before running.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${WRAPGRAD_VENV:-.venv}
EXTRAS=${1:-data}

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"wrapgrad needs Python >= 3.10, found {sys.version.split()[0]}; set PYTHON=python3.11")
PY

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi

stamp="$VENV/.wrapgrad-$EXTRAS.stamp"
want=$(cat pyproject.toml constraints.txt examples/plugin/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "[setup] installing wrapgrad[$EXTRAS] (torch pinned by constraints.txt)"
"$VENV/bin/python" -m pip install -q -c constraints.txt "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[$EXTRAS]"
if [ "$EXTRAS" = "test" ]; then
    # A third-party plugin package, installed the way a user would install one.
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e examples/plugin
fi
echo "$want" > "$stamp"
