"""Wall time of a data-set explanation on 1 and 2 processes: ``wrapgrad run`` against
``torchrun --nproc-per-node N -m wrapgrad run`` of the same pipeline, as ratios in one run.

The pipeline explains ``--samples`` test images of sklearn's 8x8 digits with Saliency and
Integrated Gradients, plain and with SmoothGrad and NoiseGrad (``--draws`` each), and scores
them with Quantus' Sparseness; the small CNN is trained once into a temporary cache by a
warm-up run, so the timed runs load it. Printed per launch: the whole command's wall time
(interpreter start-up, imports and rendezvous included), the explain and evaluate steps' time
(``results.json``'s ``timings_s``), their ratios to one process with one thread, and whether
the launch wrote that launch's ``results.json`` numbers.

Usage::

    python benchmarks/bench_distributed.py               # ~4 min on 2 CPU cores
    python benchmarks/bench_distributed.py --samples 32 --draws 2 --repeat 1   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = """
[pipeline]
name = "bench_distributed"
seed = 0

[data]
dataset = "digits8x8"
split = "test"
samples = {samples}

[model]
name = "small_cnn"

[explain]
methods = ["saliency", "integrated_gradients"]
batch_size = 16

[explain.method_options.integrated_gradients]
n_steps = 16

[[explain.enhancers]]
label = "Baseline"

[[explain.enhancers]]
label = "SG"
name = "smoothgrad"
options = {{ n_samples = {draws}, noise_level = 0.1 }}

[[explain.enhancers]]
label = "NG"
name = "noisegrad"
options = {{ n_samples = {draws}, sigma = 0.1 }}

[[evaluate.metrics]]
label = "sparseness"
quantus = "Sparseness"

[report]
make_figures = false
"""

_CLOCKS = {"created", "duration_s", "timings_s", "explain_timings_s", "metric_timings_s"}


def launch(label: str, cmd: list[str], env: dict[str, str], out: Path) -> dict[str, float]:
    started = time.perf_counter()
    subprocess.run([*cmd, "--out", str(out), "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    return {
        "label": label,
        "wall": wall,
        "explain": results["timings_s"]["explain"],
        "evaluate": results["timings_s"]["evaluate"],
        "world_size": results["world_size"],
        "numbers": {k: v for k, v in results.items() if k not in _CLOCKS | {"world_size"}},
    }


def _differing(a: object, b: object, where: str = "") -> list[str]:
    """The keys where two results differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differing(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for x, y in zip(a, b, strict=True) for d in _differing(x, y, where)][:1]
    return [] if a == b or (a != a and b != b) else [where]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=192)
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (the median is shown)")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        file = folder / "bench.toml"
        file.write_text(PIPELINE.format(samples=args.samples, draws=args.draws))
        env = {**os.environ, "WRAPGRAD_CACHE": str(folder / "cache")}
        one = [sys.executable, "-m", "wrapgrad", "run", str(file)]
        two = [str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node=2"]
        two += ["-m", "wrapgrad", "run", str(file)]
        launch("warm-up", one, env, folder / "warm")  # trains the model into the cache
        launches = [
            ("1 process, 1 thread", one, {**env, "OMP_NUM_THREADS": "1"}),
            ("1 process, 2 threads", one, {**env, "OMP_NUM_THREADS": "2"}),
            ("torchrun, 2 processes x 1 thread", two, {**env, "OMP_NUM_THREADS": "1"}),
        ]
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in launches}
        for r in range(args.repeat):  # interleaved: a load change hits every launch alike
            for i, (label, cmd, e) in enumerate(launches):
                runs[label].append(launch(label, cmd, e, folder / f"r{r}-{i}"))
    rows = {
        label: {k: statistics.median(x[k] for x in rs) for k in ("wall", "explain", "evaluate")}
        for label, rs in runs.items()
    }
    base_label = launches[0][0]
    base, ref = rows[base_label], runs[base_label][0]["numbers"]
    print(
        f"{args.samples} samples, {args.draws} draws per enhancer, {os.cpu_count()} CPUs, "
        f"median of {args.repeat}"
    )
    print("| launch | wall s | ratio | explain s | ratio | evaluate s | results.json numbers |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, r in rows.items():
        diff = sorted({d for x in runs[label] for d in _differing(x["numbers"], ref)})
        same = "equal" if not diff else f"differ at {', '.join(diff[:3])}"
        print(
            f"| {label} | {r['wall']:.1f} | {r['wall'] / base['wall']:.2f} | "
            f"{r['explain']:.1f} | {r['explain'] / base['explain']:.2f} | "
            f"{r['evaluate']:.1f} | {same} |"
        )


if __name__ == "__main__":
    main()
