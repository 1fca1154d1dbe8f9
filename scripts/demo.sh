#!/usr/bin/env bash
# The main job: set up on a fresh clone, then run the demo pipeline on embedded data
# (the NoiseGrad paper's CMNIST experiment; the model is trained once and cached).
#   bash scripts/demo.sh [--out DIR] [--smoke] [--quiet]
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
exec .venv/bin/wrapgrad run examples/noisegrad_cmnist.toml --out "$out" "${args[@]}"
