#!/usr/bin/env bash
# The main job: set up on a fresh clone, then run the demo pipeline on embedded data
# (the NoiseGrad paper's CMNIST experiment; the model is trained once and cached).
#   bash scripts/demo.sh [--out DIR] [--smoke] [--quiet] [--workers N] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh data
out=runs/noisegrad_cmnist
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
# --workers 2: the explain step's batches on two threads of one core each (on 2 cores about 3/4
# of the time one two-thread worker takes; the same maps: docs/demo.md). Later flags win.
exec .venv/bin/wrapgrad run examples/noisegrad_cmnist.toml --out "$out" --workers 2 "${args[@]}"
